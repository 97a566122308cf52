/* deltastore._native: the one glue file between Python and the plane kernels.
 *
 * It takes buffers (bytes, bytearray, memoryview, numpy arrays), checks
 * lengths, releases the GIL around the kernel, and releases every Py_buffer
 * it acquired on every path through the single `exit:` label.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "planes.h"

#define MAX_WIDTH 64

/* Acquire a C-contiguous buffer, or None when allow_none and obj is None.
 * Returns 1 if a buffer was acquired (caller must release it), 0 for None, -1 on error. */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, int allow_none,
                      const char *what)
{
    if (allow_none && obj == Py_None)
        return 0;
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s buffer", what,
                     writable ? " writable" : "");
        return -1;
    }
    return 1;
}

static int check_width(Py_ssize_t width)
{
    if (width < 1 || width > MAX_WIDTH) {
        PyErr_Format(PyExc_ValueError, "width must be between 1 and %d, not %zd", MAX_WIDTH,
                     width);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(split_doc,
"split_planes(src, dst, width, base=None)\n--\n\n"
"XOR src with base (if given) and split the result into byte planes, in one pass:\n"
"dst[p*n + i] = src[i*width + p] ^ base[i*width + p].  Releases the GIL.");

static PyObject *split_planes(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"src", "dst", "width", "base", NULL};
    PyObject *src_obj, *dst_obj, *base_obj = Py_None, *result = NULL;
    Py_ssize_t width;
    Py_buffer src = {0}, dst = {0}, base = {0};
    int have_src = 0, have_dst = 0, have_base = 0;
    (void)self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOn|O:split_planes", keywords, &src_obj,
                                     &dst_obj, &width, &base_obj))
        goto exit;
    if (check_width(width) < 0)
        goto exit;
    if ((have_src = get_buffer(src_obj, &src, 0, 0, "src")) < 0)
        goto exit;
    if ((have_dst = get_buffer(dst_obj, &dst, 1, 0, "dst")) < 0)
        goto exit;
    if ((have_base = get_buffer(base_obj, &base, 0, 1, "base")) < 0)
        goto exit;
    if (src.len % width != 0) {
        PyErr_Format(PyExc_ValueError, "src length %zd is not a multiple of width %zd", src.len,
                     width);
        goto exit;
    }
    if (dst.len != src.len) {
        PyErr_Format(PyExc_ValueError, "dst length %zd differs from src length %zd", dst.len,
                     src.len);
        goto exit;
    }
    if (have_base && base.len != src.len) {
        PyErr_Format(PyExc_ValueError, "base length %zd differs from src length %zd", base.len,
                     src.len);
        goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
    ds_split_planes((const uint8_t *)src.buf, have_base ? (const uint8_t *)base.buf : NULL,
                    (uint8_t *)dst.buf, (size_t)(src.len / width), (size_t)width);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
exit:
    if (have_src > 0)
        PyBuffer_Release(&src);
    if (have_dst > 0)
        PyBuffer_Release(&dst);
    if (have_base > 0)
        PyBuffer_Release(&base);
    return result;
}

PyDoc_STRVAR(merge_doc,
"merge_planes(planes, dst, width, base=None)\n--\n\n"
"Inverse of split_planes: planes is a sequence of `width` buffers of len(dst)/width\n"
"bytes each, or None for an all-zero plane.  Releases the GIL.");

static PyObject *merge_planes(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"planes", "dst", "width", "base", NULL};
    PyObject *planes_obj, *dst_obj, *base_obj = Py_None, *seq = NULL, *result = NULL;
    Py_ssize_t width, acquired = 0;
    Py_buffer dst = {0}, base = {0};
    Py_buffer views[MAX_WIDTH];
    const uint8_t *pointers[MAX_WIDTH];
    int have_dst = 0, have_base = 0;
    (void)self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOn|O:merge_planes", keywords, &planes_obj,
                                     &dst_obj, &width, &base_obj))
        goto exit;
    if (check_width(width) < 0)
        goto exit;
    if ((have_dst = get_buffer(dst_obj, &dst, 1, 0, "dst")) < 0)
        goto exit;
    if ((have_base = get_buffer(base_obj, &base, 0, 1, "base")) < 0)
        goto exit;
    if (dst.len % width != 0) {
        PyErr_Format(PyExc_ValueError, "dst length %zd is not a multiple of width %zd", dst.len,
                     width);
        goto exit;
    }
    if (have_base && base.len != dst.len) {
        PyErr_Format(PyExc_ValueError, "base length %zd differs from dst length %zd", base.len,
                     dst.len);
        goto exit;
    }
    seq = PySequence_Fast(planes_obj, "planes must be a sequence");
    if (seq == NULL)
        goto exit;
    if (PySequence_Fast_GET_SIZE(seq) != width) {
        PyErr_Format(PyExc_ValueError, "expected %zd planes, got %zd", width,
                     PySequence_Fast_GET_SIZE(seq));
        goto exit;
    }
    Py_ssize_t plane_len = dst.len / width;
    for (Py_ssize_t p = 0; p < width; p++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, p);
        if (item == Py_None) {
            pointers[p] = NULL;
            continue;
        }
        if (get_buffer(item, &views[acquired], 0, 0, "each plane") < 0)
            goto exit;
        acquired++;
        if (views[acquired - 1].len != plane_len) {
            PyErr_Format(PyExc_ValueError, "plane %zd has %zd bytes, expected %zd", p,
                         views[acquired - 1].len, plane_len);
            goto exit;
        }
        pointers[p] = (const uint8_t *)views[acquired - 1].buf;
    }
    Py_BEGIN_ALLOW_THREADS
    ds_merge_planes(pointers, have_base ? (const uint8_t *)base.buf : NULL, (uint8_t *)dst.buf,
                    (size_t)plane_len, (size_t)width);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
exit:
    for (Py_ssize_t i = 0; i < acquired; i++)
        PyBuffer_Release(&views[i]);
    Py_XDECREF(seq);
    if (have_dst > 0)
        PyBuffer_Release(&dst);
    if (have_base > 0)
        PyBuffer_Release(&base);
    return result;
}

static PyMethodDef methods[] = {
    {"split_planes", (PyCFunction)(void (*)(void))split_planes, METH_VARARGS | METH_KEYWORDS,
     split_doc},
    {"merge_planes", (PyCFunction)(void (*)(void))merge_planes, METH_VARARGS | METH_KEYWORDS,
     merge_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "deltastore._native",
    "Byte-plane split/merge kernels with XOR deltas (GIL released).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}

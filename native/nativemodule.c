/* deltastore._native: the one glue file between Python and the plane kernels.
 *
 * It turns buffers (bytes, bytearray, memoryview, numpy arrays, ...) into
 * pointers and lengths, checks them, and runs planes.c with the GIL released.
 * Each function acquires its buffers one at a time, jumps to its single
 * `exit:` label on the first failure, and releases there whatever it holds.
 * A Py_buffer starts zeroed and is held exactly while its .obj is set (the
 * idiom of blake3-py): get_buffer leaves .obj NULL when it fails, and
 * PyBuffer_Release sets it back to NULL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "planes.h"

static void release_if_acquired(Py_buffer *view)
{
    if (view->obj != NULL)
        PyBuffer_Release(view);
}

/* Acquires obj as a C-contiguous byte buffer, writable if asked; `what`
 * names the argument in error messages.  Returns 0, or -1 with an exception
 * set and nothing held. */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what)
{
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object, not %.200s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    /* Strides are asked for so that a non-contiguous exporter (a sliced numpy
     * array) still answers and the message below can say what is wrong; a
     * writable buffer is not demanded so that a read-only one gets our
     * message too (memoryview does the same and trusts .readonly). */
    if (PyObject_GetBuffer(obj, view, PyBUF_STRIDES) < 0)
        return -1;
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous", what);
        return -1;
    }
    if (writable && view->readonly) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s must be writable, not a read-only %.200s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

/* The kernels need dst apart from every input: they write dst while still reading. */
static int overlaps(const Py_buffer *a, const Py_buffer *b)
{
    uintptr_t a_start = (uintptr_t)a->buf, b_start = (uintptr_t)b->buf;
    return a->len > 0 && b->len > 0 && a_start < b_start + (uintptr_t)b->len &&
           b_start < a_start + (uintptr_t)a->len;
}

static int check_width(Py_ssize_t width)
{
    if (width < 1 || width > DS_MAX_WIDTH) {
        PyErr_Format(PyExc_ValueError, "width must be between 1 and %d, not %zd", DS_MAX_WIDTH,
                     width);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(split_planes_doc,
"split_planes($module, /, src, dst, width, base=None)\n--\n\n"
"XOR src with base (if given) and split the result into byte planes, in one pass:\n"
"dst[p*n + i] = src[i*width + p] ^ base[i*width + p], n = len(src) // width.\n"
"src, dst and base are C-contiguous buffers of one length; dst is writable and\n"
"overlaps neither input.  Releases the GIL.");

static PyObject *split_planes(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"src", "dst", "width", "base", NULL};
    PyObject *src_obj, *dst_obj, *base_obj = Py_None, *result = NULL;
    Py_ssize_t width;
    Py_buffer src = {0}, dst = {0}, base = {0};
    (void)module;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOn|O:split_planes", keywords, &src_obj,
                                     &dst_obj, &width, &base_obj))
        goto exit;
    if (check_width(width) < 0)
        goto exit;
    if (get_buffer(src_obj, &src, 0, "src") < 0 || get_buffer(dst_obj, &dst, 1, "dst") < 0)
        goto exit;
    if (base_obj != Py_None && get_buffer(base_obj, &base, 0, "base") < 0)
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
    if (base.obj != NULL && base.len != src.len) {
        PyErr_Format(PyExc_ValueError, "base length %zd differs from src length %zd", base.len,
                     src.len);
        goto exit;
    }
    if (overlaps(&dst, &src)) {
        PyErr_SetString(PyExc_ValueError, "dst overlaps src");
        goto exit;
    }
    if (base.obj != NULL && overlaps(&dst, &base)) {
        PyErr_SetString(PyExc_ValueError, "dst overlaps base");
        goto exit;
    }

    Py_BEGIN_ALLOW_THREADS
    ds_split_planes((const uint8_t *)src.buf, base.obj != NULL ? (const uint8_t *)base.buf : NULL,
                    (uint8_t *)dst.buf, (size_t)(src.len / width), (size_t)width);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);

exit:
    release_if_acquired(&base);
    release_if_acquired(&dst);
    release_if_acquired(&src);
    return result;
}

PyDoc_STRVAR(merge_planes_doc,
"merge_planes($module, /, planes, dst, width, base=None)\n--\n\n"
"Inverse of split_planes: dst[i*width + p] = planes[p][i] ^ base[i*width + p].\n"
"planes is a sequence of exactly width items, each a C-contiguous buffer of\n"
"len(dst) // width bytes or None for an all-zero plane; dst is writable and\n"
"overlaps no input.  Releases the GIL.");

static PyObject *merge_planes(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"planes", "dst", "width", "base", NULL};
    PyObject *planes_obj, *dst_obj, *base_obj = Py_None, *planes_tuple = NULL, *result = NULL;
    Py_ssize_t width, plane_len;
    Py_buffer dst = {0}, base = {0}, views[DS_MAX_WIDTH] = {{0}};
    const uint8_t *pointers[DS_MAX_WIDTH];
    char what[32];
    (void)module;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOn|O:merge_planes", keywords, &planes_obj,
                                     &dst_obj, &width, &base_obj))
        goto exit;
    if (check_width(width) < 0)
        goto exit;
    if (get_buffer(dst_obj, &dst, 1, "dst") < 0)
        goto exit;
    if (base_obj != Py_None && get_buffer(base_obj, &base, 0, "base") < 0)
        goto exit;
    if (dst.len % width != 0) {
        PyErr_Format(PyExc_ValueError, "dst length %zd is not a multiple of width %zd", dst.len,
                     width);
        goto exit;
    }
    if (base.obj != NULL && base.len != dst.len) {
        PyErr_Format(PyExc_ValueError, "base length %zd differs from dst length %zd", base.len,
                     dst.len);
        goto exit;
    }
    if (base.obj != NULL && overlaps(&dst, &base)) {
        PyErr_SetString(PyExc_ValueError, "dst overlaps base");
        goto exit;
    }
    if (!PySequence_Check(planes_obj)) {
        PyErr_Format(PyExc_TypeError, "planes must be a sequence, not %.200s",
                     Py_TYPE(planes_obj)->tp_name);
        goto exit;
    }
    /* A tuple of our own: acquiring a buffer can run Python code (__buffer__)
     * that resizes a list we would still be indexing. */
    planes_tuple = PySequence_Tuple(planes_obj);
    if (planes_tuple == NULL)
        goto exit;
    if (PyTuple_GET_SIZE(planes_tuple) != width) {
        PyErr_Format(PyExc_ValueError, "expected %zd planes for width %zd, got %zd", width, width,
                     PyTuple_GET_SIZE(planes_tuple));
        goto exit;
    }
    plane_len = dst.len / width;
    for (Py_ssize_t p = 0; p < width; p++) {
        PyObject *item = PyTuple_GET_ITEM(planes_tuple, p);
        if (item == Py_None) {
            pointers[p] = NULL;
            continue;
        }
        PyOS_snprintf(what, sizeof what, "plane %zd", p);
        if (get_buffer(item, &views[p], 0, what) < 0)
            goto exit;
        if (views[p].len != plane_len) {
            PyErr_Format(PyExc_ValueError,
                         "plane %zd has %zd bytes, expected %zd (len(dst) // width)", p,
                         views[p].len, plane_len);
            goto exit;
        }
        if (overlaps(&dst, &views[p])) {
            PyErr_Format(PyExc_ValueError, "dst overlaps plane %zd", p);
            goto exit;
        }
        pointers[p] = (const uint8_t *)views[p].buf;
    }

    Py_BEGIN_ALLOW_THREADS
    ds_merge_planes(pointers, base.obj != NULL ? (const uint8_t *)base.buf : NULL,
                    (uint8_t *)dst.buf, (size_t)plane_len, (size_t)width);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);

exit:
    for (Py_ssize_t p = 0; p < DS_MAX_WIDTH; p++)
        release_if_acquired(&views[p]);
    Py_XDECREF(planes_tuple);
    release_if_acquired(&base);
    release_if_acquired(&dst);
    return result;
}

typedef void (*zigzag_kernel)(const uint8_t *, const uint8_t *, uint8_t *, size_t, size_t);

/* zigzag_diff and zigzag_undiff take the same arguments: (src, base, dst, width). */
static PyObject *run_zigzag(PyObject *args, PyObject *kwargs, const char *format,
                            zigzag_kernel kernel)
{
    static char *keywords[] = {"src", "base", "dst", "width", NULL};
    PyObject *src_obj, *base_obj, *dst_obj, *result = NULL;
    Py_ssize_t width;
    Py_buffer src = {0}, base = {0}, dst = {0};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, keywords, &src_obj, &base_obj,
                                     &dst_obj, &width))
        goto exit;
    if (width != 2 && width != 4 && width != 8) {
        PyErr_Format(PyExc_ValueError, "width must be 2, 4 or 8, not %zd", width);
        goto exit;
    }
    if (get_buffer(src_obj, &src, 0, "src") < 0 || get_buffer(base_obj, &base, 0, "base") < 0 ||
        get_buffer(dst_obj, &dst, 1, "dst") < 0)
        goto exit;
    if (src.len % width != 0) {
        PyErr_Format(PyExc_ValueError, "src length %zd is not a multiple of width %zd", src.len,
                     width);
        goto exit;
    }
    if (dst.len != src.len || base.len != src.len) {
        PyErr_Format(PyExc_ValueError, "src, base and dst differ in length (%zd, %zd, %zd)",
                     src.len, base.len, dst.len);
        goto exit;
    }
    if (overlaps(&dst, &src) || overlaps(&dst, &base)) {
        PyErr_SetString(PyExc_ValueError, "dst overlaps an input");
        goto exit;
    }

    Py_BEGIN_ALLOW_THREADS
    kernel((const uint8_t *)src.buf, (const uint8_t *)base.buf, (uint8_t *)dst.buf,
           (size_t)(src.len / width), (size_t)width);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);

exit:
    release_if_acquired(&dst);
    release_if_acquired(&base);
    release_if_acquired(&src);
    return result;
}

PyDoc_STRVAR(zigzag_diff_doc,
"zigzag_diff($module, /, src, base, dst, width)\n--\n\n"
"dst[i] = zigzag(src[i] - base[i]) for little-endian unsigned elements of 2, 4 or 8 bytes\n"
"(wrapping), zigzag(d) = (d << 1) ^ (d >> (bits - 1)) with d read as signed.  The three\n"
"buffers have one length, a multiple of width; dst overlaps neither input.  Releases the GIL.");

static PyObject *zigzag_diff(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    return run_zigzag(args, kwargs, "OOOn:zigzag_diff", ds_zigzag_diff);
}

PyDoc_STRVAR(zigzag_undiff_doc,
"zigzag_undiff($module, /, src, base, dst, width)\n--\n\n"
"Inverse of zigzag_diff: dst[i] = base[i] + unzigzag(src[i]).  Releases the GIL.");

static PyObject *zigzag_undiff(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    return run_zigzag(args, kwargs, "OOOn:zigzag_undiff", ds_zigzag_undiff);
}

static PyMethodDef methods[] = {
    {"zigzag_diff", (PyCFunction)(void (*)(void))zigzag_diff, METH_VARARGS | METH_KEYWORDS,
     zigzag_diff_doc},
    {"zigzag_undiff", (PyCFunction)(void (*)(void))zigzag_undiff, METH_VARARGS | METH_KEYWORDS,
     zigzag_undiff_doc},
    {"split_planes", (PyCFunction)(void (*)(void))split_planes, METH_VARARGS | METH_KEYWORDS,
     split_planes_doc},
    {"merge_planes", (PyCFunction)(void (*)(void))merge_planes, METH_VARARGS | METH_KEYWORDS,
     merge_planes_doc},
    {NULL, NULL, 0, NULL},
};

/* No module state and no static Python objects: safe in subinterpreters and
 * without the GIL (each call works only on the buffers it holds). */
static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "deltastore._native",
    .m_doc = "Byte-plane split/merge kernels with an XOR base (native/planes.c).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModuleDef_Init(&module_def);
}

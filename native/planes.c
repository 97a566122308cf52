/* Byte-plane split/merge kernels (see planes.h).
 *
 * The loops are written so that GCC vectorises them: fixed widths 2, 4 and 8
 * move whole elements through registers and scatter their bytes to the
 * planes.  DS_MULTIVERSION compiles an AVX2 clone beside the baseline and
 * picks one at load time (ifunc), so the wheel stays portable; with -O3 the
 * AVX2 clone is the one that reaches several GB/s.
 */
#include "planes.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DS_NO_MULTIVERSION)
#define DS_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define DS_MULTIVERSION
#endif

/* Merge works in blocks so a NULL (all-zero) plane can point at this. */
#define DS_BLOCK 4096
static const uint8_t ds_zeros[DS_BLOCK];

/* Unaligned little-endian loads; memcpy compiles to one mov. */
static inline uint16_t load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, sizeof v); return v; }
static inline uint32_t load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, sizeof v); return v; }
static inline uint64_t load_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, sizeof v); return v; }

/* ---- split ------------------------------------------------------------- */

#define DS_SPLIT_FIXED(NAME, T, W, LOAD)                                                   \
    DS_MULTIVERSION static void NAME(const uint8_t *restrict src,                     \
                                     const uint8_t *restrict base,                    \
                                     uint8_t *restrict dst, size_t n)                 \
    {                                                                                 \
        if (base) {                                                                   \
            for (size_t i = 0; i < n; i++) {                                          \
                T v = LOAD(src + i * W) ^ LOAD(base + i * W);               \
                for (size_t p = 0; p < W; p++)                                        \
                    dst[p * n + i] = (uint8_t)(v >> (8 * p));                         \
            }                                                                         \
        } else {                                                                      \
            for (size_t i = 0; i < n; i++) {                                          \
                T v = LOAD(src + i * W);                                 \
                for (size_t p = 0; p < W; p++)                                        \
                    dst[p * n + i] = (uint8_t)(v >> (8 * p));                         \
            }                                                                         \
        }                                                                             \
    }

DS_SPLIT_FIXED(split2, uint16_t, 2, load_u16)
DS_SPLIT_FIXED(split4, uint32_t, 4, load_u32)
DS_SPLIT_FIXED(split8, uint64_t, 8, load_u64)

static void split_generic(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n,
                          size_t w)
{
    for (size_t p = 0; p < w; p++) {
        uint8_t *plane = dst + p * n;
        if (base)
            for (size_t i = 0; i < n; i++)
                plane[i] = src[i * w + p] ^ base[i * w + p];
        else
            for (size_t i = 0; i < n; i++)
                plane[i] = src[i * w + p];
    }
}

DS_MULTIVERSION static void xor_copy(const uint8_t *restrict a, const uint8_t *restrict b,
                                     uint8_t *restrict dst, size_t len)
{
    if (b)
        for (size_t i = 0; i < len; i++)
            dst[i] = a[i] ^ b[i];
    else
        memcpy(dst, a, len);
}

void ds_split_planes(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n_elems,
                     size_t width)
{
    switch (width) {
    case 1: xor_copy(src, base, dst, n_elems); break;
    case 2: split2(src, base, dst, n_elems); break;
    case 4: split4(src, base, dst, n_elems); break;
    case 8: split8(src, base, dst, n_elems); break;
    default: split_generic(src, base, dst, n_elems, width); break;
    }
}

/* ---- merge ------------------------------------------------------------- */

#define DS_MERGE_FIXED(NAME, T, W, LOAD)                                                   \
    DS_MULTIVERSION static void NAME(const uint8_t *const *restrict planes,           \
                                     const uint8_t *restrict base,                    \
                                     uint8_t *restrict dst, size_t n)                 \
    {                                                                                 \
        for (size_t i = 0; i < n; i++) {                                              \
            T v = 0;                                                                  \
            for (size_t p = 0; p < W; p++)                                            \
                v |= (T)planes[p][i] << (8 * p);                                      \
            if (base)                                                                 \
                v ^= LOAD(base + i * W);                                 \
            memcpy(dst + i * W, &v, W);                                               \
        }                                                                             \
    }

DS_MERGE_FIXED(merge2, uint16_t, 2, load_u16)
DS_MERGE_FIXED(merge4, uint32_t, 4, load_u32)
DS_MERGE_FIXED(merge8, uint64_t, 8, load_u64)

static void merge_generic(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                          size_t n, size_t w)
{
    for (size_t p = 0; p < w; p++) {
        const uint8_t *plane = planes[p];
        if (base)
            for (size_t i = 0; i < n; i++)
                dst[i * w + p] = plane[i] ^ base[i * w + p];
        else
            for (size_t i = 0; i < n; i++)
                dst[i * w + p] = plane[i];
    }
}

/* Planes for one block: NULL planes read from ds_zeros.  w <= 64 (caller checks). */
static void merge_block(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                        size_t start, size_t len, size_t w)
{
    const uint8_t *block[64];
    for (size_t p = 0; p < w; p++)
        block[p] = planes[p] ? planes[p] + start : ds_zeros;
    const uint8_t *block_base = base ? base + start * w : NULL;
    uint8_t *block_dst = dst + start * w;
    switch (w) {
    case 1: xor_copy(block[0], block_base, block_dst, len); break;
    case 2: merge2(block, block_base, block_dst, len); break;
    case 4: merge4(block, block_base, block_dst, len); break;
    case 8: merge8(block, block_base, block_dst, len); break;
    default: merge_generic(block, block_base, block_dst, len, w); break;
    }
}

void ds_merge_planes(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                     size_t n_elems, size_t width)
{
    for (size_t start = 0; start < n_elems; start += DS_BLOCK) {
        size_t len = n_elems - start < DS_BLOCK ? n_elems - start : DS_BLOCK;
        merge_block(planes, base, dst, start, len, width);
    }
}

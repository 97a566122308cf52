/* Byte-plane split/merge kernels (layout and contract in planes.h).
 *
 * Widths 2, 4, 8 and 16 run SIMD kernels on x86-64; other widths, the last
 * few elements that do not fill a SIMD step, and other architectures run the
 * portable loops, which work on cache-sized blocks.
 *
 * The SIMD kernels see 16 elements as a file of w 16-byte registers and
 * transpose it with byte interleaves alone.  One "riffle" interleaves the
 * first half of the file with the second half, byte by byte: the bits of a
 * byte's position in the file rotate left by one.  Split moves byte p of
 * element i from position i*w + p to p*16 + i, a rotation by log2(16), so it
 * takes four riffles; merge is the inverse, a rotation by log2(w).  SSE2 is
 * part of x86-64 and needs no check.  The AVX2 kernel runs two 16-element
 * steps side by side, one per 128-bit lane (the interleaves work lane by
 * lane), and is chosen at run time, so the build needs neither -mavx2 nor
 * -march=native.  On 1 MiB chunks (one Zen 3 core, GCC 12) they move
 * 17-33 GB/s at widths 2 and 4, 13-27 at 8 and 7-11 at 16, with or without
 * a base (benchmarks/bench_planes.py); loops over elements that GCC
 * vectorises itself (with an AVX2 clone) matched that at width 2 but were
 * 2-3x slower at width 4 and 5-10x slower at 8 and 16.
 *
 * Build knobs, for native/sanitize.sh: DS_NO_AVX2 leaves SSE2 as the widest
 * path, DS_PORTABLE leaves only the portable loops.
 */
#include "planes.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DS_PORTABLE)
#define DS_SSE2 1
#include <immintrin.h>
#if !defined(DS_NO_AVX2)
#define DS_AVX2 1
#endif
#endif

/* Kernels take the width as a parameter and are inlined into one function
 * per width, where it is a constant: loops unroll and the register file
 * stays in registers. */
#if defined(__GNUC__)
#define DS_INLINE static inline __attribute__((always_inline))
#else
#define DS_INLINE static inline
#endif

/* Portable loops work on blocks of about this many bytes of interleaved
 * data, so the strided side stays in L1 across the w passes over a block
 * (split at width 3: 3.0 GB/s against 1.6 with passes over the whole chunk). */
#define DS_BLOCK_BYTES 16384
/* Merge reads an absent (NULL) plane from here, one block at a time. */
#define DS_ZERO_LEN 4096
static const uint8_t ds_zero_plane[DS_ZERO_LEN];

_Static_assert(DS_BLOCK_BYTES / DS_MAX_WIDTH >= 32, "a block must hold one 32-element step");

/* Elements per block: a multiple of 32 (a whole number of SIMD steps) no
 * longer than the zero plane. */
static size_t block_elems(size_t w)
{
    size_t block = DS_BLOCK_BYTES / w;
    block -= block % 32;
    return block > DS_ZERO_LEN ? DS_ZERO_LEN : block;
}

/* ---- portable loops ---------------------------------------------------- */

/* Width 1: a copy, or an XOR with b; GCC vectorises this loop itself. */
static void xor_copy(const uint8_t *a, const uint8_t *b, uint8_t *restrict dst, size_t len)
{
    if (b)
        for (size_t i = 0; i < len; i++)
            dst[i] = a[i] ^ b[i];
    else
        memcpy(dst, a, len);
}

/* Split elements [start, end) into planes of stride n. */
static void split_scalar(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n,
                         size_t w, size_t start, size_t end)
{
    for (size_t p = 0; p < w; p++) {
        uint8_t *plane = dst + p * n;
        if (base)
            for (size_t i = start; i < end; i++)
                plane[i] = src[i * w + p] ^ base[i * w + p];
        else
            for (size_t i = start; i < end; i++)
                plane[i] = src[i * w + p];
    }
}

/* Merge elements [start, n); no plane is NULL here. */
static void merge_scalar(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                         size_t n, size_t w, size_t start)
{
    for (size_t p = 0; p < w; p++) {
        const uint8_t *plane = planes[p];
        if (base)
            for (size_t i = start; i < n; i++)
                dst[i * w + p] = plane[i] ^ base[i * w + p];
        else
            for (size_t i = start; i < n; i++)
                dst[i * w + p] = plane[i];
    }
}

#if DS_SSE2

/* Calls KERNEL(first, base, dst, n, w, start) with the width and the
 * presence of base as constants, so each case is its own straight-line
 * code; other widths are left to the portable loops. */
#define DS_SPECIALISE(KERNEL, first, base, dst, n, w, start)                                  \
    switch (w) {                                                                          \
    case 2:                                                                               \
        return base ? KERNEL(first, base, dst, n, 2, start)                               \
                    : KERNEL(first, NULL, dst, n, 2, start);                              \
    case 4:                                                                               \
        return base ? KERNEL(first, base, dst, n, 4, start)                               \
                    : KERNEL(first, NULL, dst, n, 4, start);                              \
    case 8:                                                                               \
        return base ? KERNEL(first, base, dst, n, 8, start)                               \
                    : KERNEL(first, NULL, dst, n, 8, start);                              \
    case 16:                                                                              \
        return base ? KERNEL(first, base, dst, n, 16, start)                              \
                    : KERNEL(first, NULL, dst, n, 16, start);                             \
    default:                                                                              \
        return start;                                                                     \
    }

/* ---- SSE2: 16 elements per step ------------------------------------------ */

DS_INLINE __m128i load128(const uint8_t *p)
{
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

DS_INLINE void store128(uint8_t *p, __m128i v)
{
    _mm_storeu_si128((__m128i *)(void *)p, v);
}

/* 16 bytes at src + at, XORed with base + at unless base is NULL. */
DS_INLINE __m128i load128_xor(const uint8_t *src, const uint8_t *base, size_t at)
{
    __m128i v = load128(src + at);
    return base ? _mm_xor_si128(v, load128(base + at)) : v;
}

/* One riffle of the register file x[0..w) (see the top of this file). */
DS_INLINE void riffle128(__m128i *x, size_t w)
{
    __m128i y[16];
    for (size_t r = 0; r < w / 2; r++) {
        y[2 * r] = _mm_unpacklo_epi8(x[r], x[r + w / 2]);
        y[2 * r + 1] = _mm_unpackhi_epi8(x[r], x[r + w / 2]);
    }
    for (size_t r = 0; r < w; r++)
        x[r] = y[r];
}

/* Split from element i on, 16 at a time; returns where it stopped. */
DS_INLINE size_t split128(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n,
                          size_t w, size_t i)
{
    for (; i + 16 <= n; i += 16) {
        __m128i x[16];
        for (size_t r = 0; r < w; r++)
            x[r] = load128_xor(src, base, i * w + 16 * r);
        for (int round = 0; round < 4; round++)
            riffle128(x, w);
        for (size_t p = 0; p < w; p++)
            store128(dst + p * n + i, x[p]);
    }
    return i;
}

/* Merge from element i on, 16 at a time; returns where it stopped. */
DS_INLINE size_t merge128(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                          size_t n, size_t w, size_t i)
{
    for (; i + 16 <= n; i += 16) {
        __m128i x[16];
        for (size_t p = 0; p < w; p++)
            x[p] = load128(planes[p] + i);
        for (size_t rounds = w; rounds > 1; rounds /= 2)
            riffle128(x, w);
        for (size_t r = 0; r < w; r++) {
            size_t at = i * w + 16 * r;
            store128(dst + at, base ? _mm_xor_si128(x[r], load128(base + at)) : x[r]);
        }
    }
    return i;
}

static size_t split_sse2(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n,
                         size_t w, size_t start)
{
    DS_SPECIALISE(split128, src, base, dst, n, w, start)
}

static size_t merge_sse2(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                         size_t n, size_t w, size_t start)
{
    DS_SPECIALISE(merge128, planes, base, dst, n, w, start)
}

#endif /* DS_SSE2 */

#if DS_AVX2

/* ---- AVX2: 32 elements per step, 16 in each 128-bit lane ---------------- */

#define DS_TARGET_AVX2 __attribute__((target("avx2")))

DS_TARGET_AVX2 DS_INLINE __m256i load256(const uint8_t *p)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)p);
}

/* The low lane from lo, the high lane from hi. */
DS_TARGET_AVX2 DS_INLINE __m256i load_lanes(const uint8_t *lo, const uint8_t *hi)
{
    return _mm256_inserti128_si256(_mm256_castsi128_si256(load128(lo)), load128(hi), 1);
}

/* One riffle in each lane. */
DS_TARGET_AVX2 DS_INLINE void riffle256(__m256i *x, size_t w)
{
    __m256i y[16];
    for (size_t r = 0; r < w / 2; r++) {
        y[2 * r] = _mm256_unpacklo_epi8(x[r], x[r + w / 2]);
        y[2 * r + 1] = _mm256_unpackhi_epi8(x[r], x[r + w / 2]);
    }
    for (size_t r = 0; r < w; r++)
        x[r] = y[r];
}

/* Register r holds row r of the step at element i in its low lane and row r
 * of the step at i + 16 (16*w bytes further) in its high lane; the rows of
 * plane p for both steps are adjacent in dst, so each is one 32-byte store. */
DS_TARGET_AVX2 DS_INLINE size_t split256(const uint8_t *src, const uint8_t *base,
                                         uint8_t *dst, size_t n, size_t w, size_t i)
{
    for (; i + 32 <= n; i += 32) {
        __m256i x[16];
        for (size_t r = 0; r < w; r++) {
            size_t lo = i * w + 16 * r, hi = lo + 16 * w;
            x[r] = load_lanes(src + lo, src + hi);
            if (base)
                x[r] = _mm256_xor_si256(x[r], load_lanes(base + lo, base + hi));
        }
        for (int round = 0; round < 4; round++)
            riffle256(x, w);
        for (size_t p = 0; p < w; p++)
            _mm256_storeu_si256((__m256i *)(void *)(dst + p * n + i), x[p]);
    }
    return i;
}

DS_TARGET_AVX2 DS_INLINE size_t merge256(const uint8_t *const *planes, const uint8_t *base,
                                         uint8_t *dst, size_t n, size_t w, size_t i)
{
    for (; i + 32 <= n; i += 32) {
        __m256i x[16];
        for (size_t p = 0; p < w; p++)
            x[p] = load256(planes[p] + i);
        for (size_t rounds = w; rounds > 1; rounds /= 2)
            riffle256(x, w);
        for (size_t r = 0; r < w; r++) {
            size_t lo = i * w + 16 * r, hi = lo + 16 * w;
            if (base)
                x[r] = _mm256_xor_si256(x[r], load_lanes(base + lo, base + hi));
            store128(dst + lo, _mm256_castsi256_si128(x[r]));
            store128(dst + hi, _mm256_extracti128_si256(x[r], 1));
        }
    }
    return i;
}

DS_TARGET_AVX2 static size_t split_avx2(const uint8_t *src, const uint8_t *base, uint8_t *dst,
                                        size_t n, size_t w, size_t start)
{
    DS_SPECIALISE(split256, src, base, dst, n, w, start)
}

DS_TARGET_AVX2 static size_t merge_avx2(const uint8_t *const *planes, const uint8_t *base,
                                        uint8_t *dst, size_t n, size_t w, size_t start)
{
    DS_SPECIALISE(merge256, planes, base, dst, n, w, start)
}

#endif /* DS_AVX2 */

/* ---- entry points -------------------------------------------------------- */

void ds_split_planes(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n_elems,
                     size_t width)
{
    if (width == 1) {
        xor_copy(src, base, dst, n_elems);
        return;
    }
    size_t done = 0;
#if DS_AVX2
    /* libgcc fills the CPU flags at load time, including whether the OS
     * saves the YMM registers; reading them is a load. */
    if (__builtin_cpu_supports("avx2"))
        done = split_avx2(src, base, dst, n_elems, width, done);
#endif
#if DS_SSE2
    done = split_sse2(src, base, dst, n_elems, width, done);
#endif
    size_t block = block_elems(width);
    for (size_t start = done; start < n_elems; start += block)
        split_scalar(src, base, dst, n_elems, width, start,
                     n_elems - start < block ? n_elems : start + block);
}

/* One block of merge: planes, base and dst already point at its first element. */
static void merge_block(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                        size_t n, size_t w)
{
    if (w == 1) {
        xor_copy(planes[0], base, dst, n);
        return;
    }
    size_t done = 0;
#if DS_AVX2
    if (__builtin_cpu_supports("avx2"))
        done = merge_avx2(planes, base, dst, n, w, done);
#endif
#if DS_SSE2
    done = merge_sse2(planes, base, dst, n, w, done);
#endif
    merge_scalar(planes, base, dst, n, w, done);
}

void ds_merge_planes(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                     size_t n_elems, size_t width)
{
    const uint8_t *block_planes[DS_MAX_WIDTH];
    size_t block = block_elems(width);
    for (size_t start = 0; start < n_elems; start += block) {
        size_t len = n_elems - start < block ? n_elems - start : block;
        for (size_t p = 0; p < width; p++)
            block_planes[p] = planes[p] ? planes[p] + start : ds_zero_plane;
        merge_block(block_planes, base ? base + start * width : NULL, dst + start * width, len,
                    width);
    }
}

/* -- zigzag integer differences ------------------------------------------------------------ */

/* Loads and stores of little-endian integers; memcpy keeps them free of alignment and aliasing
 * rules, and compiles to plain moves. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define DS_LE16(x) __builtin_bswap16(x)
#define DS_LE32(x) __builtin_bswap32(x)
#define DS_LE64(x) __builtin_bswap64(x)
#else
#define DS_LE16(x) (x)
#define DS_LE32(x) (x)
#define DS_LE64(x) (x)
#endif

#define DS_ZIGZAG_KERNELS(bits, type, le)                                                      \
    static void zigzag_diff_##bits(const uint8_t *src, const uint8_t *base, uint8_t *dst,      \
                                   size_t n)                                                   \
    {                                                                                          \
        for (size_t i = 0; i < n; i++) {                                                       \
            type s, b;                                                                         \
            memcpy(&s, src + i * sizeof(type), sizeof(type));                                  \
            memcpy(&b, base + i * sizeof(type), sizeof(type));                                 \
            type d = (type)(le(s) - le(b));                                                    \
            type z = (type)((type)(d << 1) ^ (type)(0 - (d >> (bits - 1))));                   \
            z = le(z);                                                                         \
            memcpy(dst + i * sizeof(type), &z, sizeof(type));                                  \
        }                                                                                      \
    }                                                                                          \
    static void zigzag_undiff_##bits(const uint8_t *diff, const uint8_t *base, uint8_t *dst,   \
                                     size_t n)                                                 \
    {                                                                                          \
        for (size_t i = 0; i < n; i++) {                                                       \
            type z, b;                                                                         \
            memcpy(&z, diff + i * sizeof(type), sizeof(type));                                 \
            memcpy(&b, base + i * sizeof(type), sizeof(type));                                 \
            z = le(z);                                                                         \
            type d = (type)((type)(z >> 1) ^ (type)(0 - (z & 1)));                             \
            type s = le((type)(le(b) + d));                                                    \
            memcpy(dst + i * sizeof(type), &s, sizeof(type));                                  \
        }                                                                                      \
    }

DS_ZIGZAG_KERNELS(16, uint16_t, DS_LE16)
DS_ZIGZAG_KERNELS(32, uint32_t, DS_LE32)
DS_ZIGZAG_KERNELS(64, uint64_t, DS_LE64)

void ds_zigzag_diff(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n_elems,
                    size_t width)
{
    switch (width) {
    case 2: zigzag_diff_16(src, base, dst, n_elems); break;
    case 4: zigzag_diff_32(src, base, dst, n_elems); break;
    case 8: zigzag_diff_64(src, base, dst, n_elems); break;
    default: break; /* the caller checked width */
    }
}

void ds_zigzag_undiff(const uint8_t *diff, const uint8_t *base, uint8_t *dst, size_t n_elems,
                      size_t width)
{
    switch (width) {
    case 2: zigzag_undiff_16(diff, base, dst, n_elems); break;
    case 4: zigzag_undiff_32(diff, base, dst, n_elems); break;
    case 8: zigzag_undiff_64(diff, base, dst, n_elems); break;
    default: break;
    }
}

/* The plane kernels against naive loops, for the sanitizer build (native/sanitize.sh).
 *
 * Every buffer is a heap block of exactly the size the kernels may touch,
 * so AddressSanitizer stops at the first byte read or written out of
 * bounds.  The sizes straddle the SIMD steps (16 and 32 elements) and the
 * merge blocks (1024 to 4096 elements), and every case runs once on
 * aligned and once on odd addresses.  Exit status 0 means every case passed.
 */
#include "planes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng_state = 12345;

static uint8_t next_byte(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (uint8_t)(rng_state >> 16);
}

/* A block of exactly len bytes starting at offset (0 or 1) into its allocation:
 * ASan's redzone follows the last byte either way. */
static uint8_t *alloc_at(size_t len, size_t offset)
{
    uint8_t *block = malloc(len + offset ? len + offset : 1);
    return block ? block + offset : NULL;
}

static void free_at(uint8_t *p, size_t offset)
{
    if (p)
        free(p - offset);
}

/* Splits and merges one chunk of n elements of width w; returns 1 on a mismatch. */
static int check(size_t n, size_t w, int with_base, int absent_planes, size_t offset)
{
    size_t len = n * w;
    int failed = 0;
    uint8_t *src = alloc_at(len, offset), *base = alloc_at(len, offset);
    uint8_t *split = alloc_at(len, offset), *merged = alloc_at(len, offset);
    const uint8_t **planes = malloc(w * sizeof *planes);
    if (!src || !base || !split || !merged || !planes) {
        fprintf(stderr, "out of memory\n");
        failed = 1;
        goto exit;
    }
    for (size_t i = 0; i < len; i++) {
        src[i] = next_byte();
        base[i] = next_byte();
    }
    const uint8_t *b = with_base ? base : NULL;

    ds_split_planes(src, b, split, n, w);
    for (size_t i = 0; i < n && !failed; i++)
        for (size_t p = 0; p < w; p++)
            if (split[p * n + i] != (uint8_t)(src[i * w + p] ^ (b ? b[i * w + p] : 0)))
                failed = 1;

    for (size_t p = 0; p < w; p++)
        planes[p] = absent_planes && p % 2 ? NULL : split + p * n;
    ds_merge_planes(planes, b, merged, n, w);
    for (size_t i = 0; i < n && !failed; i++)
        for (size_t p = 0; p < w; p++) {
            uint8_t plane = planes[p] ? planes[p][i] : 0;
            if (merged[i * w + p] != (uint8_t)(plane ^ (b ? b[i * w + p] : 0)))
                failed = 1;
        }
    /* With every plane present, merge must give back the input exactly. */
    if (!absent_planes && !failed && len && memcmp(merged, src, len) != 0)
        failed = 1;

    if (failed)
        fprintf(stderr, "FAIL n=%zu w=%zu base=%d absent_planes=%d offset=%zu\n", n, w,
                with_base, absent_planes, offset);
exit:
    free_at(src, offset);
    free_at(base, offset);
    free_at(split, offset);
    free_at(merged, offset);
    free((void *)planes);
    return failed;
}

/* Zigzag difference of n elements of width w against the naive formula, and back. */
static int check_zigzag(size_t n, size_t w, size_t offset)
{
    size_t len = n * w;
    int failed = 0;
    uint8_t *src = alloc_at(len, offset), *base = alloc_at(len, offset);
    uint8_t *diff = alloc_at(len, offset), *back = alloc_at(len, offset);
    if (!src || !base || !diff || !back) {
        fprintf(stderr, "out of memory\n");
        failed = 1;
        goto exit;
    }
    for (size_t i = 0; i < len; i++) {
        src[i] = next_byte();
        base[i] = (i % w == w - 1) ? src[i] : next_byte(); /* close in the high byte */
    }
    ds_zigzag_diff(src, base, diff, n, w);
    for (size_t i = 0; i < n && !failed; i++) {
        uint64_t s = 0, b = 0, z = 0;
        for (size_t k = 0; k < w; k++) { /* little-endian */
            s |= (uint64_t)src[i * w + k] << (8 * k);
            b |= (uint64_t)base[i * w + k] << (8 * k);
            z |= (uint64_t)diff[i * w + k] << (8 * k);
        }
        uint64_t mask = w == 8 ? ~(uint64_t)0 : (((uint64_t)1 << (8 * w)) - 1);
        uint64_t d = (s - b) & mask;
        uint64_t negative = (d >> (8 * w - 1)) & 1;
        uint64_t expected = ((d << 1) ^ (negative ? mask : 0)) & mask;
        if (z != expected) {
            fprintf(stderr, "zigzag_diff mismatch: n=%zu w=%zu i=%zu\n", n, w, i);
            failed = 1;
        }
    }
    ds_zigzag_undiff(diff, base, back, n, w);
    if (!failed && len && memcmp(back, src, len) != 0) {
        fprintf(stderr, "zigzag_undiff does not invert: n=%zu w=%zu\n", n, w);
        failed = 1;
    }
exit:
    free_at(src, offset);
    free_at(base, offset);
    free_at(diff, offset);
    free_at(back, offset);
    return failed;
}

int main(void)
{
    static const size_t widths[] = {1, 2, 3, 4, 5, 7, 8, 12, 16, 32, 64};
    static const size_t sizes[] = {0,    1,    7,    15,   16,   17,   31,   32,   33,
                                    47,   63,   1023, 1024, 1025, 2047, 2048, 2049, 4095,
                                    4096, 4097, 8191, 8209, 20011};
    int failures = 0, cases = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (int with_base = 0; with_base < 2; with_base++)
                for (int absent = 0; absent < 2; absent++)
                    for (size_t offset = 0; offset < 2; offset++) {
                        failures += check(sizes[si], widths[wi], with_base, absent, offset);
                        cases++;
                    }
    static const size_t zigzag_widths[] = {2, 4, 8};
    for (size_t wi = 0; wi < 3; wi++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (size_t offset = 0; offset < 2; offset++) {
                failures += check_zigzag(sizes[si], zigzag_widths[wi], offset);
                cases++;
            }
    printf("%d cases passed, %d failed\n", cases - failures, failures);
    return failures != 0;
}

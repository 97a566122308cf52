/* Round trips of the plane kernels against naive loops, for the sanitizer build.
 * Built and run by native/sanitize.sh under AddressSanitizer and UBSan: exact-size
 * heap buffers make any out-of-bounds read or write fail loudly. */
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

static int check(size_t n, size_t w, int with_base, int zero_planes)
{
    size_t len = n * w;
    int failed = 0;
    uint8_t *src = malloc(len ? len : 1), *base = malloc(len ? len : 1);
    uint8_t *split = malloc(len ? len : 1), *merged = malloc(len ? len : 1);
    const uint8_t **planes = malloc(w * sizeof *planes);
    if (!src || !base || !split || !merged || !planes) {
        failed = 1;
        goto exit;
    }
    for (size_t i = 0; i < len; i++) {
        src[i] = next_byte();
        base[i] = next_byte();
    }
    ds_split_planes(src, with_base ? base : NULL, split, n, w);
    for (size_t i = 0; i < n && !failed; i++)
        for (size_t p = 0; p < w; p++)
            if (split[p * n + i] != (uint8_t)(src[i * w + p] ^ (with_base ? base[i * w + p] : 0)))
                failed = 1;
    for (size_t p = 0; p < w; p++)
        planes[p] = (zero_planes && p % 2) ? NULL : split + p * n;
    ds_merge_planes(planes, with_base ? base : NULL, merged, n, w);
    for (size_t i = 0; i < n && !failed; i++)
        for (size_t p = 0; p < w; p++) {
            uint8_t plane = planes[p] ? planes[p][i] : 0;
            if (merged[i * w + p] != (uint8_t)(plane ^ (with_base ? base[i * w + p] : 0)))
                failed = 1;
        }
    if (failed)
        fprintf(stderr, "FAIL n=%zu w=%zu base=%d zero=%d\n", n, w, with_base, zero_planes);
exit:
    free(src);
    free(base);
    free(split);
    free(merged);
    free((void *)planes);
    return failed;
}

int main(void)
{
    static const size_t widths[] = {1, 2, 3, 4, 8, 16, 64};
    static const size_t sizes[] = {0, 1, 7, 31, 4095, 4096, 4097, 65536 + 3};
    int failures = 0, cases = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (int b = 0; b < 2; b++)
                for (int z = 0; z < 2; z++) {
                    failures += check(sizes[si], widths[wi], b, z);
                    cases++;
                }
    printf("%d passed, %d failed\n", cases - failures, failures);
    return failures != 0;
}

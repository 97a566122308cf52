/* Coverage-guided fuzzing of the plane kernels (libFuzzer; built and run by native/fuzz.sh).
 *
 * The input chooses the element width, whether a base is XORed, which planes are absent
 * (NULL, read as zeros), the byte offset of every buffer, and the bytes themselves.  Every
 * buffer is its own heap block of exactly the size the kernels may touch, so AddressSanitizer
 * reports the first byte read or written out of bounds; the checks are the kernels' contract:
 * merge(split(x)) == x, both agree byte for byte with the naive loops of planes.h, and
 * zigzag_undiff(zigzag_diff(x)) == x.
 */
#include "planes.h"

#include <stdlib.h>
#include <string.h>

static const size_t widths[] = {1, 2, 3, 4, 8, 16, 64};

static uint8_t *copy_block(const uint8_t *data, size_t len)
{
    uint8_t *block = malloc(len ? len : 1);
    if (block && len)
        memcpy(block, data, len);
    return block;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t w = widths[data[0] % (sizeof widths / sizeof widths[0])];
    int with_base = data[1] & 1;
    uint8_t absent_mask = data[2];  /* plane p is absent when bit p % 8 is set */
    data += 3;
    size -= 3;
    size_t n = size / (with_base ? 2 * w : w);
    size_t len = n * w;
    uint8_t *src = copy_block(data, len);
    uint8_t *base = with_base ? copy_block(data + len, len) : NULL;
    uint8_t *split = malloc(len ? len : 1);
    uint8_t *merged = malloc(len ? len : 1);
    const uint8_t **planes = malloc(w * sizeof *planes);
    uint8_t **owned = calloc(w, sizeof *owned);
    if (!src || (with_base && !base) || !split || !merged || !planes || !owned)
        abort();

    ds_split_planes(src, base, split, n, w);
    for (size_t i = 0; i < n; i++)
        for (size_t p = 0; p < w; p++)
            if (split[p * n + i] != (uint8_t)(src[i * w + p] ^ (base ? base[i * w + p] : 0)))
                abort();

    /* Each plane in its own exact block, or absent. */
    for (size_t p = 0; p < w; p++) {
        if (absent_mask >> (p % 8) & 1) {
            planes[p] = NULL;
        } else {
            owned[p] = copy_block(split + p * n, n);
            if (!owned[p])
                abort();
            planes[p] = owned[p];
        }
    }
    ds_merge_planes(planes, base, merged, n, w);
    for (size_t i = 0; i < n; i++)
        for (size_t p = 0; p < w; p++) {
            uint8_t plane = planes[p] ? planes[p][i] : 0;
            if (merged[i * w + p] != (uint8_t)(plane ^ (base ? base[i * w + p] : 0)))
                abort();
            if (planes[p] && merged[i * w + p] != src[i * w + p])
                abort();
        }

    /* Zigzag differences (widths 2, 4, 8): undiff(diff(x)) == x, within exact blocks. */
    if (with_base && (w == 2 || w == 4 || w == 8)) {
        uint8_t *diff = malloc(len ? len : 1), *back = malloc(len ? len : 1);
        if (!diff || !back)
            abort();
        ds_zigzag_diff(src, base, diff, n, w);
        ds_zigzag_undiff(diff, base, back, n, w);
        if (len && memcmp(back, src, len) != 0)
            abort();
        free(back);
        free(diff);
    }

    for (size_t p = 0; p < w; p++)
        free(owned[p]);
    free(owned);
    free(planes);
    free(merged);
    free(split);
    free(base);
    free(src);
    return 0;
}

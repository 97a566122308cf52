/* Byte-plane split and merge, fused with an optional XOR against a base chunk.
 *
 * Pure C, no Python: the kernels take pointers and lengths; nativemodule.c
 * handles buffers, errors and the GIL.  For element i in [0, n) and plane p
 * in [0, w) (docs/format.md, transforms 1 and 2):
 *   split:  dst[p*n + i] = src[i*w + p] ^ base[i*w + p]
 *   merge:  dst[i*w + p] = planes[p][i] ^ base[i*w + p]
 * A NULL base stands for zeros, and so does a NULL entry of planes.
 *
 * Preconditions (checked by the caller, not here): 1 <= w <= DS_MAX_WIDTH;
 * src, base and each plane are readable for the lengths above; dst does not
 * overlap any input.  Buffers need no alignment.
 */
#ifndef DELTASTORE_PLANES_H
#define DELTASTORE_PLANES_H

#include <stddef.h>
#include <stdint.h>

/* Widest element the merge kernel accepts: it keeps one pointer per plane on the stack. */
#define DS_MAX_WIDTH 64

void ds_split_planes(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n_elems,
                     size_t width);

void ds_merge_planes(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                     size_t n_elems, size_t width);

/* Integer difference against a base, zigzag-coded, for elements of width 2, 4 or 8 read as
 * little-endian unsigned integers of that width (docs/format.md, transform 3):
 *   diff:    d = src[i] - base[i] (mod 2^bits);  dst[i] = (d << 1) ^ (d >> (bits - 1)),
 *            the shift right arithmetic on d read as signed
 *   undiff:  the inverse, dst[i] = base[i] + ((z >> 1) ^ -(z & 1))  (mod 2^bits)
 * A float that moved a little keeps its exponent, so its bit pattern moved by a small integer:
 * the difference is small where XOR can flip a whole run of bits on a carry.  Same
 * preconditions as above; width is 2, 4 or 8. */
void ds_zigzag_diff(const uint8_t *src, const uint8_t *base, uint8_t *dst, size_t n_elems,
                    size_t width);

void ds_zigzag_undiff(const uint8_t *diff, const uint8_t *base, uint8_t *dst, size_t n_elems,
                      size_t width);

#endif

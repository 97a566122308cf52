/* Byte-plane split and merge, with an optional XOR against a base chunk.
 *
 * Pure C, no Python: the kernels take pointers and lengths, and the glue in
 * nativemodule.c handles buffers, errors and the GIL.  Layout (docs/format.md):
 *   split:  dst[p*n + i]     = src[i*w + p] ^ base[i*w + p]
 *   merge:  dst[i*w + p]     = planes[p][i] ^ base[i*w + p]
 * for element i in [0, n) and plane p in [0, w); a NULL base means zeros, and
 * a NULL plane pointer in merge means an all-zero plane.
 */
#ifndef DELTASTORE_PLANES_H
#define DELTASTORE_PLANES_H

#include <stddef.h>
#include <stdint.h>

void ds_split_planes(const uint8_t *src, const uint8_t *base, uint8_t *dst,
                     size_t n_elems, size_t width);

void ds_merge_planes(const uint8_t *const *planes, const uint8_t *base, uint8_t *dst,
                     size_t n_elems, size_t width);

#endif

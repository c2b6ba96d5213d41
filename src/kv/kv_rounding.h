// KV storage types below fp32. The GPU stores K and V in them; the CPU backend keeps fp32 but rounds
// every row it appends exactly as the GPU stores it, so it stays the oracle for each storage type.
// A row is one token's K (or V) of one KV head: head_dim values.
//   f32          as computed
//   bf16         rounded to bfloat16 (nearest, ties to even)
//   fp8          e4m3 (field_fp8_round of sparse/field_storage.h: nearest, ties to even, saturating
//                at ±448) with one power-of-two scale per row: the smallest 2^s with max|x| / 2^s <= 448
//                (s >= -124);
//                the GPU keeps the scale beside the page (4 bytes per 128-value row); a power of
//                two makes scaling exact, so rounding to e4m3 is the only error
//   fp8-tensor   e4m3 with one scale of 1 for the whole cache (vLLM's default without calibration),
//                emulated on the CPU only, to measure what the per-row scales buy
#pragma once

#include <cstdint>

#include "kv/fp8_row_scale.h"

namespace vortex {

enum class KvStorage { kF32, kBf16, kFp8, kFp8Tensor };

// fp8_row_scale(amax): the per-row scale (kv/fp8_row_scale.h, shared with the GPU kernels).

// Rounds `row` (n values) in place to what `storage` keeps.
void round_kv_row(KvStorage storage, float* row, int64_t n);

// Bytes the GPU stores per K or V row of `head_dim` values (the fp8 scale included).
int64_t kv_row_bytes(KvStorage storage, int64_t head_dim);

}  // namespace vortex

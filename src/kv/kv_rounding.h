// KV storage types below fp32. The GPU stores K and V in them; the CPU backend keeps fp32 but rounds
// every row it appends exactly as the GPU stores it, so it stays the oracle for each storage type.
// A row is one token's K (or V) of one KV head: head_dim values.
//   f32          as computed
//   bf16         rounded to bfloat16 (nearest, ties to even)
//   fp8          one byte per element and one power-of-two scale per row (the GPU keeps the scales
//                beside the pages: 4 bytes per 128-value row); a power of two makes scaling exact, so
//                rounding to the byte is the only error.
//                Values: e4m3 (field_fp8_round of sparse/field_storage.h: nearest, ties to even,
//                saturating at ±448), scale the smallest 2^s with max|x| / 2^s <= 448 (s >= -124).
//                Keys: int8, int8_key_code(x / s) (nearest, ties to even, clamped to ±127), scale the
//                2^s with max|x| / 2^s in [64, 128) (s >= -126) — kv/kv_row_scale.h — and stored
//                rotated when head_dim is a power of two: the row kept is H·k (H the Walsh–Hadamard
//                matrix of kv/hadamard.h, unnormalised), and the key read back is
//                H·(int8 · s) / head_dim. Attention multiplies the rotated query H·q / head_dim with the
//                stored row (the same dot product, since H·H = head_dim·I); everything else (page
//                summaries, flows) reads the key rotated back.
//                Why: a few channels of a key carry most of q·k. Stored as they are in e4m3, whose
//                error is relative to each element, those channels' rounding decided the logits.
//                Rotated, every element holds a share of every channel and the elements are spread
//                about evenly (near-Gaussian), which int8's uniform steps cover about 3 times more
//                finely than e4m3's 3 mantissa bits (rms error over a row of 128 Gaussian elements:
//                0.009 against 0.027). docs/accuracy.md: the embedded model at length 4000 loses 6 of
//                60 answers to bf16 with plain e4m3 keys, 3 of 120 with rotated e4m3 keys, none of 120
//                with rotated int8 keys. Values keep e4m3: their errors average out in the weighted sum.
//   fp8-tensor   e4m3 with one scale of 1 for the whole cache and no rotation (vLLM's default without
//                calibration), emulated on the CPU only, for comparison
#pragma once

#include <cstdint>

#include "kv/kv_row_scale.h"

namespace vortex {

enum class KvStorage { kF32, kBf16, kFp8, kFp8Tensor };

// fp8_row_scale(amax): the per-row scale (kv/kv_row_scale.h, shared with the GPU kernels).

enum class KvRow { kKey, kValue };

// Whether `storage` keeps keys of `head_dim` values rotated (above).
bool kv_keys_rotated(KvStorage storage, int64_t head_dim);

// Rounds `row` (n values, a key or a value) in place to what `storage` keeps and gives back: for a
// rotated key, H·(rounded H·row) / n.
void round_kv_row(KvStorage storage, KvRow kind, float* row, int64_t n);

// Rounds a row as stored, without rotating: what round_kv_row does to values (and to keys that are not
// rotated); the rows the GPU stores (a rotated key's row is H·k).
void round_stored_row(KvStorage storage, KvRow kind, float* row, int64_t n);

// Bytes the GPU stores per K or V row of `head_dim` values (the fp8 scale included).
int64_t kv_row_bytes(KvStorage storage, int64_t head_dim);

}  // namespace vortex

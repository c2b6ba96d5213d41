// The attention prologue, fused: for every token of the batch, take its slice of the fused q/k/v
// projection, add biases (Qwen2), RMSNorm each q and k head (Qwen3), rotate q and k (RoPE), write
// q for attention and k, v into the token's slot of the paged KV cache (an fp8 cache: each k and v
// row scaled by its power-of-two scale, stored beside it, then rounded to int8 (k) or e4m3 (v); with
// rotate_keys the k rows rotated first and the rotated query written too; kv_fp8.cuh).
// Letters: M tokens, H query heads, G kv heads, D head dim, P page size.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

template <typename Tq, typename Tkv>
struct RopeAppendParams {
  const float* qkv = nullptr;           // (M, (H + 2G) · D): q heads, then k heads, then v heads
  const float* bias = nullptr;          // ((H + 2G) · D) or null
  const float* q_norm = nullptr;        // (D) or null
  const float* k_norm = nullptr;        // (D) or null
  const float* inv_freq = nullptr;      // (D/2)
  const int32_t* positions = nullptr;   // (M)
  const int64_t* slots = nullptr;       // (M): page · P + slot of each token
  Tq* q_out = nullptr;                  // (M, H, D)
  Tkv* k_cache = nullptr;               // (num_pages, G, P, D) of this layer
  Tkv* v_cache = nullptr;               // (num_pages, G, P, D) of this layer
  float* k_scale = nullptr;             // (num_pages, G, P) of this layer: an fp8 cache's row scales (kv_fp8.cuh)
  float* v_scale = nullptr;             // (num_pages, G, P)
  bool rotate_keys = false;             // fp8 cache, D a power of two: k rows stored as H·k (kv/kv_rounding.h)
  Tq* q_rotated_out = nullptr;          // (M, H, D) with rotate_keys: H·q / D, the query attention uses
  int64_t tokens = 0;                   // M
  int num_heads = 0;                    // H
  int num_kv_heads = 0;                 // G
  int head_dim = 0;                     // D
  int page_size = 0;                    // P
  float attention_scaling = 1.0f;       // multiplies cos and sin (yarn)
  float eps = 1e-6f;
};

template <typename Tq, typename Tkv>
void launch_rope_append(const RopeAppendParams<Tq, Tkv>& p, cudaStream_t stream);

}  // namespace vortex::cuda

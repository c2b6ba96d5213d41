// Prefill attention with tensor cores (FlashAttention-2 on mma.sync): the T tokens of one prefill
// chunk attend causally to their sequence's keys in the paged cache (positions 0..start+t), reading
// K/V tiles of 64 keys into shared memory (double-buffered cp.async) and keeping scores, the online
// softmax and the output in registers.
// bf16 inputs (an fp8 cache's tiles are turned into bf16 in shared memory, exactly), fp32 scores
// and accumulation. Letters: T chunk tokens, H heads, G kv heads, D head dim.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace vortex::cuda {

struct PrefillAttentionParams {
  const __nv_bfloat16* q = nullptr;        // (T, H, D), RoPE applied
  const __nv_bfloat16* k_cache = nullptr;  // (num_pages, G, P, D)
  const __nv_bfloat16* v_cache = nullptr;  // (num_pages, G, P, D)
  // An fp8 cache (kv_fp8.cuh) instead of k_cache / v_cache: byte rows and their scales.
  const uint8_t* k_fp8 = nullptr;          // (num_pages, G, P, D)
  const uint8_t* v_fp8 = nullptr;          // (num_pages, G, P, D)
  const float* k_scale = nullptr;          // (num_pages, G, P)
  const float* v_scale = nullptr;          // (num_pages, G, P)
  const int32_t* pages = nullptr;          // the sequence's page table
  __nv_bfloat16* out = nullptr;            // (T, H, D)
  int64_t tokens = 0;                      // T
  int64_t start = 0;                       // position of the chunk's first token
  int num_heads = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  float scale = 1.0f;
};

// True when the shapes are supported (D 64 or 128) and the kernel was launched.
bool launch_prefill_attention(const PrefillAttentionParams& p, cudaStream_t stream);

}  // namespace vortex::cuda

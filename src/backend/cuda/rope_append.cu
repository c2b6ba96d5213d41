#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_fp8.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope_append.cuh"
#include "backend/cuda/types.cuh"
#include "kv/hadamard.h"

namespace vortex::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxHeadDim = 256;

// One warp per (token, head). Heads 0..H-1 are q, H..H+G-1 are k, H+G..H+2G-1 are v.
template <typename Tq, typename Tkv>
__global__ void rope_append_kernel(RopeAppendParams<Tq, Tkv> p) {
  __shared__ float values[kWarpsPerBlock][kMaxHeadDim];
  pdl_wait(), pdl_release();  // (pdl.cuh)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int heads_total = p.num_heads + 2 * p.num_kv_heads;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  if (item >= p.tokens * heads_total) return;
  const int64_t token = item / heads_total;
  const int head = static_cast<int>(item % heads_total);
  const int D = p.head_dim, half = D / 2;
  const float* src = p.qkv + token * heads_total * D + static_cast<int64_t>(head) * D;
  const float* bias = p.bias ? p.bias + static_cast<int64_t>(head) * D : nullptr;
  float* v = values[warp];
  float sum_sq = 0.0f;
  for (int i = lane; i < D; i += 32) {
    v[i] = src[i] + (bias ? bias[i] : 0.0f);
    sum_sq += v[i] * v[i];
  }
  sum_sq = warp_sum(sum_sq);
  __syncwarp();
  const bool is_q = head < p.num_heads, is_k = !is_q && head < p.num_heads + p.num_kv_heads;
  const float* norm = is_q ? p.q_norm : (is_k ? p.k_norm : nullptr);
  if (norm) {
    const float inv = rsqrtf(sum_sq / static_cast<float>(D) + p.eps);
    for (int i = lane; i < D; i += 32) v[i] = norm[i] * (v[i] * inv);
    __syncwarp();
  }
  if (is_q || is_k) {  // rotate-half RoPE, angle in fp32 as transformers computes it
    const float position = static_cast<float>(p.positions[token]);
    for (int i = lane; i < half; i += 32) {
      float angle = position * p.inv_freq[i];
      float c = cosf(angle) * p.attention_scaling, s = sinf(angle) * p.attention_scaling;
      float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
    __syncwarp();
  }
  if (is_q) {
    Tq* out = p.q_out + (token * p.num_heads + head) * D;
    for (int i = lane; i < D; i += 32) out[i] = from_float<Tq>(v[i]);
    if (p.rotate_keys) {
      __syncwarp();
      warp_hadamard_in_place(v, D, lane);
      const float inverse = 1.0f / static_cast<float>(D);  // a power of two: exact
      Tq* rotated = p.q_rotated_out + (token * p.num_heads + head) * D;
      for (int i = lane; i < D; i += 32) rotated[i] = from_float<Tq>(v[i] * inverse);
    }
    return;
  }
  const int g = is_k ? head - p.num_heads : head - p.num_heads - p.num_kv_heads;
  const int64_t slot = p.slots[token];
  const int64_t page = slot / p.page_size, in_page = slot % p.page_size;
  const int64_t row = (page * p.num_kv_heads + g) * p.page_size + in_page;
  Tkv* dst = (is_k ? p.k_cache : p.v_cache) + row * D;
  if constexpr (kIsFp8<Tkv>) {
    if (is_k && p.rotate_keys) warp_hadamard_in_place(v, D, lane);  // (v synced after RoPE)
    float amax = 0.0f;
    for (int i = lane; i < D; i += 32) amax = fmaxf(amax, fabsf(v[i]));
    amax = warp_max(amax);
    const float scale = is_k ? int8_row_scale(amax) : fp8_row_scale(amax), inverse = 1.0f / scale;  // powers of two: exact
    for (int i = lane; i < D; i += 32) dst[i] = is_k ? key_from_scaled(v[i] * inverse) : from_float<Tkv>(v[i] * inverse);
    if (lane == 0) (is_k ? p.k_scale : p.v_scale)[row] = scale;
  } else {
    for (int i = lane; i < D; i += 32) dst[i] = from_float<Tkv>(v[i]);
  }
}

}  // namespace

template <typename Tq, typename Tkv>
void launch_rope_append(const RopeAppendParams<Tq, Tkv>& p, cudaStream_t stream) {
  check(p.head_dim <= kMaxHeadDim && p.head_dim % 2 == 0, "rope_append: head_dim {} unsupported (even, <= {})", p.head_dim, kMaxHeadDim);
  const int64_t items = p.tokens * (p.num_heads + 2 * p.num_kv_heads);
  if (items == 0) return;
  if constexpr (kIsFp8<Tkv>) check(p.k_scale != nullptr && p.v_scale != nullptr, "internal: rope_append into an fp8 cache without scales");
  check(!p.rotate_keys || (kIsFp8<Tkv> && is_power_of_two(p.head_dim) && p.q_rotated_out != nullptr),
        "internal: rope_append rotating keys needs an fp8 cache, a power-of-two head_dim ({}) and a rotated query's buffer", p.head_dim);
  const int64_t blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  launch_pdl(rope_append_kernel<Tq, Tkv>, dim3(static_cast<unsigned>(blocks)), dim3(kWarpsPerBlock * 32), 0, stream, p);
  VX_CUDA_LAUNCH();
}

template void launch_rope_append<float, float>(const RopeAppendParams<float, float>&, cudaStream_t);
template void launch_rope_append<__nv_bfloat16, __nv_bfloat16>(const RopeAppendParams<__nv_bfloat16, __nv_bfloat16>&, cudaStream_t);
template void launch_rope_append<__nv_bfloat16, Fp8>(const RopeAppendParams<__nv_bfloat16, Fp8>&, cudaStream_t);

}  // namespace vortex::cuda

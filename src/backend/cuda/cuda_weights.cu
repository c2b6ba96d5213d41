#include <cuda_bf16.h>

#include <cstring>

#include "backend/cpu/rope.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_weights.cuh"
#include "backend/cuda/fill_random.cuh"
#include "model/weights.h"

namespace vortex::cuda {
namespace {

// Allocates device memory owned by `w` and copies `bytes` from the host.
const void* upload(DeviceWeights& w, const void* host, size_t bytes) {
  auto& buffer = w.storage.emplace_back(bytes);
  VX_CUDA(cudaMemcpy(buffer.get(), host, bytes, cudaMemcpyHostToDevice));
  return buffer.get();
}

const float* upload_floats(DeviceWeights& w, const std::vector<float>& values) {
  if (values.empty()) return nullptr;
  return static_cast<const float*>(upload(w, values.data(), values.size() * sizeof(float)));
}

// Stacks matrices (same column count) row-wise, converted to `dtype`, and uploads them.
const void* upload_stacked(DeviceWeights& w, std::initializer_list<const Matrix*> parts, DType dtype) {
  int64_t rows = 0, cols = parts.begin()[0]->cols;
  for (const Matrix* m : parts) rows += m->rows;
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<uint8_t> host(static_cast<size_t>(rows * cols) * dtype_size(dtype));
  int64_t out_row = 0;
  for (const Matrix* m : parts) {
    const size_t in_row_bytes = static_cast<size_t>(cols) * dtype_size(m->dtype);
    for (int64_t r = 0; r < m->rows; ++r, ++out_row) {
      convert_to_f32(m->dtype, static_cast<const uint8_t*>(m->data) + static_cast<size_t>(r) * in_row_bytes, row.data(), row.size());
      if (dtype == DType::kF32) {
        std::memcpy(host.data() + static_cast<size_t>(out_row * cols) * 4, row.data(), row.size() * 4);
      } else {
        auto* dst = reinterpret_cast<uint16_t*>(host.data()) + out_row * cols;
        for (int64_t c = 0; c < cols; ++c) dst[c] = f32_to_bf16(row[static_cast<size_t>(c)]);
      }
    }
  }
  w.matrix_bytes += host.size();
  return upload(w, host.data(), host.size());
}

std::vector<float> concat(std::initializer_list<const std::vector<float>*> parts) {
  std::vector<float> out;
  for (const auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

void upload_rope(DeviceWeights& w, const ModelConfig& config) {
  RopeFrequencies freqs = rope_frequencies(config);
  w.inv_freq = upload_floats(w, freqs.inv_freq);
  w.attention_scaling = freqs.attention_scaling;
}

}  // namespace

DeviceWeights upload_weights(const ModelWeights& weights, DType dtype) {
  check(dtype == DType::kF32 || dtype == DType::kBF16, "cuda: precision {} unsupported (bf16 or f32)", dtype_name(dtype));
  DeviceWeights w;
  w.dtype = dtype;
  for (const LayerWeights& l : weights.layers) {
    DeviceLayer d;
    d.input_norm = upload_floats(w, l.input_norm);
    d.post_norm = upload_floats(w, l.post_attention_norm);
    d.q_norm = upload_floats(w, l.q_norm);
    d.k_norm = upload_floats(w, l.k_norm);
    d.qkv = upload_stacked(w, {&l.q_proj, &l.k_proj, &l.v_proj}, dtype);
    if (!l.q_bias.empty()) d.qkv_bias = upload_floats(w, concat({&l.q_bias, &l.k_bias, &l.v_bias}));
    d.o = upload_stacked(w, {&l.o_proj}, dtype);
    d.o_bias = upload_floats(w, l.o_bias);
    d.gate_up = upload_stacked(w, {&l.gate_proj, &l.up_proj}, dtype);
    if (!l.gate_bias.empty()) d.gate_up_bias = upload_floats(w, concat({&l.gate_bias, &l.up_bias}));
    d.down = upload_stacked(w, {&l.down_proj}, dtype);
    d.down_bias = upload_floats(w, l.down_bias);
    w.layers.push_back(d);
  }
  w.final_norm = upload_floats(w, weights.final_norm);
  size_t before = w.matrix_bytes;
  w.embed = upload_stacked(w, {&weights.embed_tokens}, dtype);
  w.matrix_bytes = before;  // the embedding is gathered, not read whole
  w.lm_head = weights.config.tie_word_embeddings ? w.embed : upload_stacked(w, {&weights.lm_head}, dtype);
  if (weights.config.tie_word_embeddings) w.matrix_bytes += static_cast<size_t>(weights.lm_head.rows * weights.lm_head.cols) * dtype_size(dtype);
  upload_rope(w, weights.config);
  return w;
}

namespace {

template <typename T>
const void* random_matrix(DeviceWeights& w, int64_t rows, int64_t cols, float scale, uint64_t seed, bool count = true) {
  auto& buffer = w.storage.emplace_back(static_cast<size_t>(rows * cols) * sizeof(T));
  launch_fill_random(reinterpret_cast<T*>(buffer.get()), rows * cols, scale, seed, nullptr);
  if (count) w.matrix_bytes += buffer.bytes();
  return buffer.get();
}

template <typename T>
DeviceWeights random_weights_typed(const ModelConfig& c, DType dtype, uint64_t seed) {
  DeviceWeights w;
  w.dtype = dtype;
  const int64_t C = c.hidden_size, F = c.intermediate_size, QKV = c.q_dim() + 2 * c.kv_dim();
  std::vector<float> ones_c(static_cast<size_t>(C), 1.0f), ones_d(static_cast<size_t>(c.head_dim), 1.0f);
  const float scale = 0.02f;
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    DeviceLayer d;
    d.input_norm = upload_floats(w, ones_c);
    d.post_norm = upload_floats(w, ones_c);
    if (c.qk_norm) d.q_norm = upload_floats(w, ones_d), d.k_norm = upload_floats(w, ones_d);
    if (c.qkv_bias) d.qkv_bias = upload_floats(w, std::vector<float>(static_cast<size_t>(QKV), 0.01f));
    d.qkv = random_matrix<T>(w, QKV, C, scale, seed + 8 * layer + 1);
    d.o = random_matrix<T>(w, C, c.q_dim(), scale, seed + 8 * layer + 2);
    d.gate_up = random_matrix<T>(w, 2 * F, C, scale, seed + 8 * layer + 3);
    d.down = random_matrix<T>(w, C, F, scale, seed + 8 * layer + 4);
    w.layers.push_back(d);
  }
  w.final_norm = upload_floats(w, ones_c);
  w.embed = random_matrix<T>(w, c.vocab_size, C, 1.0f, seed + 7, /*count=*/c.tie_word_embeddings);
  w.lm_head = c.tie_word_embeddings ? w.embed : random_matrix<T>(w, c.vocab_size, C, scale, seed + 5);
  upload_rope(w, c);
  VX_CUDA(cudaDeviceSynchronize());
  return w;
}

}  // namespace

DeviceWeights random_device_weights(const ModelConfig& config, DType dtype, uint64_t seed) {
  if (dtype == DType::kF32) return random_weights_typed<float>(config, dtype, seed);
  check(dtype == DType::kBF16, "cuda: precision {} unsupported (bf16 or f32)", dtype_name(dtype));
  return random_weights_typed<__nv_bfloat16>(config, dtype, seed);
}

}  // namespace vortex::cuda

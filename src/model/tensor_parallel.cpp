#include "model/tensor_parallel.h"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <memory>
#include <vector>

#include "core/error.h"

namespace vortex {
namespace {

// Rows [begin, begin + count) of W (out × in, row-major): contiguous, so a view.
Matrix rows_of(const Matrix& w, int64_t begin, int64_t count) {
  const size_t row_bytes = static_cast<size_t>(w.cols) * dtype_size(w.dtype);
  return {.dtype = w.dtype, .data = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(begin) * row_bytes, .rows = count, .cols = w.cols};
}

// What a shard owns beyond the full model's storage: the copied row-parallel matrices.
struct ShardStorage {
  std::shared_ptr<const void> full;
  std::vector<std::unique_ptr<uint8_t[]>> buffers;
  // Columns [begin, begin + count) of W, copied row by row.
  Matrix columns_of(const Matrix& w, int64_t begin, int64_t count) {
    const size_t element = dtype_size(w.dtype), out_row = static_cast<size_t>(count) * element;
    auto& buffer = buffers.emplace_back(new uint8_t[static_cast<size_t>(w.rows) * out_row]);
    const auto* in = static_cast<const uint8_t*>(w.data);
    for (int64_t r = 0; r < w.rows; ++r)
      std::memcpy(buffer.get() + static_cast<size_t>(r) * out_row, in + (static_cast<size_t>(r * w.cols + begin)) * element, out_row);
    return {.dtype = w.dtype, .data = buffer.get(), .rows = w.rows, .cols = count};
  }
};

std::vector<float> slice(const std::vector<float>& v, int64_t begin, int64_t count) {
  if (v.empty()) return {};
  return {v.begin() + begin, v.begin() + begin + count};
}

}  // namespace

std::pair<int64_t, int64_t> vocab_rows(int64_t V, int64_t ranks, int64_t rank) {
  const int64_t base = V / ranks, extra = V % ranks;
  return {rank * base + std::min(rank, extra), base + (rank < extra ? 1 : 0)};
}

ShardPlan shard_plan(const ModelConfig& c, int64_t ranks, int64_t rank) {
  check_option(ranks >= 1, "tensor_parallel", "must be at least 1, got {}", ranks);
  check(rank >= 0 && rank < ranks, "internal: rank {} of {}", rank, ranks);
  const int64_t H = c.num_heads, G = c.num_kv_heads, F = c.intermediate_size, V = c.vocab_size;
  check_option(H % ranks == 0, "tensor_parallel", "{} ranks do not divide the model's {} query heads", ranks, H);
  check_option(F % ranks == 0, "tensor_parallel", "{} ranks do not divide the model's intermediate size {}", ranks, F);
  check_option(G % ranks == 0 || ranks % G == 0, "tensor_parallel",
               "{} ranks neither divide the model's {} KV heads nor are a multiple of them", ranks, G);
  ShardPlan p{.ranks = ranks, .rank = rank, .full_vocab = V, .full_kv_heads = G};
  p.q_heads = H / ranks, p.q_begin = rank * p.q_heads;
  if (G % ranks == 0) {
    p.kv_heads = G / ranks, p.kv_begin = rank * p.kv_heads;
  } else {  // more ranks than KV heads: the rank's query heads share one KV head, which ranks / G ranks replicate
    p.kv_heads = 1, p.kv_begin = p.q_begin / (H / G);
    check_option((H / G) % p.q_heads == 0, "tensor_parallel", "{} ranks split the {} query heads of a KV head unevenly", ranks, H / G);
  }
  p.ff = F / ranks, p.ff_begin = rank * p.ff;
  std::tie(p.vocab_begin, p.vocab) = vocab_rows(V, ranks, rank);
  check_option(p.vocab > 0, "tensor_parallel", "{} ranks leave rank {} none of the {}-token vocabulary", ranks, rank, V);
  return p;
}

ModelWeights shard_weights(const ModelWeights& full, const ShardPlan& p) {
  const ModelConfig& c = full.config;
  const int64_t D = c.head_dim;
  auto storage = std::make_shared<ShardStorage>();
  storage->full = full.storage;
  ModelWeights w;
  w.config = c;
  w.config.num_heads = p.q_heads, w.config.num_kv_heads = p.kv_heads, w.config.intermediate_size = p.ff, w.config.vocab_size = p.vocab;
  w.embed_tokens = rows_of(full.embed_tokens, p.vocab_begin, p.vocab);
  w.lm_head = rows_of(full.lm_head, p.vocab_begin, p.vocab);
  w.final_norm = full.final_norm;
  w.dtype_summary = full.dtype_summary;
  const bool first = p.rank == 0;
  for (const LayerWeights& l : full.layers) {
    LayerWeights s;
    s.input_norm = l.input_norm, s.post_attention_norm = l.post_attention_norm, s.q_norm = l.q_norm, s.k_norm = l.k_norm;
    s.q_proj = rows_of(l.q_proj, p.q_begin * D, p.q_heads * D);
    s.k_proj = rows_of(l.k_proj, p.kv_begin * D, p.kv_heads * D);
    s.v_proj = rows_of(l.v_proj, p.kv_begin * D, p.kv_heads * D);
    s.o_proj = storage->columns_of(l.o_proj, p.q_begin * D, p.q_heads * D);
    s.q_bias = slice(l.q_bias, p.q_begin * D, p.q_heads * D);
    s.k_bias = slice(l.k_bias, p.kv_begin * D, p.kv_heads * D);
    s.v_bias = slice(l.v_bias, p.kv_begin * D, p.kv_heads * D);
    s.o_bias = first ? l.o_bias : std::vector<float>{};
    s.gate_proj = rows_of(l.gate_proj, p.ff_begin, p.ff);
    s.up_proj = rows_of(l.up_proj, p.ff_begin, p.ff);
    s.down_proj = storage->columns_of(l.down_proj, p.ff_begin, p.ff);
    s.gate_bias = slice(l.gate_bias, p.ff_begin, p.ff);
    s.up_bias = slice(l.up_bias, p.ff_begin, p.ff);
    s.down_bias = first ? l.down_bias : std::vector<float>{};
    w.layers.push_back(std::move(s));
  }
  w.storage = storage;
  return w;
}

}  // namespace vortex

#include "backend/cpu/forward.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "backend/cpu/attention.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace vortex::cpu {

CpuModel::CpuModel(std::shared_ptr<const ModelWeights> weights, KvCacheShape kv_shape, int64_t max_tokens)
    : weights_(std::move(weights)),
      kv_(kv_shape),
      rope_(rope_frequencies(weights_->config)),
      max_tokens_(max_tokens),
      summaries_(kv_shape),
      lsh_(kv_shape, weights_->config.num_layers),
      sparse_counts_(new SparseHeadCounts[static_cast<size_t>(weights_->config.num_layers)]) {
  const ModelConfig& c = weights_->config;
  check(max_tokens > 0, "max tokens per forward must be positive");
  auto rows = static_cast<size_t>(max_tokens);
  ids_.resize(rows);
  positions_.resize(rows);
  x_.resize(rows * c.hidden_size);
  h_.resize(rows * c.hidden_size);
  q_.resize(rows * c.q_dim());
  attn_.resize(rows * c.q_dim());
  k_.resize(rows * c.kv_dim());
  v_.resize(rows * c.kv_dim());
  gate_.resize(rows * c.intermediate_size);
  up_.resize(rows * c.intermediate_size);
}

void CpuModel::attention_block(const LayerWeights& w, int64_t layer, std::span<const SequenceChunk> chunks, int64_t m) {
  const ModelConfig& c = weights_->config;
  const int64_t D = c.head_dim;
  rmsnorm(x_.data(), w.input_norm.data(), m, c.hidden_size, static_cast<float>(c.rms_norm_eps), h_.data());
  linear(h_.data(), m, w.q_proj, w.q_bias.empty() ? nullptr : w.q_bias.data(), q_.data());
  linear(h_.data(), m, w.k_proj, w.k_bias.empty() ? nullptr : w.k_bias.data(), k_.data());
  linear(h_.data(), m, w.v_proj, w.v_bias.empty() ? nullptr : w.v_bias.data(), v_.data());
  if (!w.q_norm.empty()) {  // Qwen3: RMSNorm over each head's D features, before RoPE
    float eps = static_cast<float>(c.rms_norm_eps);
    rmsnorm(q_.data(), w.q_norm.data(), m * c.num_heads, D, eps, q_.data());
    rmsnorm(k_.data(), w.k_norm.data(), m * c.num_kv_heads, D, eps, k_.data());
  }
  apply_rope(rope_, q_.data(), m, c.num_heads, D, positions_.data());
  apply_rope(rope_, k_.data(), m, c.num_kv_heads, D, positions_.data());
  int64_t row = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SequenceChunk& chunk = chunks[i];
    append_kv(kv_, layer, *chunk.page_table, chunk.start, chunk.count, k_.data() + row * c.kv_dim(),
              v_.data() + row * c.kv_dim());
    summaries_.on_append(kv_, layer, *chunk.page_table, chunk.start, chunk.count);
    attend_chunk(chunk, i, layer, row);
    row += chunk.count;
  }
  linear(attn_.data(), m, w.o_proj, w.o_bias.empty() ? nullptr : w.o_bias.data(), h_.data());
  all_reduce(h_.data(), m * c.hidden_size);  // tensor parallel: each rank's heads' share
  add_inplace(x_.data(), h_.data(), m * c.hidden_size);
}

void CpuModel::fill_kv_random(uint64_t seed) {
  // Values drawn from a table of 8,191 normals with strides 7 and 13: cheap, and no two rows alike.
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> table(8191);
  for (float& v : table) v = normal(rng);
  size_t cursor = rng() % table.size();
  const KvCacheShape& s = kv_.shape();
  const int64_t elements = s.num_pages * s.num_kv_heads * s.page_size * s.head_dim;  // one layer's
  for (int64_t layer = 0; layer < s.num_layers; ++layer) {
    float* k = kv_.k(layer);
    float* v = kv_.v(layer);
    for (int64_t i = 0; i < elements; ++i) {
      k[i] = table[cursor = (cursor + 7) % table.size()];
      v[i] = table[cursor = (cursor + 13) % table.size()];
    }
  }
}

ForwardCounters CpuModel::forward_counters() const {
  ForwardCounters out;
  for (int64_t l = 0; l < weights_->config.num_layers; ++l) {
    const SparseHeadCounts& counts = sparse_counts_[l];
    out.sparse_heads_by_layer.push_back(counts.sparse.load());
    out.dense_below_heads_by_layer.push_back(counts.dense.load());
    out.sparse_pages_by_layer.push_back(counts.pages.load());
    out.cover_pages_by_layer.push_back(counts.cover_pages.load());
    out.sparse_heads += out.sparse_heads_by_layer.back();
    out.dense_below_heads += out.dense_below_heads_by_layer.back();
    out.sparse_pages += out.sparse_pages_by_layer.back();
    out.cover_heads += counts.covered.load();
    out.cover_pages += out.cover_pages_by_layer.back();
  }
  return out;
}

// Attention of one chunk whose K/V are appended; sparse tokens get their page lists first.
void CpuModel::attend_chunk(const SequenceChunk& chunk, size_t index, int64_t layer, int64_t row) {
  const ModelConfig& c = weights_->config;
  AttentionChunk attention{.q = q_.data() + row * c.q_dim(), .tokens = chunk.count, .start = chunk.start,
                           .page_table = chunk.page_table, .out = attn_.data() + row * c.q_dim()};
  const std::vector<QueryPages>& queries = chunk_queries_[index];
  if (!queries.empty() && !chunk.attention->dense_layer(layer) && chunk.attention->lsh.on()) {
    // LSH sampling: the tokens before the sparse ones densely, then the sparse ones.
    const int64_t first_sparse = queries.front().position - chunk.start;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    if (first_sparse > 0) paged_attention(kv_, layer, {.q = attention.q, .tokens = first_sparse, .start = chunk.start,
                                                       .page_table = chunk.page_table, .out = attention.out}, c.num_heads, scale);
    lsh_.attend(kv_, layer, chunk, first_sparse, attention.q, c.num_heads, scale, attention.out);
    return;
  }
  if (!queries.empty() && !chunk.attention->dense_layer(layer)) {
    attention.first_sparse = queries.front().position - chunk.start;
    LayerSelectionInput in{.attention = chunk.attention, .queries = queries,
                           .q = attention.q + attention.first_sparse * c.q_dim(), .num_heads = c.num_heads,
                           .page_table = chunk.page_table, .layer = layer, .recorder = chunk.recorder};
    select_layer_pages(in, kv_, summaries_, page_lists_);
    attention.page_lists = &page_lists_;
    attention.counts = &sparse_counts_[layer];
    if (const RestEstimate estimate = chunk.attention->rest_estimate(); estimate != RestEstimate::kDrop) {
      // the full pages before the chunk's last token's page
      const int64_t full = (chunk.start + chunk.count - 1) / kv_.shape().page_size;
      summaries_.ensure_rest(kv_, layer, estimate, std::span(*chunk.page_table).first(static_cast<size_t>(full)));
      attention.rest = chunk.attention->rest;
      attention.estimate = estimate;
      attention.dense_below = chunk.attention->dense_below;
      attention.cover = chunk.attention->cover;
      attention.summaries = &summaries_;
    }
  }
  paged_attention(kv_, layer, attention, c.num_heads, 1.0f / std::sqrt(static_cast<float>(c.head_dim)));
}

// The step's sparse plan: for every chunk, the pages each of its sparse tokens always keeps, its
// candidates and its budget — shared by every layer.
void CpuModel::plan_sparse(std::span<const SequenceChunk> chunks) {
  chunk_queries_.resize(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SequenceChunk& chunk = chunks[i];
    std::vector<QueryPages>& queries = chunk_queries_[i];
    queries.clear();
    if (!chunk.attention) continue;
    summaries_.register_flow(*chunk.attention->flow);  // idempotent: kinds are keyed by reduction
    summaries_.register_rest(chunk.attention->rest_estimate());
    for (int64_t p = std::max(chunk.start, chunk.sparse_from); p < chunk.start + chunk.count; ++p)
      plan_query_pages(*chunk.attention, p, queries.emplace_back());
  }
}

void CpuModel::mlp_block(const LayerWeights& w, int64_t m) {
  const ModelConfig& c = weights_->config;
  rmsnorm(x_.data(), w.post_attention_norm.data(), m, c.hidden_size, static_cast<float>(c.rms_norm_eps), h_.data());
  linear(h_.data(), m, w.gate_proj, w.gate_bias.empty() ? nullptr : w.gate_bias.data(), gate_.data());
  linear(h_.data(), m, w.up_proj, w.up_bias.empty() ? nullptr : w.up_bias.data(), up_.data());
  silu_mul(gate_.data(), up_.data(), m * c.intermediate_size, gate_.data());
  linear(gate_.data(), m, w.down_proj, w.down_bias.empty() ? nullptr : w.down_bias.data(), h_.data());
  all_reduce(h_.data(), m * c.hidden_size);  // tensor parallel: each rank's features' share
  add_inplace(x_.data(), h_.data(), m * c.hidden_size);
}

void CpuModel::forward(std::span<const SequenceChunk> chunks, std::vector<float>& logits) {
  const ModelConfig& c = weights_->config;
  check_chunks(chunks);
  int64_t m = 0, output_rows = 0;
  for (const SequenceChunk& chunk : chunks) {
    for (int64_t t = 0; t < chunk.count; ++t) {
      ids_[static_cast<size_t>(m + t)] = chunk.tokens[t];
      positions_[static_cast<size_t>(m + t)] = static_cast<int32_t>(chunk.start + t);
    }
    m += chunk.count;
    output_rows += chunk.all_logits ? chunk.count : 1;
  }
  plan_sparse(chunks);
  lsh_.begin_step(chunks);
  embed(m);
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& w = weights_->layers[static_cast<size_t>(layer)];
    attention_block(w, layer, chunks, m);
    mlp_block(w, m);
  }
  // Gather the rows that need logits, normalise them, project to the vocabulary.
  int64_t out = 0, row = 0;
  for (const SequenceChunk& chunk : chunks) {
    int64_t first = chunk.all_logits ? 0 : chunk.count - 1;
    for (int64_t t = first; t < chunk.count; ++t, ++out)
      rmsnorm(x_.data() + (row + t) * c.hidden_size, weights_->final_norm.data(), 1, c.hidden_size,
              static_cast<float>(c.rms_norm_eps), h_.data() + out * c.hidden_size);
    row += chunk.count;
  }
  project_logits(output_rows, logits);
}

void CpuModel::check_chunks(std::span<const SequenceChunk> chunks) const {
  int64_t m = 0;
  for (const SequenceChunk& chunk : chunks) {
    check(chunk.count > 0, "internal: empty chunk");
    check(static_cast<int64_t>(chunk.page_table->size()) * kv_.shape().page_size >= chunk.start + chunk.count,
          "internal: page table too short for {} tokens", chunk.start + chunk.count);
    check(m + chunk.count <= max_tokens_, "internal: {} tokens exceed the forward capacity {}", m + chunk.count, max_tokens_);
    m += chunk.count;
  }
}

void CpuModel::join_tensor_parallel(Communicator* comm, const ShardPlan& plan) {
  const ModelConfig& c = weights_->config;
  check(comm != nullptr && comm->ranks() == plan.ranks && comm->rank() == plan.rank, "internal: a communicator for another rank");
  check(c.num_heads == plan.q_heads && c.num_kv_heads == plan.kv_heads && c.intermediate_size == plan.ff && c.vocab_size == plan.vocab,
        "internal: rank {}'s weights are not its shard", plan.rank);
  comm_ = comm, shard_ = plan;
  lsh_.place_heads(plan.kv_begin, plan.full_kv_heads);
}

void CpuModel::embed(int64_t m) {
  const ModelConfig& c = weights_->config;
  if (!comm_) return embedding(weights_->embed_tokens, ids_.data(), m, x_.data());
  // Vocabulary-parallel: the rank's rows, zeros for ids another rank holds, then the sum.
  for (int64_t t = 0; t < m; ++t) {
    float* row = x_.data() + t * c.hidden_size;
    const int32_t local = ids_[static_cast<size_t>(t)] - static_cast<int32_t>(shard_.vocab_begin);
    if (local >= 0 && local < shard_.vocab) embedding(weights_->embed_tokens, &local, 1, row);
    else std::fill(row, row + c.hidden_size, 0.0f);
  }
  comm_->all_reduce_sum(x_.data(), m * c.hidden_size);
}

void CpuModel::project_logits(int64_t rows, std::vector<float>& logits) {
  const ModelConfig& c = weights_->config;
  if (!comm_) {
    logits.resize(static_cast<size_t>(rows * c.vocab_size));
    return linear(h_.data(), rows, weights_->lm_head, nullptr, logits.data());
  }
  // Vocabulary-parallel: each rank's columns, padded to ⌈V / ranks⌉, gathered and put side by side.
  const int64_t width = (shard_.full_vocab + shard_.ranks - 1) / shard_.ranks, V = shard_.full_vocab;
  local_logits_.resize(static_cast<size_t>(rows * c.vocab_size));
  padded_logits_.assign(static_cast<size_t>(rows * width), 0.0f);
  linear(h_.data(), rows, weights_->lm_head, nullptr, local_logits_.data());
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(local_logits_.data() + r * c.vocab_size, c.vocab_size, padded_logits_.data() + r * width);
  gathered_.resize(static_cast<size_t>(shard_.ranks * rows * width));
  comm_->all_gather(padded_logits_.data(), rows * width, gathered_.data());
  logits.resize(static_cast<size_t>(rows * V));
  for (int64_t k = 0; k < shard_.ranks; ++k) {
    const auto [begin, count] = vocab_rows(V, shard_.ranks, k);
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(gathered_.data() + (k * rows + r) * width, count, logits.data() + r * V + begin);
  }
}

}  // namespace vortex::cpu

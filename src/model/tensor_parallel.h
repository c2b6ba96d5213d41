// Megatron-style tensor parallelism (issue #20): what each of N ranks holds of a model.
//
// Attention is split by heads: rank r computes query heads [q_begin, q_begin + q_heads) with the KV
// heads they read, so q/k/v are column-parallel (rows of the weight matrices) and o is row-parallel
// (columns): each rank's o projection is a partial sum of the hidden state, summed over ranks by an
// all-reduce. The MLP likewise: gate/up column-parallel over F, down row-parallel, all-reduced. With
// more ranks than KV heads (N > G) each KV head is replicated on N / G ranks, each holding a part of
// its query heads. The embedding and the LM head are split by vocabulary rows: a rank looks up the
// ids in its range (zeros elsewhere, then the all-reduce), and computes the logits of its range
// (gathered across ranks). Biases of row-parallel projections (o, down) live on rank 0 alone, so the
// all-reduce adds them once. Norms and everything per head (q/k norm, RoPE) are replicated.
//
// A rank's weights are a ModelWeights whose config describes the shard (num_heads, num_kv_heads,
// intermediate_size and vocab_size of the rank), so a backend runs it as the smaller model it is,
// plus the all-reduces and the gather at the points above.
#pragma once

#include <cstdint>
#include <utility>

#include "model/weights.h"

namespace vortex {

struct ShardPlan {
  int64_t ranks = 1, rank = 0;
  int64_t q_begin = 0, q_heads = 0;       // query heads [q_begin, q_begin + q_heads)
  int64_t kv_begin = 0, kv_heads = 0;     // KV heads [kv_begin, kv_begin + kv_heads)
  int64_t ff_begin = 0, ff = 0;           // intermediate features [ff_begin, ff_begin + ff)
  int64_t vocab_begin = 0, vocab = 0;     // vocabulary rows [vocab_begin, vocab_begin + vocab)
  int64_t full_vocab = 0;                 // the model's V (the gathered logits' width)
  int64_t full_kv_heads = 0;              // the model's G (LSH's hyperplanes are seeded per model-wide KV head)
};

// Rank `rank`'s vocabulary rows of V over `ranks`: V / ranks each, the first V mod ranks one more
// (so every rank has one when V >= ranks). {first row, count}.
std::pair<int64_t, int64_t> vocab_rows(int64_t V, int64_t ranks, int64_t rank);

// Rank `rank` of `ranks`: an OptionError naming tensor_parallel when the model does not split that
// way (ranks must divide the query heads and the intermediate size, and divide the KV heads or be
// a multiple of them; the vocabulary by vocab_rows).
ShardPlan shard_plan(const ModelConfig& config, int64_t ranks, int64_t rank);

// The rank's weights (config as above). Column-parallel matrices point into `full`'s storage;
// row-parallel ones (o, down) are copied, as their columns are not contiguous; the result keeps
// `full`'s storage alive.
ModelWeights shard_weights(const ModelWeights& full, const ShardPlan& plan);

}  // namespace vortex

// LSH-sampled attention (sparse/lsh.h) on the CPU backend: the hash tables of each sequence that
// runs an `lsh` spec, and the attention of its sparse tokens.
//
// Per sequence (keyed by its first KV page, which no other live sequence holds: an lsh sequence
// shares no pages, BatchEngine's prefix cache leaves it out) and per (layer, KV head): the mean μ
// of the prompt's keys (positions < the chunk's sparse_from), every key's codes of k − μ and its
// norm, and CSR tables (per table, the keys of each bucket) over the keys hashed so far; keys
// past the CSR are compared code by code until enough accumulate to rebuild it. All of it is a
// cache of what the KV pages and sparse_from determine: a sequence missing from a step loses its
// entry, a chunk that rewrites positions (a rollout's dense pass, a recompute after preemption)
// cuts it back, and a rebuilt entry gives the same samples. Hyperplanes depend only on the spec's
// seed, the layer and the KV head.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "backend/chunk.h"
#include "kv/kv_cache.h"
#include "sparse/lsh.h"

namespace vortex::cpu {

class LshAttention {
 public:
  explicit LshAttention(const KvCacheShape& shape, int64_t num_layers) : shape_(shape), num_layers_(num_layers) {}
  // Prints what the queries attended over the backend's life (stderr), when any ran lsh.
  ~LshAttention();
  // Before a forward pass: drops the entries of sequences the step does not run, cuts back those
  // whose chunk rewrites earlier positions (or changes where the prompt ends).
  void begin_step(std::span<const SequenceChunk> chunks);
  // Attention of the chunk's tokens t >= first_sparse in `layer` (K/V appended): q (T, H, D) with
  // RoPE, out (T, H, D). Tokens before first_sparse are not touched.
  void attend(const KvCache& cache, int64_t layer, const SequenceChunk& chunk, int64_t first_sparse, const float* q,
              int64_t num_heads, float scale, float* out);
  size_t sequences() const { return sequences_.size(); }
  // Tensor parallel: this cache's KV heads are the model's [first, first + G) of `total`, and each
  // head's hyperplanes are seeded by its model-wide index, so a rank samples as one rank does.
  void place_heads(int64_t first, int64_t total) { head_offset_ = first, model_kv_heads_ = total; }
  // Over the backend's life, per (query, head, layer): keys attended exactly, sampled, and between
  // the sink and window (what top-k would choose from).
  struct Stats {
    int64_t queries = 0, exact = 0, sampled = 0, middle = 0;
  };
  Stats stats() const { return stats_; }

 private:
  struct Head {
    std::vector<float> mean;      // (D) μ
    std::vector<uint16_t> codes;  // (hashed, L)
    std::vector<float> norms;     // (hashed) |k − μ|
    std::vector<int32_t> offsets; // (L, 2^K + 1) CSR over positions < indexed
    std::vector<int32_t> ids;     // (L, indexed)
    int64_t indexed = 0;
  };
  struct Sequence {
    LshParams params;
    int64_t mean_to = -1;         // μ is over positions < mean_to
    int64_t valid = 0;            // positions whose keys are unchanged since they were hashed
    std::vector<Head> heads;      // (layers · G); a head's mean is empty until first use
  };
  const LshPlanes& planes(const LshParams& params, int64_t layer, int64_t g);
  Head& ready_head(const KvCache& cache, const SequenceChunk& chunk, Sequence& s, int64_t layer, int64_t g, int64_t length);

  KvCacheShape shape_;
  int64_t num_layers_;
  int64_t head_offset_ = 0, model_kv_heads_ = 0;  // place_heads (0: the cache's own G)
  Stats stats_;
  std::unordered_map<int32_t, Sequence> sequences_;  // by first page
  std::map<std::tuple<int32_t, int32_t, uint64_t>, std::vector<std::unique_ptr<LshPlanes>>> planes_;  // (K, L, seed) → (layers · G)
};

}  // namespace vortex::cpu

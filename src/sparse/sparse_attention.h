// An attention spec resolved for running: the flow that scores pages, the budget policy, the
// always-kept sink and window, and the layers that stay dense. Built once per distinct spec string
// (the engine caches them) and shared read-only by every sequence that uses it.
//
// Budget semantics (tokens per (sequence, kv head), beyond the sink and window): a constant
// (`budget=2048`), a fraction of the sequence length (`budget=25%`), or a table indexed by
// position bins (`schedule:table=F.json`, for sparse rollouts whose budget grows with length):
//   {"attention": "quest:page=16,sink=16,window=64", "bin_tokens": 2048, "budgets": [512, 1024, 2048]}
// gives a sequence of length L the budget budgets[min(L / bin_tokens, n - 1)].
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sparse/attention_spec.h"
#include "vortex/flow.h"

namespace vortex {

struct BudgetPolicy {
  int64_t tokens = 0;            // constant budget, when `fraction` and `table` are unset
  double fraction = 0.0;         // > 0: budget = ceil(fraction · length)
  int64_t bin_tokens = 0;        // > 0: budget = table[min(length / bin_tokens, n - 1)]
  std::vector<int64_t> table;    // (bins) budgets in tokens
  int64_t budget_tokens(int64_t length) const;
};

struct SparseAttention {
  std::string text;                  // the spec as given
  std::shared_ptr<const Flow> flow;  // scores and selects candidate pages
  // The flow's scoring passes (flow_stage): one per stage, then the selection; just the flow when it
  // has no stages. Every pass keeps the flow's fields at their indices.
  std::vector<std::shared_ptr<const Flow>> passes;
  BudgetPolicy budget;
  int64_t page_size = 16;            // selection granularity = the KV page size
  int64_t sink = 0;                  // tokens always kept at the start
  int64_t window = 0;                // most recent tokens always kept
  int64_t skip_layers_first = -1, skip_layers_last = -1;  // layers that stay dense
  // lsh: keys outside the sink and window are sampled by LSH collisions, not selected by the flow
  // (sparse/lsh.h; the CPU backend runs it, the CUDA backend refuses it).
  LshParams lsh;
  RestEstimate rest = RestEstimate::kDrop;  // what unattended pages contribute (attention_spec.h)
  double dense_below = 0.0;                 // attend densely below this estimated coverage (attention_spec.h)
  double cover = 0.0;                       // add pages up to this estimated coverage (attention_spec.h)
  // The estimate of the unattended pages' mass that rest=, dense_below= or cover= reads (kDrop: none).
  RestEstimate rest_estimate() const {
    return rest != RestEstimate::kDrop || (dense_below <= 0.0 && cover <= 0.0) ? rest : RestEstimate::kProxy;
  }

  bool dense_layer(int64_t layer) const { return layer >= skip_layers_first && layer <= skip_layers_last; }
  int64_t pages_to_select(int64_t length) const { return budget.budget_tokens(length) / page_size; }
  // Candidates stage `stage` keeps when the selection keeps k: ceil(factor · k).
  int64_t stage_keep(size_t stage, int64_t k) const;
  // Bytes of fields one (query, kv head) reads in a sparse layer that chooses k of `candidates`
  // pages: each pass reads the fields it uses for the candidates it scores (every candidate, then
  // each stage's survivors). `stored`: the device's records in each field's storage type; else the
  // CPU store's f32 values.
  double field_bytes_read(int64_t candidates, int64_t k, int64_t head_dim, bool stored) const;
};

// Null for `dense`. Loads flow files and budget tables; checks that `page` (when given) equals the
// KV page size and that a selecting flow has a budget. Throws vortex::Error naming what is wrong.
std::shared_ptr<const SparseAttention> resolve_attention(const AttentionSpec& spec, int64_t kv_page_size);
std::shared_ptr<const SparseAttention> resolve_attention(std::string_view spec_text, int64_t kv_page_size);

// Throws when the spec cannot apply to a model of `num_layers` layers (skip_layers entirely past them).
void check_attention_fits(const SparseAttention& attention, int64_t num_layers);

}  // namespace vortex

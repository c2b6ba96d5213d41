// A piece of one sequence's work in a forward pass: T consecutive tokens starting at position
// `start` (a prefill chunk, or one decode token). Every backend's forward() takes a list of them.
#pragma once

#include <cstdint>
#include <vector>

namespace vortex {

struct SparseAttention;
class SelectionRecorder;

struct SequenceChunk {
  const int32_t* tokens = nullptr;            // (T) token ids
  int64_t count = 0;                          // T
  int64_t start = 0;                          // position of tokens[0]; positions < start are cached
  std::vector<int32_t>* page_table = nullptr; // must already hold pages for start + T tokens
  bool all_logits = false;                    // logits for every token, else only for the last
  // Sparse attention (null: dense). Tokens at positions >= sparse_from attend only to the pages
  // the spec's flow selects; earlier ones (the prompt, when generating) attend densely.
  const SparseAttention* attention = nullptr;
  int64_t sparse_from = 0;
  // Evaluation: every sparse selection is measured against the oracle's (sparse/selection_recall.h).
  // Only backends whose supports_selection_recall() is true take it.
  SelectionRecorder* recorder = nullptr;
};

// One logits row's token choice, made by a backend that samples on its device
// (ModelBackend::forward_sample): the request's sampling parameters and the uniform the host's
// seeded stream drew for this token. Greedy when temperature is 0 or top_k is 1.
struct TokenDraw {
  float temperature = 0.0f;
  int32_t top_k = 0;      // 0 = off
  float top_p = 1.0f;     // 1 = off
  float min_p = 0.0f;     // 0 = off
  double uniform = 0.0;   // in [0, 1)

  bool greedy() const { return temperature == 0.0f || top_k == 1; }  // (device code mirrors this in sample.cu)
};

// Rollouts (runtime/rollout.h) on a backend that samples on its device: what forward_sample also
// reduces from each logits row's distribution softmax(z / T), so that the host never receives a
// row. runtime/rollout.h's reduce_rows is the host's twin (and the GPU tests' oracle).
struct RowReduction {
  float temperature = 0.0f;  // T (> 0); 0: nothing for this row
  int32_t token = -1;        // the token whose log-prob to take; -1: the one the row drew
  int32_t top = 0;           // also export the `top` most likely tokens' ids and probabilities (0: none)
  int32_t policy = -1;       // compare with kept policy distribution `policy` (RowReductions::policy_*); -1: none
  double lambda = 0.0;       // with `policy`: OBRS's λ (0: off)
};
// One row's results. The sums run over the compared policy distribution's kept tokens v, with
// q(v) their policy probabilities and p the row's distribution.
struct RowStats {
  double logprob = 0.0;  // log p(token)
  double overlap = 0.0;  // Σ min(q(v), p(v))
  double covered = 0.0;  // Σ p(v)
  double obrs = 0.0;     // Σ min(q(v), p(v) / λ)
};
struct RowReductions {
  std::vector<RowReduction> rows;       // in: one per logits row
  std::vector<int64_t> policy_offsets;  // in: P + 1 offsets into policy_ids / policy_probs
  std::vector<int32_t> policy_ids;
  std::vector<double> policy_probs;
  std::vector<RowStats> stats;          // out: one per row
  std::vector<int64_t> top_offsets;     // out: R + 1 offsets into top_ids / top_probs (row r's at r's range)
  std::vector<int32_t> top_ids;         // best first
  std::vector<double> top_probs;

  void clear() { rows.clear(), policy_offsets.assign(1, 0), policy_ids.clear(), policy_probs.clear(); }
  // Appends a policy distribution to compare with; returns its index for RowReduction::policy.
  int32_t add_policy(const std::vector<int32_t>& ids, const std::vector<double>& probs) {
    policy_ids.insert(policy_ids.end(), ids.begin(), ids.end());
    policy_probs.insert(policy_probs.end(), probs.begin(), probs.end());
    policy_offsets.push_back(static_cast<int64_t>(policy_ids.size()));
    return static_cast<int32_t>(policy_offsets.size()) - 2;
  }
};

}  // namespace vortex

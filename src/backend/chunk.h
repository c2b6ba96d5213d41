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

}  // namespace vortex

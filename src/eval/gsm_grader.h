// Grading GSM-Infinite symbolic answers: reply text → set of variable names → exact-set match
// against the example's answer_list → accuracy per op → area under the accuracy-vs-op curve.
//
// Upstream (gsm-infinite/pred/eval_symbolic.py) keeps only the text after the last "</think>",
// has an LLM (Qwen2.5-7B-Instruct) copy out the variable names the reply gives as its answer, then
// takes re.findall(r'\bV\d+\b', extraction) and counts the reply correct when
// set(answer_list) == set(found). The extraction LLM is replaced here by fixed rules:
//   1. After the last "</think>" only, as upstream.
//   2. Marker: after the last "answer" followed by ':' (any case, '*'/'_'/spaces allowed between:
//      "ANSWER:", "Final answer:", "**Answer:**"), the answer is the first non-empty line after the
//      colon, plus the lines right below it that are nothing but a list of variables (bullets,
//      commas, "and"). "ANSWER: None" is an empty answer.
//   3. Otherwise the concluding sentence: of the last three non-empty sentences (split at line
//      breaks and at . ! ? before a space), the last that names a variable, or that says there is
//      none ("none", "no variable", "no such"), which is an empty answer.
//   4. Variable names are \bV\d+\b as upstream, with a lowercase "v" also taken (and written "V");
//      bytes outside ASCII count as word boundaries. Duplicates collapse: the answer is a set.
// A reply with no marker and no concluding sentence is "not found" and graded wrong.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vortex {

enum class AnswerSource { kMarker, kConcludingSentence, kNotFound };

struct ParsedAnswer {
  AnswerSource source = AnswerSource::kNotFound;
  std::vector<std::string> variables;  // distinct names ("V" + digits) in order of first mention
};

ParsedAnswer parse_symbolic_answer(std::string_view reply);
// Exact-set match: every name of answer_list given, and nothing else (order and repeats ignored).
bool symbolic_answer_correct(const ParsedAnswer& answer, std::span<const std::string> answer_list);

struct OpAccuracy {
  int64_t op = 0;
  int64_t examples = 0;
  int64_t correct = 0;
  double accuracy = 0.0;  // correct / examples
};

// Accumulates graded examples; table() is in ascending op order.
class AccuracyByOp {
 public:
  void add(int64_t op, bool correct);
  std::vector<OpAccuracy> table() const;

 private:
  std::map<int64_t, std::pair<int64_t, int64_t>> counts_;  // op → (examples, correct)
};

// The score GSM-Infinite's leaderboard reports (gsm-infinite/app.py calculate_auc): points sorted
// by op, 100 × np.trapz(accuracy, op), i.e. 100 × Σ (op[i+1] − op[i]) · (acc[i+1] + acc[i]) / 2,
// summed in numpy's pairwise order so the value is numpy's to the last bit; 0 with fewer than two
// ops. Upstream reads accuracies back from a results file written with 4 decimals; these are not
// rounded (identical whenever examples per op divides 10,000).
double accuracy_auc(std::span<const OpAccuracy> table);

}  // namespace vortex

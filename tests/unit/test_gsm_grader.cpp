// GSM-Infinite symbolic grading: answer parsing on varied reply texts, exact-set matching, accuracy
// per op, and the AUC against hand-computed and numpy-computed values.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "eval/gsm_grader.h"
#include "eval/gsm_infinite.h"

namespace vortex {
namespace {

using Names = std::vector<std::string>;

Names parsed(std::string_view reply) { return parse_symbolic_answer(reply).variables; }
AnswerSource source_of(std::string_view reply) { return parse_symbolic_answer(reply).source; }
bool correct(std::string_view reply, const Names& answer_list) {
  return symbolic_answer_correct(parse_symbolic_answer(reply), answer_list);
}

TEST(GsmGrader, ReadsTheReferenceSolutionFormat) {
  std::string reply =
      "First, there are such direct assignment(s):\nV101414 = 6;\n\nFrom these direct assignment(s), we have: \n"
      "V888662 = V101414 + 1 = 6 + 1 =7;\nV376417 = V888662 - 1 = 7 - 1 =6;\n\nNow we have finished this problem. "
      "ANSWER:\nV101414, V376417\n";
  EXPECT_EQ(source_of(reply), AnswerSource::kMarker);
  EXPECT_EQ(parsed(reply), (Names{"V101414", "V376417"}));
  EXPECT_TRUE(correct(reply, {"V376417", "V101414"}));  // order does not matter
}

TEST(GsmGrader, EveryGeneratedSolutionGradesCorrect) {
  SymbolicOptions options;
  options.length = 500;
  options.op_max = 25;
  options.examples_per_op = 3;
  int64_t graded = 0;
  generate_symbolic(options, [&](const SymbolicExample& e) {
    ++graded;
    EXPECT_TRUE(correct(e.solution, e.answer_list)) << e.op << "/" << e.id;
  });
  EXPECT_EQ(graded, 24 * 3);
}

TEST(GsmGrader, ToleratesSpacingPunctuationAndMarkdown) {
  EXPECT_EQ(parsed("ANSWER:   V000001 ,V000002  ,   V000003   "), (Names{"V000001", "V000002", "V000003"}));
  EXPECT_EQ(parsed("ANSWER: V000001, V000002."), (Names{"V000001", "V000002"}));
  EXPECT_EQ(parsed("**Final Answer:** V12 and V13."), (Names{"V12", "V13"}));
  EXPECT_EQ(parsed("Answer :\n\n  V7;V8  \n"), (Names{"V7", "V8"}));
  EXPECT_EQ(parsed("ANSWER:\n- V1\n- V2\n* V3\n\nV4 is not equal to 5."), (Names{"V1", "V2", "V3"}));
  // The line after the answer that is not a list ends it.
  EXPECT_EQ(parsed("ANSWER: V1, V2\nNote that V3 equals 6 instead."), (Names{"V1", "V2"}));
}

TEST(GsmGrader, LowercaseMarkerAndNamesAreAccepted) {
  EXPECT_EQ(source_of("answer: v000010, V000011"), AnswerSource::kMarker);
  EXPECT_EQ(parsed("answer: v000010, V000011"), (Names{"V000010", "V000011"}));
  EXPECT_TRUE(correct("the variables equal to 3 are v5 and v6.", {"V5", "V6"}));
}

TEST(GsmGrader, DuplicatesCollapseAndTheSetMustBeExact) {
  EXPECT_EQ(parsed("ANSWER: V1, V1, V2, V1"), (Names{"V1", "V2"}));
  EXPECT_TRUE(correct("ANSWER: V1, V1, V2", {"V2", "V1"}));
  EXPECT_FALSE(correct("ANSWER: V1", {"V1", "V2"}));            // one missing
  EXPECT_FALSE(correct("ANSWER: V1, V2, V3", {"V1", "V2"}));    // one extra
  EXPECT_FALSE(correct("ANSWER: V000001", {"V1"}));             // names compare as written
}

TEST(GsmGrader, NamesNeedWordBoundaries) {
  EXPECT_EQ(parsed("ANSWER: V12a, XV13, V14_, V, V15."), (Names{"V15"}));
  EXPECT_EQ(parsed("ANSWER: (V16)，V17。"), (Names{"V16", "V17"}));  // non-ASCII punctuation is a boundary
}

TEST(GsmGrader, ConcludingSentenceWithoutMarker) {
  std::string reply = "V1 = 5, so V2 = V1 + 1 = 6 and V3 = V1 = 5.\n\nTherefore, the variables equal to 5 are V1 and V3.";
  EXPECT_EQ(source_of(reply), AnswerSource::kConcludingSentence);
  EXPECT_EQ(parsed(reply), (Names{"V1", "V3"}));
  // Closing pleasantries after the conclusion are skipped.
  EXPECT_EQ(parsed(reply + " I hope this helps! Let me know if you need more."), (Names{"V1", "V3"}));
  // A trailing period on the last name, and a conclusion with no final punctuation.
  EXPECT_EQ(parsed("So the answer is V9, V10"), (Names{"V9", "V10"}));
}

TEST(GsmGrader, ExplicitNoneIsAnEmptyAnswer) {
  ParsedAnswer none = parse_symbolic_answer("V1 = 4 and V2 = 3.\nThere are no variables equal to 5.");
  EXPECT_EQ(none.source, AnswerSource::kConcludingSentence);
  EXPECT_TRUE(none.variables.empty());
  ParsedAnswer marker_none = parse_symbolic_answer("ANSWER: None");
  EXPECT_EQ(marker_none.source, AnswerSource::kMarker);
  EXPECT_TRUE(marker_none.variables.empty());
  EXPECT_FALSE(symbolic_answer_correct(marker_none, Names{"V1"}));
}

TEST(GsmGrader, NoAnswerIsNotFoundAndWrong) {
  for (std::string_view reply : {"", "   \n ", "I am not sure how to solve this.",
                                 "Let me think step by step. First, look at the context. Then look again. Hmm."}) {
    ParsedAnswer answer = parse_symbolic_answer(reply);
    EXPECT_EQ(answer.source, AnswerSource::kNotFound) << reply;
    EXPECT_TRUE(answer.variables.empty()) << reply;
    EXPECT_FALSE(symbolic_answer_correct(answer, Names{"V1"})) << reply;
  }
  // A variable mentioned long before the end is not taken as the conclusion.
  EXPECT_EQ(source_of("V1 = 3. Next step. Another step. Still thinking. Out of time"), AnswerSource::kNotFound);
}

TEST(GsmGrader, OnlyTheTextAfterThinkingCounts) {
  std::string reply = "<think>ANSWER: V9\nmaybe V8</think>\n\nThe variables equal to 2 are V1 and V2.";
  EXPECT_EQ(parsed(reply), (Names{"V1", "V2"}));
  EXPECT_EQ(source_of("<think>ANSWER: V9, a long trace cut off"), AnswerSource::kMarker);  // no </think>: all text
  EXPECT_EQ(source_of("<think>ANSWER: V9</think>"), AnswerSource::kNotFound);
}

TEST(GsmGrader, LastMarkerWins) {
  EXPECT_EQ(parsed("Answer: V1 (draft)\n...\nANSWER: V2, V3"), (Names{"V2", "V3"}));
}

TEST(GsmGrader, AccuracyPerOp) {
  AccuracyByOp acc;
  acc.add(3, true);
  acc.add(1, true);
  acc.add(3, false);
  acc.add(1, true);
  acc.add(3, false);
  acc.add(2, false);
  std::vector<OpAccuracy> table = acc.table();
  ASSERT_EQ(table.size(), 3u);
  EXPECT_EQ(table[0].op, 1);
  EXPECT_EQ(table[0].examples, 2);
  EXPECT_EQ(table[0].accuracy, 1.0);
  EXPECT_EQ(table[1].op, 2);
  EXPECT_EQ(table[1].accuracy, 0.0);
  EXPECT_EQ(table[2].op, 3);
  EXPECT_EQ(table[2].correct, 1);
  EXPECT_DOUBLE_EQ(table[2].accuracy, 1.0 / 3.0);
}

std::vector<OpAccuracy> points(const std::vector<int64_t>& ops, const std::vector<double>& accuracies) {
  std::vector<OpAccuracy> table;
  for (size_t i = 0; i < ops.size(); ++i) table.push_back({.op = ops[i], .examples = 1, .correct = 0, .accuracy = accuracies[i]});
  return table;
}

TEST(GsmGrader, AucIsTheTrapezoidTimesHundred) {
  // By hand: (2−1)·(1 + .5)/2 + (3−2)·(.5 + .5)/2 + (5−3)·(.5 + 0)/2 = .75 + .5 + .5 = 1.75 → 175.
  EXPECT_EQ(accuracy_auc(points({1, 2, 3, 5}, {1.0, 0.5, 0.5, 0.0})), 175.0);
  // Points are sorted by op first.
  EXPECT_EQ(accuracy_auc(points({5, 1, 3, 2}, {0.0, 1.0, 0.5, 0.5})), 175.0);
  // Fewer than two ops: no area (upstream returns 0).
  EXPECT_EQ(accuracy_auc(points({7}, {1.0})), 0.0);
  EXPECT_EQ(accuracy_auc({}), 0.0);
  // Perfect accuracy over ops 1..30: 29 op-units → 2900.
  std::vector<int64_t> ops;
  for (int64_t op = 1; op <= 30; ++op) ops.push_back(op);
  EXPECT_EQ(accuracy_auc(points(ops, std::vector<double>(30, 1.0))), 2900.0);
}

TEST(GsmGrader, AucMatchesNumpyTrapzToTheBit) {
  // numpy 1.24: np.trapz(acc, ops) * 100 with acc[o] = (o * 37 % 101) / 101. 41 ops is the first
  // count where numpy's pairwise sum differs from a left-to-right sum (…7718); 199 ops take its
  // recursive halving.
  for (auto [count, want] : {std::pair<int64_t, double>{41, 2022.2772277227723}, {199, 9846.534653465347}}) {
    std::vector<int64_t> ops;
    std::vector<double> acc;
    for (int64_t op = 1; op <= count; ++op) {
      ops.push_back(op);
      acc.push_back(static_cast<double>(op * 37 % 101) / 101);
    }
    EXPECT_EQ(accuracy_auc(points(ops, acc)), want) << count;
  }
}

}  // namespace
}  // namespace vortex

// GSM-Infinite symbolic generator: the CPython random emulation against values CPython 3.11
// printed, and whole datasets against golden files written by the upstream Python generator
// (tests/data/gsm_infinite/README.md has the commands).
#include <gtest/gtest.h>

#include <cctype>
#include <sstream>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "core/error.h"
#include "eval/gsm_infinite.h"
#include "eval/python_random.h"

namespace vortex {
namespace {

template <typename T>
std::vector<int64_t> as_int64(const std::vector<T>& values) {
  return std::vector<int64_t>(values.begin(), values.end());
}

// Values below: python3.11 -c "import random; r = random.Random(42); print(...)"
TEST(PyRandom, RandomMatchesCPython) {
  PyRandom rng(42);
  EXPECT_EQ(rng.random(), 0.6394267984578837);
  EXPECT_EQ(rng.random(), 0.025010755222666936);
  EXPECT_EQ(rng.random(), 0.27502931836911926);
}

TEST(PyRandom, GetrandbitsMatchesCPython) {
  PyRandom rng(42);
  EXPECT_EQ(rng.getrandbits(32), 2746317213u);
  EXPECT_EQ(rng.getrandbits(32), 478163327u);
  EXPECT_EQ(rng.getrandbits(32), 107420369u);
  // getrandbits(0) draws nothing; 1 bit is the top bit of a word; wider values take words low first.
  PyRandom wide(42);
  EXPECT_EQ(wide.getrandbits(0), 0u);
  EXPECT_EQ(wide.getrandbits(1), 1u);
  EXPECT_EQ(wide.getrandbits(33), 478163327u);
  EXPECT_EQ(wide.getrandbits(64), 5073395517033431291u);
}

TEST(PyRandom, RandintAndRandrangeMatchCPython) {
  PyRandom rng(42);
  std::vector<int64_t> got;
  for (int i = 0; i < 8; ++i) got.push_back(rng.randint(1, 100));
  EXPECT_EQ(got, (std::vector<int64_t>{82, 15, 4, 95, 36, 32, 29, 18}));
  PyRandom ranges(42);
  got.clear();
  for (int i = 0; i < 6; ++i) got.push_back(ranges.randrange(-5, 5));
  EXPECT_EQ(got, (std::vector<int64_t>{-4, -5, -1, -2, -2, -3}));
  EXPECT_EQ(ranges.randint(0, 0), 0);  // randbelow(1) still draws a word
  EXPECT_EQ(ranges.randint(-3, 1000000000000), 814655221098);
}

TEST(PyRandom, SampleMatchesCPythonOnBothPaths) {
  PyRandom set_path(42);  // sample(range(1000000), 5): the set path
  EXPECT_EQ(as_int64(set_path.sample_indices(1000000, 5)), (std::vector<int64_t>{670487, 116739, 26225, 777572, 288389}));
  PyRandom pool_path(42);  // sample(range(20), 10): the pool path
  EXPECT_EQ(as_int64(pool_path.sample_indices(20, 10)), (std::vector<int64_t>{3, 0, 8, 7, 16, 2, 11, 1, 10, 17}));
  // The last k on the set path for a population of 10^6 and the first on the pool path.
  EXPECT_FALSE(PyRandom::sample_uses_pool(1000000, 87381));
  EXPECT_TRUE(PyRandom::sample_uses_pool(1000000, 87382));
  EXPECT_TRUE(PyRandom::sample_uses_pool(20, 10));
  EXPECT_FALSE(PyRandom::sample_uses_pool(1000000, 5));
  PyRandom large_set(42);
  std::vector<uint64_t> s = large_set.sample_indices(1000000, 87381);
  EXPECT_EQ(s[0], 670487u);
  EXPECT_EQ(s.back(), 301853u);
  PyRandom large_pool(42);
  std::vector<uint64_t> p = large_pool.sample_indices(1000000, 100000);
  EXPECT_EQ(p[2], 26225u);
  EXPECT_EQ(p.back(), 605984u);
}

TEST(PyRandom, ShuffleChoiceAndChoicesMatchCPython) {
  PyRandom rng(42);
  std::vector<int> list = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  rng.shuffle(list);
  EXPECT_EQ(list, (std::vector<int>{7, 3, 2, 8, 5, 6, 9, 4, 0, 1}));

  PyRandom weighted(42);  // choices(range(3), weights=[10, 1, 5], k=10)
  std::vector<double> weights = {10, 1, 5};
  EXPECT_EQ(as_int64(weighted.choices_indices(weights, 10)), (std::vector<int64_t>{1, 0, 0, 0, 2, 1, 2, 0, 0, 0}));
  PyRandom fractional(42);  // choices(range(4), weights=[0.1, 0.25, 0.0, 0.65], k=10)
  std::vector<double> fractions = {0.1, 0.25, 0.0, 0.65};
  EXPECT_EQ(as_int64(fractional.choices_indices(fractions, 10)), (std::vector<int64_t>{3, 0, 1, 1, 3, 3, 3, 0, 3, 0}));
  PyRandom unweighted(42);  // choices(range(3), k=10)
  EXPECT_EQ(as_int64(unweighted.choices_indices(3, 10)), (std::vector<int64_t>{1, 0, 0, 0, 2, 2, 2, 0, 1, 0}));

  PyRandom choice(42);  // [choice(range(7)) for _ in range(6)]
  std::vector<int64_t> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(static_cast<int64_t>(choice.choice_index(7)));
  EXPECT_EQ(picks, (std::vector<int64_t>{5, 0, 0, 5, 2, 1}));
}

TEST(PyRandom, SeedsAreTheIntegersWordsLikeCPython) {
  PyRandom zero(0);
  EXPECT_EQ(zero.getrandbits(32), 3626764237u);
  EXPECT_EQ(zero.random(), 0.3852453064766108);
  PyRandom negative(-42);  // |seed| is used
  EXPECT_EQ(negative.getrandbits(32), 2746317213u);
  EXPECT_EQ(negative.random(), 0.11133106816568039);
  PyRandom two_words((int64_t{1} << 40) + 5);
  EXPECT_EQ(two_words.getrandbits(32), 2166296868u);
  EXPECT_EQ(two_words.random(), 0.516921470080349);
  const uint32_t max_words[] = {0xffffffffu, 0xffffffffu};  // 2**64 - 1
  PyRandom big(max_words);
  EXPECT_EQ(big.getrandbits(32), 93740670u);
  EXPECT_EQ(big.random(), 0.24877853198420496);
}

TEST(GsmInfinite, ParsesLengthsAsUpstream) {
  EXPECT_EQ(parse_gsm_length("0"), 0);
  EXPECT_EQ(parse_gsm_length("8k"), 8000);
  EXPECT_EQ(parse_gsm_length("16K"), 16000);
  EXPECT_EQ(parse_gsm_length("32k"), 32000);
  EXPECT_EQ(parse_gsm_length("1234"), 1234);
  for (const char* bad : {"", "k", "8m", "-8k", "8.5k", " 8k", "8kk", "1e3", "9999999999999"}) {
    EXPECT_THROW(parse_gsm_length(bad), Error) << bad;
  }
  EXPECT_EQ(gsm_noise_variables(0), 0);
  EXPECT_EQ(gsm_noise_variables(1000), 85);
  EXPECT_EQ(gsm_noise_variables(8000), 685);
  EXPECT_EQ(gsm_noise_variables(16000), 1370);
  EXPECT_EQ(gsm_noise_variables(32000), 2740);
}

std::string error_of(const SymbolicOptions& options) {
  try {
    validate_symbolic_options(options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GsmInfinite, RejectsBadOptionsWithClearErrors) {
  SymbolicOptions ok;
  EXPECT_EQ(error_of(ok), "");
  SymbolicOptions o = ok;
  o.op_min = 0;
  EXPECT_NE(error_of(o).find("--min-op must be at least 1"), std::string::npos);
  o = ok;
  o.op_min = 10;
  o.op_max = 10;
  EXPECT_NE(error_of(o).find("exclusive"), std::string::npos);
  o = ok;
  o.examples_per_op = -1;
  EXPECT_NE(error_of(o).find("--examples-per-op must be non-negative"), std::string::npos);
  o = ok;
  o.stride = 0;
  EXPECT_NE(error_of(o).find("--stride"), std::string::npos);
  o = ok;
  o.length = 12000000;  // 1,027,7xx variables for op 39: more names than exist
  EXPECT_NE(error_of(o).find("variables"), std::string::npos);
  o = ok;
  o.op_min = 29;  // ops 1, 6, …, 26: none written
  o.op_max = 31;
  o.stride = 5;
  EXPECT_NE(error_of(o).find("no op is written"), std::string::npos);
}

TEST(GsmInfinite, JsonIsPythonJsonDumps) {
  SymbolicExample e;
  e.op = 2;
  e.n = 2;
  e.answer_q = -1;
  e.prompt = "a\"b\\c\n\t\x01\x7f\xc3\xa9\xf0\x9f\x98\x80";
  e.answer_list = {"V000001", "V000002"};
  EXPECT_EQ(symbolic_example_json(e),
            "{\"op\": 2, \"id\": 0, \"length\": 0, \"n\": 2, \"prompt\": \"a\\\"b\\\\c\\n\\t\\u0001\\u007f\\u00e9\\ud83d\\ude00\", "
            "\"problem\": \"\", \"question\": \"\", \"solution\": \"\", \"answer_q\": -1, \"answer_list\": [\"V000001\", "
            "\"V000002\"]}");
}

// One golden file per setting, made by the upstream Python (see the README beside the files).
struct GoldenSetting {
  const char* file;
  SymbolicOptions options;
};

void PrintTo(const GoldenSetting& setting, std::ostream* os) { *os << setting.file; }

SymbolicOptions make_options(int64_t seed, const char* length, int64_t op_min, int64_t op_max, int64_t examples,
                             int64_t stride = 1) {
  SymbolicOptions o;
  o.seed = seed;
  o.length = parse_gsm_length(length);
  o.op_min = op_min;
  o.op_max = op_max;
  o.examples_per_op = examples;
  o.stride = stride;
  return o;
}

const GoldenSetting kGoldens[] = {
    {"seed42_len0_op1-30.jsonl", make_options(42, "0", 1, 31, 3)},
    {"seed7_len0_op1-30.jsonl", make_options(7, "0", 1, 31, 2)},
    {"seed42_len8k_op28-30.jsonl", make_options(42, "8k", 28, 31, 1)},
    {"seed7_len8k_op1-3.jsonl", make_options(7, "8k", 1, 4, 2)},
    {"seed42_len16k_op20.jsonl", make_options(42, "16k", 20, 21, 1)},
    {"seed42_len32k_op2.jsonl", make_options(42, "32k", 2, 3, 1)},
    {"seed7_len32k_op30.jsonl", make_options(7, "32k", 30, 31, 2)},
    {"seed123_len1000_op3-39_stride4.jsonl", make_options(123, "1000", 3, 40, 2, 4)},
};

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Where two lines first differ, with a little context (the lines themselves can be 160 KB).
std::string first_difference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  size_t from = i < 40 ? 0 : i - 40;
  return "byte " + std::to_string(i) + ": want …" + want.substr(from, 80) + "… got …" + got.substr(from, 80) + "…";
}

class GsmGolden : public ::testing::TestWithParam<GoldenSetting> {};

TEST_P(GsmGolden, MatchesUpstreamPythonByteForByte) {
  const GoldenSetting& setting = GetParam();
  std::string golden = test::read_file(test::data_dir() / "gsm_infinite" / setting.file);
  ASSERT_FALSE(golden.empty());
  ASSERT_EQ(golden.back(), '\n');
  std::vector<std::string> want = split_lines(golden);
  std::vector<std::string> got;
  generate_symbolic(setting.options, [&](const SymbolicExample& e) { got.push_back(symbolic_example_json(e)); });
  ASSERT_EQ(got.size(), want.size()) << setting.file;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size()) << setting.file << " line " << i + 1 << ": " << first_difference(want[i], got[i]);
    ASSERT_TRUE(got[i] == want[i]) << setting.file << " line " << i + 1 << ": " << first_difference(want[i], got[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(Upstream, GsmGolden, ::testing::ValuesIn(kGoldens), [](const auto& info) {
  std::string name = info.param.file;
  name = name.substr(0, name.find('.'));
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
});

TEST(GsmInfinite, ExamplesAreConsistent) {
  // The structure every example must have, on a setting with no golden file.
  SymbolicOptions o = make_options(2024, "2k", 1, 13, 4);
  int64_t count = 0;
  generate_symbolic(o, [&](const SymbolicExample& e) {
    ++count;
    EXPECT_EQ(e.n, e.op + 171);
    EXPECT_EQ(e.prompt, "<context>\n" + e.problem + "\n</context>\n\n" + e.question);
    std::string answer_line;
    for (size_t i = 0; i < e.answer_list.size(); ++i) answer_line += (i ? ", " : "") + e.answer_list[i];
    EXPECT_FALSE(e.answer_list.empty());
    // The solution lists the same variables (in depth-first rather than node order).
    std::string tail = e.solution.substr(e.solution.rfind("ANSWER:\n") + 8);
    EXPECT_EQ(tail.size(), answer_line.size() + 1);
    for (const std::string& name : e.answer_list) EXPECT_NE(tail.find(name), std::string::npos);
    // One statement per variable except the noise tree's root.
    size_t statements = 0;
    for (size_t at = 0; (at = e.problem.find("assign ", at)) != std::string::npos; ++at) ++statements;
    EXPECT_EQ(static_cast<int64_t>(statements), e.n - 1);
  });
  EXPECT_EQ(count, 12 * 4);
}

}  // namespace
}  // namespace vortex

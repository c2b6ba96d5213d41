// GSM-Infinite symbolic grading: answer parsing, exact-set match, accuracy per op and its AUC.
#include "eval/gsm_grader.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace vortex {
namespace {

constexpr size_t kConcludingSentencesSearched = 3;

bool is_word_byte(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_';
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// Length of a variable token at text[i] (\b[Vv]\d+\b), 0 when there is none.
size_t variable_at(std::string_view text, size_t i) {
  if ((text[i] != 'V' && text[i] != 'v') || (i > 0 && is_word_byte(text[i - 1]))) return 0;
  size_t end = i + 1;
  while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
  if (end == i + 1 || (end < text.size() && is_word_byte(text[end]))) return 0;
  return end - i;
}

// Every variable token of `text`, in order, "v" written "V" (repeats kept).
std::vector<std::string> find_variables(std::string_view text) {
  std::vector<std::string> found;
  for (size_t i = 0; i < text.size(); ++i) {
    size_t length = variable_at(text, i);
    if (length == 0) continue;
    found.emplace_back("V");
    found.back().append(text.substr(i + 1, length - 1));
    i += length - 1;
  }
  return found;
}

std::vector<std::string> distinct(std::vector<std::string> names) {
  std::vector<std::string> out;
  for (std::string& name : names) {
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
  }
  return out;
}

bool contains_word(std::string_view text, std::string_view word) {  // case-insensitive, whole word
  for (size_t i = 0; i + word.size() <= text.size(); ++i) {
    if (i > 0 && is_word_byte(text[i - 1])) continue;
    size_t end = i + word.size();
    if (end < text.size() && is_word_byte(text[end])) continue;
    bool same = true;
    for (size_t k = 0; k < word.size() && same; ++k) same = lower(text[i + k]) == word[k];
    if (same) return true;
  }
  return false;
}

// "no variable(s)", "no such …", "none": the reply says that no variable has the value.
bool says_none(std::string_view sentence) {
  std::string lowered(sentence);
  for (char& c : lowered) c = lower(c);
  return contains_word(lowered, "none") || lowered.find("no variable") != std::string::npos ||
         contains_word(lowered, "no such");
}

// A line that holds nothing but variables, separators, bullets and "and".
bool is_list_line(std::string_view line) {
  bool any_variable = false;
  for (size_t i = 0; i < line.size();) {
    if (size_t length = variable_at(line, i)) {
      any_variable = true;
      i += length;
    } else if (line.compare(i, 3, "and") == 0 && (i == 0 || !is_word_byte(line[i - 1])) &&
               (i + 3 == line.size() || !is_word_byte(line[i + 3]))) {
      i += 3;
    } else if (std::string_view(" \t\r,;.*-+)0123456789").find(line[i]) != std::string_view::npos ||
               static_cast<unsigned char>(line[i]) >= 0x80) {  // ASCII separators; "•" and other symbols
      ++i;
    } else {
      return false;
    }
  }
  return any_variable;
}

// Position right after the colon of the last "answer[ *_]*:" marker, or npos.
size_t last_marker_end(std::string_view text) {
  size_t best = std::string_view::npos;
  for (size_t i = 0; i + 6 < text.size(); ++i) {
    if (i > 0 && is_word_byte(text[i - 1])) continue;
    bool word = true;
    for (size_t k = 0; k < 6 && word; ++k) word = lower(text[i + k]) == "answer"[k];
    if (!word) continue;
    size_t j = i + 6;
    while (j < text.size() && (text[j] == ' ' || text[j] == '*' || text[j] == '_')) ++j;
    if (j < text.size() && text[j] == ':') best = j + 1;
  }
  return best;
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// The answer after a marker: its first non-empty line and the list lines directly below it.
std::vector<std::string> marker_answer(std::string_view after_colon) {
  std::vector<std::string_view> lines = split_lines(after_colon);
  size_t first = 0;
  while (first < lines.size() && trim(lines[first]).find_first_not_of("*_") == std::string_view::npos) ++first;
  if (first == lines.size()) return {};
  std::vector<std::string> names = find_variables(lines[first]);
  for (size_t i = first + 1; i < lines.size() && is_list_line(trim(lines[i])); ++i) {
    std::vector<std::string> more = find_variables(lines[i]);
    names.insert(names.end(), more.begin(), more.end());
  }
  return names;
}

// Sentences of `text`, split at line breaks and at . ! ? followed by white space or the end.
std::vector<std::string_view> split_sentences(std::string_view text) {
  std::vector<std::string_view> sentences;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    bool end_mark = (text[i] == '.' || text[i] == '!' || text[i] == '?') && (i + 1 == text.size() || is_blank(text[i + 1]));
    if (text[i] != '\n' && !end_mark) continue;
    sentences.push_back(text.substr(start, i + 1 - start));
    start = i + 1;
  }
  if (start < text.size()) sentences.push_back(text.substr(start));
  return sentences;
}

bool has_content(std::string_view sentence) {
  return std::any_of(sentence.begin(), sentence.end(), [](char c) { return is_word_byte(c); });
}

}  // namespace

ParsedAnswer parse_symbolic_answer(std::string_view reply) {
  size_t think_end = reply.rfind("</think>");
  std::string_view text = trim(think_end == std::string_view::npos ? reply : reply.substr(think_end + 8));
  ParsedAnswer answer;
  if (size_t marker = last_marker_end(text); marker != std::string_view::npos) {
    answer.source = AnswerSource::kMarker;
    answer.variables = distinct(marker_answer(text.substr(marker)));
    return answer;
  }
  std::vector<std::string_view> sentences = split_sentences(text);
  size_t searched = 0;
  for (size_t i = sentences.size(); i-- > 0 && searched < kConcludingSentencesSearched;) {
    if (!has_content(sentences[i])) continue;
    ++searched;
    std::vector<std::string> names = find_variables(sentences[i]);
    if (names.empty() && !says_none(sentences[i])) continue;
    answer.source = AnswerSource::kConcludingSentence;
    answer.variables = distinct(std::move(names));
    return answer;
  }
  return answer;
}

bool symbolic_answer_correct(const ParsedAnswer& answer, std::span<const std::string> answer_list) {
  std::set<std::string> given(answer.variables.begin(), answer.variables.end());
  std::set<std::string> expected(answer_list.begin(), answer_list.end());
  return answer.source != AnswerSource::kNotFound && given == expected;
}

void AccuracyByOp::add(int64_t op, bool correct) {
  auto& [examples, right] = counts_[op];
  ++examples;
  right += correct ? 1 : 0;
}

std::vector<OpAccuracy> AccuracyByOp::table() const {
  std::vector<OpAccuracy> rows;
  for (const auto& [op, count] : counts_) {
    rows.push_back({.op = op, .examples = count.first, .correct = count.second,
                    .accuracy = static_cast<double>(count.second) / static_cast<double>(count.first)});
  }
  return rows;
}

namespace {

// numpy's pairwise summation (DOUBLE_pairwise_sum: 8 accumulators up to 128 values, halves above).
double pairwise_sum(std::span<const double> a) {
  size_t n = a.size();
  if (n < 8) {
    double sum = 0.0;
    for (double x : a) sum += x;
    return sum;
  }
  if (n <= 128) {
    double r[8];
    std::copy_n(a.begin(), 8, r);
    size_t i = 8;
    for (; i < n - n % 8; i += 8) {
      for (size_t k = 0; k < 8; ++k) r[k] += a[i + k];
    }
    double sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) sum += a[i];
    return sum;
  }
  size_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(a.first(half)) + pairwise_sum(a.subspan(half));
}

}  // namespace

double accuracy_auc(std::span<const OpAccuracy> table) {
  std::vector<OpAccuracy> points(table.begin(), table.end());
  std::stable_sort(points.begin(), points.end(), [](const OpAccuracy& a, const OpAccuracy& b) { return a.op < b.op; });
  if (points.size() < 2) return 0.0;
  std::vector<double> areas(points.size() - 1);  // np.trapz: d * (y[1:] + y[:-1]) / 2.0
  for (size_t i = 0; i + 1 < points.size(); ++i) {
    double width = static_cast<double>(points[i + 1].op - points[i].op);
    areas[i] = width * (points[i + 1].accuracy + points[i].accuracy) / 2.0;
  }
  return (0.0 + pairwise_sum(areas)) * 100;  // add.reduce starts from the identity 0.0
}

}  // namespace vortex

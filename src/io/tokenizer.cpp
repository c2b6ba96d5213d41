// Hugging Face tokenizer.json: byte-level BPE. See tokenizer.h for what is supported.
//
// Encoding follows the `tokenizers` pipeline step by step, because golden files made with
// transformers check it id for id:
//   1. added tokens with normalized=false are cut out of the raw text (leftmost-longest, as
//      AddedVocabulary's Aho-Corasick trie does), then single_word / lstrip / rstrip apply;
//   2. every other segment is normalized (NFC) and added tokens with normalized=true are cut out
//      of the normalized segment the same way;
//   3. what remains goes through the pre-tokenizers (Split regex, ByteLevel) and
//   4. every pre-token through BPE: lowest merge rank first, ties to the leftmost pair.
// The post-processor is ignored: encode never adds BOS/EOS (chat templates write them).
// Input text must be valid UTF-8 (like a Python str); anything else is a vortex::Error.
#include "io/tokenizer.h"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <algorithm>
#include <bitset>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "io/unicode.h"

namespace vortex {

namespace {

using json = nlohmann::json;

// Bounded like tokenizers' BPE cache: once full, new words are simply not cached.
constexpr size_t kBpeCacheCapacity = 10000;

// ByteLevel's own split when use_regex is true (GPT-2's pattern, as in tokenizers' byte_level.rs).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct Span {
  size_t begin, end;  // byte offsets, end exclusive
};

// ---- PCRE2 ----------------------------------------------------------------------------------

// Per-encode PCRE2 state, so the compiled patterns stay immutable and shareable across threads.
class MatchScratch {
 public:
  MatchScratch()
      : data_(pcre2_match_data_create(1, nullptr), &pcre2_match_data_free),
        context_(pcre2_match_context_create(nullptr), &pcre2_match_context_free),
        // JIT code keeps backtracking frames on its own stack; long whitespace runs need more
        // than the 32 KiB default.
        stack_(pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr), &pcre2_jit_stack_free) {
    check(data_ && context_ && stack_, "tokenizer: out of memory creating regex match state");
    pcre2_jit_stack_assign(context_.get(), nullptr, stack_.get());
  }
  pcre2_match_data* data() { return data_.get(); }
  pcre2_match_context* context() { return context_.get(); }

 private:
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data_;
  std::unique_ptr<pcre2_match_context, decltype(&pcre2_match_context_free)> context_;
  std::unique_ptr<pcre2_jit_stack, decltype(&pcre2_jit_stack_free)> stack_;
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

// A compiled pattern in UTF + UCP mode, where \s \p{L} \p{N} and (?i:) follow Unicode like the
// Oniguruma regexes of `tokenizers` do.
class Regex {
 public:
  Regex(std::string_view pattern, bool literal) : code_(nullptr, &pcre2_code_free) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    const uint32_t options =
        PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);  // LITERAL rejects UCP
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                              &error, &offset, nullptr));
    check(code_ != nullptr, "regex '{}' does not compile at offset {}: {}", pattern, offset,
          pcre2_message(error));
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);  // interpreter fallback when no JIT
  }

  // Non-empty matches, left to right; after an empty match the search moves on one character
  // (as Oniguruma's find_iter does). `subject` must be valid UTF-8: it is not checked again.
  std::vector<Span> find_all(std::string_view subject, MatchScratch& scratch) const {
    std::vector<Span> spans;
    size_t offset = 0;
    while (offset < subject.size()) {
      const int rc =
          pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(),
                      offset, PCRE2_NO_UTF_CHECK, scratch.data(), scratch.context());
      if (rc == PCRE2_ERROR_NOMATCH) break;
      check(rc >= 0, "tokenizer: regex match failed: {}", pcre2_message(rc));
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data());
      if (ovector[1] > ovector[0]) {
        spans.push_back({ovector[0], ovector[1]});
        offset = ovector[1];
      } else {
        offset = ovector[0] + unicode::next_utf8_unit(subject, ovector[0]).length;
      }
    }
    return spans;
  }

 private:
  std::unique_ptr<pcre2_code, decltype(&pcre2_code_free)> code_;
};

// ---- added tokens ---------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip, single_word, normalized;
};

// A segment of text: plain text (token == -1) or one added token (index into the added list).
struct Segment {
  Span span;
  int32_t token;
};

// Byte trie over added-token contents with leftmost-longest, non-overlapping matching: the same
// matches as tokenizers' AhoCorasick(MatchKind::LeftmostLongest).
class AddedTokenTrie {
 public:
  void insert(std::string_view pattern, int32_t token) {
    if (pattern.empty()) return;
    first_bytes_.set(static_cast<uint8_t>(pattern[0]));
    int32_t node = 0;
    for (char c : pattern) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
      auto [it, inserted] = edges_.try_emplace(key, static_cast<int32_t>(terminal_.size()));
      if (inserted) terminal_.push_back(-1);
      node = it->second;
    }
    if (terminal_[node] < 0) terminal_[node] = token;  // the first token listed wins a duplicate
  }

  std::vector<Segment> find_all(std::string_view text) const {
    std::vector<Segment> found;
    size_t pos = 0;
    while (pos < text.size()) {
      const Segment match = longest_at(text, pos);
      if (match.token >= 0) {
        found.push_back(match);
        pos = match.span.end;
      } else {
        ++pos;
      }
    }
    return found;
  }

 private:
  Segment longest_at(std::string_view text, size_t pos) const {
    Segment best{{pos, pos}, -1};
    if (!first_bytes_.test(static_cast<uint8_t>(text[pos]))) return best;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[i]);
      const auto it = edges_.find(key);
      if (it == edges_.end()) break;
      node = it->second;
      if (terminal_[node] >= 0) best = {{pos, i + 1}, terminal_[node]};
    }
    return best;
  }

  std::bitset<256> first_bytes_;
  std::unordered_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> child node
  std::vector<int32_t> terminal_{-1};            // node -> added token index, -1 if none
};

char32_t last_code_point(std::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
  return unicode::decode_code_point(s, start);
}

char32_t first_code_point(std::string_view s) {
  size_t pos = 0;
  return unicode::decode_code_point(s, pos);
}

// Start of the whitespace run that ends `s` (tokenizers' space_leftmost_at_end).
size_t whitespace_run_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!unicode::is_whitespace(unicode::decode_code_point(s, pos))) break;
    end = start;
  }
  return end;
}

// Length of the whitespace run that starts `s` (tokenizers' space_rightmost_at_start).
size_t whitespace_run_length(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = pos;
    if (!unicode::is_whitespace(unicode::decode_code_point(s, next))) break;
    pos = next;
  }
  return pos;
}

// tokenizers' AddedVocabulary::find_matches: trie matches, then single_word filtering and the
// lstrip/rstrip widening, with the plain text between matches as segments of their own.
std::vector<Segment> split_added(std::string_view text, const AddedTokenTrie& trie,
                                 const std::vector<AddedToken>& added) {
  std::vector<Segment> segments;
  size_t done = 0;  // end of the last emitted segment
  for (Segment match : trie.find_all(text)) {
    const AddedToken& token = added[static_cast<size_t>(match.token)];
    size_t begin = match.span.begin, end = match.span.end;
    if (token.single_word) {
      const bool word_before =
          begin > 0 && unicode::is_alphanumeric(last_code_point(text.substr(0, begin)));
      const bool word_after =
          end < text.size() && unicode::is_alphanumeric(first_code_point(text.substr(end)));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) begin = std::max(whitespace_run_start(text.substr(0, begin)), done);
    if (token.rstrip) end += whitespace_run_length(text.substr(end));
    if (begin > done) segments.push_back({{done, begin}, -1});
    segments.push_back({{begin, end}, match.token});
    done = end;
  }
  if (done < text.size()) segments.push_back({{done, text.size()}, -1});
  return segments;
}

// ---- pre-tokenizers -------------------------------------------------------------------------

struct PreTokenizer {
  enum class Kind { kSplit, kByteLevel };
  Kind kind;
  std::shared_ptr<const Regex> regex;  // Split's pattern, or ByteLevel's GPT-2 split (may be null)
  bool keep_matches = true;            // Split: Isolated keeps both, Removed only one side
  bool keep_gaps = true;
  bool add_prefix_space = false;  // ByteLevel
};

void split_piece(std::string_view piece, const PreTokenizer& step, MatchScratch& scratch,
                 std::vector<std::string>& out) {
  size_t done = 0;
  for (const Span& span : step.regex->find_all(piece, scratch)) {
    if (span.begin > done && step.keep_gaps) {
      out.emplace_back(piece.substr(done, span.begin - done));
    }
    if (step.keep_matches) out.emplace_back(piece.substr(span.begin, span.end - span.begin));
    done = span.end;
  }
  if (done < piece.size() && step.keep_gaps) out.emplace_back(piece.substr(done));
}

std::string byte_level_map(std::string_view piece) {
  std::string mapped;
  mapped.reserve(piece.size() * 2);
  for (char c : piece) mapped += unicode::byte_to_unicode(static_cast<uint8_t>(c));
  return mapped;
}

std::vector<std::string> apply_pre_tokenizer(const PreTokenizer& step,
                                             const std::vector<std::string>& pieces,
                                             MatchScratch& scratch) {
  std::vector<std::string> out;
  if (step.kind == PreTokenizer::Kind::kSplit) {
    for (const std::string& piece : pieces) split_piece(piece, step, scratch, out);
    return out;
  }
  // ByteLevel: the prefix space goes on every piece, as tokenizers' ByteLevel::pre_tokenize does.
  std::vector<std::string> split;
  for (const std::string& piece : pieces) {
    std::string text = step.add_prefix_space && piece[0] != ' ' ? " " + piece : piece;
    if (step.regex) {
      split_piece(text, step, scratch, split);
    } else {
      split.push_back(std::move(text));
    }
  }
  for (const std::string& piece : split) out.push_back(byte_level_map(piece));
  return out;
}

// ---- JSON helpers ---------------------------------------------------------------------------

// A component's "type" for messages; never the whole object (a model holds megabytes of vocab).
std::string json_type(const json& j) {
  if (j.is_null()) return "null";
  if (!j.is_object()) return j.dump().substr(0, 60);
  const auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "(no type)";
}

bool flag(const json& j, const char* key, bool fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<bool>();
}

json parse_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "tokenizer: cannot open {}", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  try {
    return json::parse(buffer.str());
  } catch (const json::parse_error& e) {
    fail("tokenizer: {} is not valid JSON: {}", path.string(), e.what());
  }
}

}  // namespace

// ---- Impl -----------------------------------------------------------------------------------

struct Tokenizer::Impl {
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  enum class IdKind : uint8_t { kNone, kVocab, kAdded, kSpecial };

  bool nfc = false;
  std::vector<PreTokenizer> pre_tokenizers;
  StringMap<int32_t> vocab;
  std::unordered_map<uint64_t, Merge> merges;  // (left id << 32 | right id) -> rank, result
  bool ignore_merges = false;
  int32_t unk_id = -1;
  std::vector<AddedToken> added;
  AddedTokenTrie raw_trie;         // added tokens with normalized=false
  AddedTokenTrie normalized_trie;  // added tokens with normalized=true, normalized contents
  StringMap<int32_t> added_ids;
  std::vector<std::string> tokens;  // id -> token string ("" for an unused id)
  std::vector<IdKind> kinds;        // id -> what the id is

  mutable std::mutex cache_mutex;
  mutable StringMap<std::vector<int32_t>> cache;  // pre-token -> BPE ids

  void parse(const json& root);
  void parse_normalizer(const json& j);
  void parse_pre_tokenizer(const json& j);
  void parse_model(const json& j);
  void parse_merges(const json& j);
  void parse_added_tokens(const json& j);
  void parse_decoder(const json& j);
  void build_id_table();

  void encode_text(std::string_view text, MatchScratch& scratch, std::vector<int32_t>& out) const;
  void encode_normalized(std::string_view text, MatchScratch& scratch,
                         std::vector<int32_t>& out) const;
  void encode_word(const std::string& word, std::vector<int32_t>& out) const;
  std::vector<int32_t> merge_word(std::string_view word) const;
  const Merge* find_merge(int32_t left, int32_t right) const;
  void check_id(int32_t id) const;
  void append_bytes(int32_t id, bool skip_special, std::string& out) const;
};

void Tokenizer::Impl::parse(const json& root) {
  check(root.is_object(), "the top level is not a JSON object");
  parse_normalizer(root.value("normalizer", json()));
  parse_pre_tokenizer(root.value("pre_tokenizer", json()));
  check(root.contains("model"), "field 'model' is missing");
  parse_model(root["model"]);
  parse_added_tokens(root.value("added_tokens", json::array()));
  parse_decoder(root.value("decoder", json()));
  build_id_table();
}

void Tokenizer::Impl::parse_normalizer(const json& j) {
  if (j.is_null()) return;
  const std::string type = json_type(j);
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence") {
    for (const json& child : j.at("normalizers")) parse_normalizer(child);
  } else {
    fail("normalizer '{}' is not supported (only NFC or a Sequence of NFC)", type);
  }
}

void Tokenizer::Impl::parse_pre_tokenizer(const json& j) {
  if (j.is_null()) return;
  const std::string type = json_type(j);
  if (type == "Sequence") {
    for (const json& child : j.at("pretokenizers")) parse_pre_tokenizer(child);
  } else if (type == "Split") {
    const json& pattern = j.at("pattern");
    const bool literal = pattern.contains("String");
    check(literal || pattern.contains("Regex"),
          "pre_tokenizer Split: pattern {} is neither Regex nor String", pattern.dump());
    const std::string text = pattern.at(literal ? "String" : "Regex").get<std::string>();
    const std::string behavior = j.at("behavior").get<std::string>();
    const bool invert = flag(j, "invert", false);
    check(behavior == "Isolated" || behavior == "Removed",
          "pre_tokenizer Split: behavior '{}' is not supported (only Isolated, Removed)", behavior);
    PreTokenizer step{PreTokenizer::Kind::kSplit, std::make_shared<Regex>(text, literal)};
    step.keep_matches = behavior == "Isolated" || invert;
    step.keep_gaps = behavior == "Isolated" || !invert;
    pre_tokenizers.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    PreTokenizer step{PreTokenizer::Kind::kByteLevel, nullptr};
    step.add_prefix_space = flag(j, "add_prefix_space", true);
    if (flag(j, "use_regex", true)) step.regex = std::make_shared<Regex>(kGpt2Pattern, false);
    pre_tokenizers.push_back(std::move(step));
  } else {
    fail("pre_tokenizer '{}' is not supported (only Split, ByteLevel, Sequence)", type);
  }
}

void Tokenizer::Impl::parse_model(const json& j) {
  const std::string type = json_type(j);
  check(type == "BPE", "model type '{}' is not supported (only BPE)", type);
  const json dropout = j.value("dropout", json());
  check(dropout.is_null() || dropout.get<double>() == 0.0, "model BPE: dropout {} is not supported",
        dropout.dump());
  check(!flag(j, "byte_fallback", false), "model BPE: byte_fallback true is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json affix = j.value(key, json());
    check(affix.is_null() || affix.get<std::string>().empty(), "model BPE: {} {} is not supported",
          key, affix.dump());
  }
  ignore_merges = flag(j, "ignore_merges", false);
  for (const auto& [token, id] : j.at("vocab").items()) {
    const int32_t value = id.get<int32_t>();
    check(value >= 0, "model.vocab: token '{}' has negative id {}", token, value);
    vocab.emplace(token, value);
  }
  const json unk = j.value("unk_token", json());
  if (!unk.is_null()) {
    const auto it = vocab.find(unk.get<std::string>());
    check(it != vocab.end(), "model BPE: unk_token {} is not in the vocab", unk.dump());
    check(!flag(j, "fuse_unk", false), "model BPE: fuse_unk true is not supported");
    unk_id = it->second;
  }
  parse_merges(j.at("merges"));
}

// Merges come as "a b" strings (older files) or ["a", "b"] pairs; the rank is the list index and
// a later duplicate overrides an earlier one, as in tokenizers' HashMap collect.
void Tokenizer::Impl::parse_merges(const json& j) {
  merges.reserve(j.size());
  int32_t rank = 0;
  for (const json& entry : j) {
    std::string left, right;
    if (entry.is_string()) {
      const std::string line = entry.get<std::string>();
      const size_t space = line.find(' ');
      check(space != std::string::npos && line.find(' ', space + 1) == std::string::npos,
            "model.merges[{}]: '{}' is not two tokens separated by one space", rank, line);
      left = line.substr(0, space), right = line.substr(space + 1);
    } else {
      check(entry.is_array() && entry.size() == 2, "model.merges[{}]: {} is not a pair", rank,
            entry.dump());
      left = entry[0].get<std::string>(), right = entry[1].get<std::string>();
    }
    const auto a = vocab.find(left), b = vocab.find(right), merged = vocab.find(left + right);
    check(a != vocab.end() && b != vocab.end() && merged != vocab.end(),
          "model.merges[{}]: '{} {}' uses a token that is not in the vocab", rank, left, right);
    const uint64_t key =
        (static_cast<uint64_t>(a->second) << 32) | static_cast<uint32_t>(b->second);
    merges.insert_or_assign(key, Merge{rank, merged->second});
    ++rank;
  }
}

void Tokenizer::Impl::parse_added_tokens(const json& j) {
  for (const json& entry : j) {
    AddedToken token{entry.at("content").get<std::string>(), entry.at("id").get<int32_t>(),
                     flag(entry, "special", false),          flag(entry, "lstrip", false),
                     flag(entry, "rstrip", false),           flag(entry, "single_word", false),
                     flag(entry, "normalized", true)};
    check(token.id >= 0, "added_tokens: '{}' has negative id {}", token.content, token.id);
    check(!token.content.empty() && unicode::is_valid_utf8(token.content),
          "added_tokens: id {} has empty or invalid content", token.id);
    const auto index = static_cast<int32_t>(added.size());
    if (token.normalized) {
      normalized_trie.insert(nfc ? unicode::nfc(token.content) : token.content, index);
    } else {
      raw_trie.insert(token.content, index);
    }
    added_ids.emplace(token.content, token.id);
    added.push_back(std::move(token));
  }
}

void Tokenizer::Impl::parse_decoder(const json& j) {
  const std::string type = json_type(j);
  if (type == "Sequence") {
    const json& children = j.at("decoders");
    check(!children.empty(), "decoder Sequence is empty");
    for (const json& child : children) parse_decoder(child);
    return;
  }
  check(type == "ByteLevel", "decoder '{}' is not supported (only ByteLevel)", type);
}

void Tokenizer::Impl::build_id_table() {
  int32_t size = 0;
  for (const auto& [token, id] : vocab) size = std::max(size, id + 1);
  for (const AddedToken& token : added) size = std::max(size, token.id + 1);
  tokens.assign(static_cast<size_t>(size), std::string());
  kinds.assign(static_cast<size_t>(size), IdKind::kNone);
  for (const auto& [token, id] : vocab) tokens[id] = token, kinds[id] = IdKind::kVocab;
  for (const AddedToken& token : added) {
    tokens[token.id] = token.content;
    kinds[token.id] = token.special ? IdKind::kSpecial : IdKind::kAdded;
  }
}

// ---- encoding -------------------------------------------------------------------------------

void Tokenizer::Impl::encode_text(std::string_view text, MatchScratch& scratch,
                                  std::vector<int32_t>& out) const {
  for (const Segment& segment : split_added(text, raw_trie, added)) {
    if (segment.token >= 0) {
      out.push_back(added[static_cast<size_t>(segment.token)].id);
      continue;
    }
    const std::string_view piece =
        text.substr(segment.span.begin, segment.span.end - segment.span.begin);
    const std::string normalized = nfc ? unicode::nfc(piece) : std::string(piece);
    for (const Segment& inner : split_added(normalized, normalized_trie, added)) {
      if (inner.token >= 0) {
        out.push_back(added[static_cast<size_t>(inner.token)].id);
      } else {
        const std::string_view rest(normalized.data() + inner.span.begin,
                                    inner.span.end - inner.span.begin);
        encode_normalized(rest, scratch, out);
      }
    }
  }
}

void Tokenizer::Impl::encode_normalized(std::string_view text, MatchScratch& scratch,
                                        std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<std::string> pieces{std::string(text)};
  for (const PreTokenizer& step : pre_tokenizers)
    pieces = apply_pre_tokenizer(step, pieces, scratch);
  for (const std::string& piece : pieces) encode_word(piece, out);
}

void Tokenizer::Impl::encode_word(const std::string& word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {  // a pre-token that is itself in the vocab is one id, merges or not
    const auto it = vocab.find(word);
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    const auto it = cache.find(word);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = merge_word(word);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() < kBpeCacheCapacity) cache.emplace(word, std::move(ids));
}

const Tokenizer::Impl::Merge* Tokenizer::Impl::find_merge(int32_t left, int32_t right) const {
  const auto it = merges.find((static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right));
  return it == merges.end() ? nullptr : &it->second;
}

// tokenizers' Word::merge_all: symbols in a linked list, candidate pairs in a min-heap on
// (rank, position); an entry whose pair has changed since it was pushed is skipped when popped.
std::vector<int32_t> Tokenizer::Impl::merge_word(std::string_view word) const {
  struct Symbol {
    int32_t id;  // -1 once merged into its left neighbour
    int32_t prev, next;
  };
  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < word.size();) {
    const size_t start = pos;
    unicode::decode_code_point(word, pos);
    const auto it = vocab.find(word.substr(start, pos - start));
    const int32_t id = it != vocab.end() ? it->second : unk_id;
    if (id >= 0)
      symbols.push_back({id, static_cast<int32_t>(symbols.size()) - 1,
                         -1});  // else dropped, as tokenizers does without unk
  }
  if (symbols.empty()) return {};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i + 1 < n; ++i) {
    symbols[i].next = i + 1;
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id))
      queue.push({m->rank, i, m->new_id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* current = find_merge(left.id, right.id);
    if (current == nullptr || current->new_id != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    left.next = right.next;
    right.id = -1;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* m = find_merge(symbols[left.prev].id, left.id))
        queue.push({m->rank, left.prev, m->new_id});
    }
    if (left.next >= 0) {
      if (const Merge* m = find_merge(left.id, symbols[left.next].id))
        queue.push({m->rank, top.pos, m->new_id});
    }
  }
  std::vector<int32_t> ids;
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
  return ids;
}

// ---- decoding -------------------------------------------------------------------------------

void Tokenizer::Impl::check_id(int32_t id) const {
  check(id >= 0 && id < static_cast<int32_t>(tokens.size()),
        "tokenizer: token id {} is out of range [0, {})", id, tokens.size());
  check(kinds[id] != IdKind::kNone, "tokenizer: token id {} has no token in this vocabulary", id);
}

// tokenizers' ByteLevel decoder, token by token: every character maps back to its byte, and a
// token with a character outside the byte map (an added token with a space, say) is kept as is.
// Added tokens go through it too, exactly as in tokenizers.
void Tokenizer::Impl::append_bytes(int32_t id, bool skip_special, std::string& out) const {
  check_id(id);
  if (skip_special && kinds[id] == IdKind::kSpecial) return;
  const std::string& token = tokens[id];
  const size_t start = out.size();
  for (size_t pos = 0; pos < token.size();) {
    const int byte = unicode::unicode_to_byte(unicode::decode_code_point(token, pos));
    if (byte < 0) {
      out.resize(start);
      out += token;
      return;
    }
    out.push_back(static_cast<char>(byte));
  }
}

// ---- public API -----------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_file(const std::filesystem::path& tokenizer_json) {
  const json root = parse_json_file(tokenizer_json);
  auto impl = std::make_unique<Impl>();
  try {
    impl->parse(root);
  } catch (const Error& e) {
    fail("tokenizer {}: {}", tokenizer_json.string(), e.what());
  } catch (const json::exception& e) {
    fail("tokenizer {}: malformed field: {}", tokenizer_json.string(), e.what());
  }
  return Tokenizer(std::move(impl));
}

// tokenizer_config.json is optional and nothing in it changes encode/decode today; it is still
// parsed so that a corrupt one is reported rather than silently ignored. Its
// clean_up_tokenization_spaces is deliberately not applied: decode must round-trip the model's
// text exactly, and streaming output could not honour a rule that looks across tokens.
Tokenizer Tokenizer::load(const std::filesystem::path& dir) {
  Tokenizer tokenizer = from_json_file(dir / "tokenizer.json");
  const auto config = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config)) {
    check(parse_json_file(config).is_object(), "tokenizer: {} is not a JSON object",
          config.string());
  }
  return tokenizer;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const size_t bad = unicode::find_invalid_utf8(text);
  check(bad == unicode::kNpos,
        "tokenizer: input text is not valid UTF-8 (byte 0x{:02x} at offset {})",
        bad == unicode::kNpos ? 0 : static_cast<uint8_t>(text[bad]), bad);
  MatchScratch scratch;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  impl_->encode_text(text, scratch, ids);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) impl_->append_bytes(id, skip_special_tokens, bytes);
  return unicode::decode_utf8_lossy(bytes);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->tokens.size()); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (const auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  impl_->check_id(id);
  return impl_->tokens[id];
}

bool Tokenizer::is_special(int32_t id) const {
  check(id >= 0 && id < vocab_size(), "tokenizer: token id {} is out of range [0, {})", id,
        vocab_size());
  return impl_->kinds[id] == Impl::IdKind::kSpecial;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}

// Lossy decoding is a left-to-right state machine, so everything before a trailing well-formed
// but incomplete character decodes the same whatever bytes come next: emit it, hold the rest.
std::string IncrementalDecoder::push(int32_t id) {
  // A model's vocabulary is often padded beyond the tokenizer's (Qwen3: 151,936 ids, 151,669
  // tokens); a sampled padding id has no text, as in transformers' decode.
  const auto& kinds = tokenizer_->impl_->kinds;
  if (id < 0 || id >= static_cast<int32_t>(kinds.size()) || kinds[id] == Tokenizer::Impl::IdKind::kNone) return {};
  tokenizer_->impl_->append_bytes(id, skip_special_tokens_, pending_);
  const size_t hold = unicode::incomplete_utf8_tail(pending_);
  std::string text =
      unicode::decode_utf8_lossy(std::string_view(pending_).substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return text;
}

std::string IncrementalDecoder::finish() {
  std::string text = unicode::decode_utf8_lossy(pending_);
  pending_.clear();
  return text;
}

}  // namespace vortex

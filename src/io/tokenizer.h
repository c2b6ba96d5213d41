// Hugging Face `tokenizer.json` tokenizers: byte-level BPE (GPT-2 / Qwen / Llama-3 style).
//
// Supported: normalizer NFC (or none, or a Sequence of those); pre-tokenizer Split(Regex) through
// PCRE2 (UTF mode, Unicode properties) and ByteLevel; model BPE with merges (string "a b" or
// ["a","b"] form), ignore_merges; added tokens (special or not) matched in the raw text before
// normalization and BPE, honouring lstrip/rstrip; decoder ByteLevel. Anything else in the file is
// a vortex::Error that names the unsupported component.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vortex {

class Tokenizer {
 public:
  // Loads `dir/tokenizer.json` (and `dir/tokenizer_config.json` when present, for bos/eos names).
  static Tokenizer load(const std::filesystem::path& dir);
  static Tokenizer from_json_file(const std::filesystem::path& tokenizer_json);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Encodes text. Added/special tokens written in the text are recognised (as transformers does
  // by default). No BOS is prepended: chat templates write it themselves.
  std::vector<int32_t> encode(std::string_view text) const;
  // Decodes ids to text; invalid UTF-8 byte sequences become U+FFFD (errors="replace").
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t vocab_size() const;  // number of ids (largest id + 1, added tokens included)
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;  // the raw token string; throws on an out-of-range id
  bool is_special(int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class IncrementalDecoder;
};

// Streams text as tokens arrive, never emitting a broken UTF-8 sequence: bytes of an incomplete
// character are held back until the character completes. The concatenation of every push() and
// finish() equals tokenizer.decode(all ids).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
  std::string push(int32_t id);  // text that became complete with this token (may be empty)
  std::string finish();          // whatever is held back, with invalid bytes as U+FFFD

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // bytes not yet emitted (an incomplete UTF-8 sequence)
};

}  // namespace vortex

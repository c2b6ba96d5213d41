// libFuzzer target: the real Qwen3 tokenizer on arbitrary bytes.
//
// Every input is used twice:
//   * as text: invalid UTF-8 must be rejected with vortex::Error (and is then replaced by its
//     lossy decoding, so every input reaches the encoder); valid UTF-8 must encode, and
//     decode(encode(x)) must give x back up to NFC (Qwen3 normalizes to NFC; an NFC input comes
//     back byte for byte); streaming the ids must give the same text, never broken UTF-8;
//   * as token ids (3 bytes each, modulo the vocabulary): decode and the streaming decoder must
//     agree and produce valid UTF-8 whatever byte soup the ids spell.
// The tokenizer comes from VORTEX_SOURCE_DIR/.deps (fetched by scripts/setup), never from the
// environment.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "io/tokenizer.h"
#include "io/unicode.h"

namespace {

void require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "fuzz_tokenizer: invariant violated: %s\n", what);
  std::abort();
}

const vortex::Tokenizer& tokenizer() {
  static const vortex::Tokenizer tok =
      vortex::Tokenizer::load(std::filesystem::path(VORTEX_SOURCE_DIR) / ".deps/tokenizers/qwen3");
  return tok;
}

std::string stream(const std::vector<int32_t>& ids) {
  vortex::IncrementalDecoder decoder(tokenizer());
  std::string text;
  for (int32_t id : ids) {
    const std::string piece = decoder.push(id);
    require(vortex::unicode::is_valid_utf8(piece), "a streamed piece is valid UTF-8");
    text += piece;
  }
  const std::string rest = decoder.finish();
  require(vortex::unicode::is_valid_utf8(rest), "finish() is valid UTF-8");
  return text + rest;
}

// Invalid UTF-8 must be rejected; its lossy decoding (valid by construction) is then fuzzed too,
// so that every input reaches the encoder.
void fuzz_invalid_text(std::string_view bytes) {
  try {
    tokenizer().encode(bytes);
  } catch (const vortex::Error&) {
    return;
  }
  require(false, "invalid UTF-8 is rejected");
}

void fuzz_text(std::string_view text) {
  const std::vector<int32_t> ids = tokenizer().encode(text);
  const std::string decoded = tokenizer().decode(ids);
  const std::string text_nfc = vortex::unicode::nfc(text);
  require(vortex::unicode::nfc(decoded) == text_nfc,
          "decode(encode(x)) is canonically equivalent to x");
  if (text_nfc == text) require(decoded == text, "decode(encode(x)) == x for NFC x");
  require(stream(ids) == decoded, "streamed text == decode(ids)");
}

void fuzz_ids(const uint8_t* data, size_t size) {
  const auto vocab = static_cast<uint32_t>(tokenizer().vocab_size());
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 3 <= size; i += 3) {
    const uint32_t raw = data[i] | (data[i + 1] << 8) | (static_cast<uint32_t>(data[i + 2]) << 16);
    ids.push_back(static_cast<int32_t>(raw % vocab));
  }
  const std::string decoded = tokenizer().decode(ids);
  require(vortex::unicode::is_valid_utf8(decoded), "decode gives valid UTF-8");
  require(stream(ids) == decoded, "streamed ids == decode(ids)");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (vortex::unicode::is_valid_utf8(bytes)) {
    fuzz_text(bytes);
  } else {
    fuzz_invalid_text(bytes);
    fuzz_text(vortex::unicode::decode_utf8_lossy(bytes));
  }
  fuzz_ids(data, size);
  return 0;
}

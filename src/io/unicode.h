// UTF-8 and Unicode helpers for the tokenizer.
//
// Validation and lossy decoding follow the Unicode "maximal subpart" rule (Unicode 15, §3.9, U+FFFD
// substitution), which is what Python's bytes.decode("utf-8", errors="replace") and Rust's
// String::from_utf8_lossy both do: every maximal ill-formed subpart becomes one U+FFFD. NFC goes
// through utf8proc. The GPT-2 byte-level map turns each byte into a printable code point so that
// BPE vocabularies never contain raw control bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vortex::unicode {

inline constexpr size_t kNpos = static_cast<size_t>(-1);

// What the bytes starting at some position form.
enum class Utf8Status {
  kComplete,   // a well-formed character
  kInvalid,    // the maximal subpart of an ill-formed sequence (always replaced by one U+FFFD)
  kTruncated,  // a well-formed prefix of a character cut off by the end of the input
};

struct Utf8Unit {
  size_t length;  // bytes consumed, >= 1
  Utf8Status status;
};

// Examines bytes[pos..]; requires pos < bytes.size().
Utf8Unit next_utf8_unit(std::string_view bytes, size_t pos);

// Byte offset of the first ill-formed or truncated sequence, or kNpos when `bytes` is valid UTF-8.
size_t find_invalid_utf8(std::string_view bytes);
inline bool is_valid_utf8(std::string_view bytes) { return find_invalid_utf8(bytes) == kNpos; }

// Decodes bytes as UTF-8, replacing each maximal ill-formed subpart (and a truncated tail) with
// U+FFFD, exactly as Python's errors="replace".
std::string decode_utf8_lossy(std::string_view bytes);

// Number of trailing bytes that form a well-formed but incomplete character (0..3): the bytes a
// streaming decoder must hold back because the next bytes may complete them.
size_t incomplete_utf8_tail(std::string_view bytes);

// Decodes one code point from valid UTF-8 at `pos` and advances `pos` past it.
char32_t decode_code_point(std::string_view valid_utf8, size_t& pos);
void append_utf8(std::string& out, char32_t cp);

// NFC (canonical composition) of valid UTF-8; throws vortex::Error when utf8proc rejects it.
std::string nfc(std::string_view valid_utf8);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool is_whitespace(char32_t cp);
// Rust's char::is_alphanumeric, approximated by the general categories L* and N* (Rust also counts
// the Other_Alphabetic marks; only single_word added tokens look at this).
bool is_alphanumeric(char32_t cp);

// The GPT-2 byte-level map: byte -> code point (UTF-8 encoded), and back (-1 when `cp` is not
// the image of a byte).
const std::string& byte_to_unicode(uint8_t byte);
int unicode_to_byte(char32_t cp);

}  // namespace vortex::unicode

// UTF-8 helpers: see unicode.h for the rules followed.
#include "io/unicode.h"

#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <memory>

#include "core/error.h"

namespace vortex::unicode {

namespace {

// Unicode 15 Table 3-7: the first continuation byte's range depends on the lead byte, which is
// what makes overlong forms, surrogates and code points above U+10FFFF ill-formed.
struct LeadByte {
  int continuations;  // -1: never a lead byte
  uint8_t lo, hi;     // allowed range of the first continuation byte
};

LeadByte classify_lead(uint8_t b) {
  if (b >= 0xC2 && b <= 0xDF) return {1, 0x80, 0xBF};
  if (b == 0xE0) return {2, 0xA0, 0xBF};
  if (b == 0xED) return {2, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {2, 0x80, 0xBF};
  if (b == 0xF0) return {3, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {3, 0x80, 0xBF};
  if (b == 0xF4) return {3, 0x80, 0x8F};
  return {-1, 0, 0};
}

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 324> to_byte;  // indexed by code point; the images all lie below U+0144
};

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order.
ByteMap make_byte_map() {
  ByteMap map;
  map.to_byte.fill(-1);
  int next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next_extra++);
    append_utf8(map.to_unicode[b], cp);
    map.to_byte[cp] = static_cast<int16_t>(b);
  }
  return map;
}

const ByteMap& byte_map() {
  static const ByteMap map = make_byte_map();
  return map;
}

}  // namespace

Utf8Unit next_utf8_unit(std::string_view bytes, size_t pos) {
  const auto lead = static_cast<uint8_t>(bytes[pos]);
  if (lead < 0x80) return {1, Utf8Status::kComplete};
  const LeadByte info = classify_lead(lead);
  if (info.continuations < 0) return {1, Utf8Status::kInvalid};
  uint8_t lo = info.lo, hi = info.hi;
  size_t length = 1;
  for (int k = 0; k < info.continuations; ++k) {
    if (pos + length >= bytes.size()) return {length, Utf8Status::kTruncated};
    const auto b = static_cast<uint8_t>(bytes[pos + length]);
    if (b < lo || b > hi) return {length, Utf8Status::kInvalid};
    lo = 0x80, hi = 0xBF;
    ++length;
  }
  return {length, Utf8Status::kComplete};
}

size_t find_invalid_utf8(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (static_cast<uint8_t>(bytes[pos]) < 0x80) {  // ASCII fast path
      ++pos;
      continue;
    }
    const Utf8Unit unit = next_utf8_unit(bytes, pos);
    if (unit.status != Utf8Status::kComplete) return pos;
    pos += unit.length;
  }
  return kNpos;
}

std::string decode_utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Utf8Unit unit = next_utf8_unit(bytes, pos);
    if (unit.status == Utf8Status::kComplete) {
      out.append(bytes.substr(pos, unit.length));
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
    }
    pos += unit.length;
  }
  return out;
}

size_t incomplete_utf8_tail(std::string_view bytes) {
  // A character is at most 4 bytes, so the unit that reaches the end starts within the last 4
  // bytes; but where units start depends on everything before, so walk from a boundary that is
  // certainly a unit start: any position whose byte is not a continuation byte.
  size_t start = bytes.size() > 4 ? bytes.size() - 4 : 0;
  while (start > 0 && (static_cast<uint8_t>(bytes[start]) & 0xC0) == 0x80) --start;
  size_t pos = start;
  while (pos < bytes.size()) {
    const Utf8Unit unit = next_utf8_unit(bytes, pos);
    if (unit.status == Utf8Status::kTruncated) return unit.length;
    pos += unit.length;
  }
  return 0;
}

char32_t decode_code_point(std::string_view s, size_t& pos) {
  const auto b0 = static_cast<uint8_t>(s[pos]);
  auto cont = [&](size_t k) {
    return static_cast<char32_t>(static_cast<uint8_t>(s[pos + k]) & 0x3F);
  };
  char32_t cp;
  size_t length;
  if (b0 < 0x80) {
    cp = b0, length = 1;
  } else if (b0 < 0xE0) {
    cp = (static_cast<char32_t>(b0 & 0x1F) << 6) | cont(1), length = 2;
  } else if (b0 < 0xF0) {
    cp = (static_cast<char32_t>(b0 & 0x0F) << 12) | (cont(1) << 6) | cont(2), length = 3;
  } else {
    cp = (static_cast<char32_t>(b0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
    length = 4;
  }
  pos += length;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string nfc(std::string_view valid_utf8) {
  bool ascii = true;  // ASCII text is already NFC; skip the allocation in the common case
  for (char c : valid_utf8) ascii = ascii && static_cast<uint8_t>(c) < 0x80;
  if (ascii) return std::string(valid_utf8);
  utf8proc_uint8_t* composed = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(valid_utf8.data()),
                   static_cast<utf8proc_ssize_t>(valid_utf8.size()), &composed,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owner(composed, &std::free);
  check(length >= 0, "unicode: NFC normalization failed: {}", utf8proc_errmsg(length));
  return std::string(reinterpret_cast<const char*>(composed), static_cast<size_t>(length));
}

bool is_whitespace(char32_t cp) {
  if (cp >= 0x09 && cp <= 0x0D) return true;
  if (cp >= 0x2000 && cp <= 0x200A) return true;
  switch (cp) {
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return false;
  }
}

bool is_alphanumeric(char32_t cp) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

const std::string& byte_to_unicode(uint8_t byte) { return byte_map().to_unicode[byte]; }

int unicode_to_byte(char32_t cp) {
  const auto& table = byte_map().to_byte;
  return cp < table.size() ? table[cp] : -1;
}

}  // namespace vortex::unicode

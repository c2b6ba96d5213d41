// Template source → text and tag segments, with the whitespace rules of Jinja2 as transformers
// configures it: trim_blocks (drop the newline after a block or comment tag), lstrip_blocks (drop
// spaces and tabs before a block or comment tag that starts its line), `-` markers (strip all
// whitespace on that side) and `+` markers (disable lstrip/trim). Like Jinja, newlines are
// normalised to \n and one trailing newline of the source is dropped (keep_trailing_newline off).
#include <cctype>
#include <charconv>
#include <cstring>

#include "core/error.h"
#include "io/jinja_internal.h"

namespace vortex::jinja {
namespace {

std::string normalize_source(std::string_view raw) {
  std::string src;
  src.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\r') {
      src += '\n';
      if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
    } else {
      src += raw[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  return src;
}

bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Python's \s on str: the whitespace that `-` markers strip.
size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size()) {
    size_t next = i;
    if (!is_py_space(decode_utf8_at(s, next))) break;
    i = next;
  }
  return i;
}

std::string rstrip_space(std::string_view s) {
  return py_strip(s, nullptr, /*left=*/false, /*right=*/true);
}

class Lexer {
 public:
  explicit Lexer(std::string_view raw) : src_(normalize_source(raw)) {}

  std::vector<Segment> run() {
    while (pos_ < src_.size()) {
      size_t tag = find_tag(pos_);
      if (tag == std::string::npos) {
        emit_text(src_.substr(pos_));
        break;
      }
      lex_tag(tag);
    }
    return std::move(segments_);
  }

 private:
  [[noreturn]] void fail_at(int line, const std::string& message) {
    vortex::fail("jinja: line {}: {}", line, message);
  }

  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  void advance_to(size_t to) {
    for (size_t i = pos_; i < to; ++i) line_ += src_[i] == '\n';
    pos_ = to;
  }

  void emit_text(std::string text) {
    if (text.empty()) return;
    Segment seg;
    seg.kind = SegKind::kText;
    seg.text = std::move(text);
    seg.line = line_;
    segments_.push_back(std::move(seg));
  }

  // The text before a tag, with the tag's left-side whitespace rule applied.
  std::string leading_text(size_t tag, char marker, bool block_like) {
    std::string text = src_.substr(pos_, tag - pos_);
    if (marker == '-') return rstrip_space(text);
    if (marker == '+' || !block_like) return text;
    size_t line_begin = text.rfind('\n');
    line_begin = line_begin == std::string::npos ? 0 : line_begin + 1;
    if (line_begin == 0 && !line_starting_) return text;
    if (text.find_first_not_of(" \t", line_begin) != std::string::npos) return text;
    return text.substr(0, line_begin);
  }

  // After a closing delimiter: `-` strips all whitespace, a plain block/comment end drops one
  // newline (trim_blocks).
  void finish_tag(size_t after, char marker, bool block_like) {
    size_t end = after;
    if (marker == '-') end = skip_space(src_, after);
    else if (marker != '+' && block_like && end < src_.size() && src_[end] == '\n') ++end;
    advance_to(end);
    line_starting_ = end > 0 && src_[end - 1] == '\n';
  }

  void lex_tag(size_t tag) {
    const char type = src_[tag + 1];
    const char marker = (tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+'))
                            ? src_[tag + 2] : 0;
    const bool block_like = type != '{';
    emit_text(leading_text(tag, marker, block_like));
    advance_to(tag);
    const int tag_line = line_;
    size_t body = tag + 2 + (marker ? 1 : 0);
    if (type == '#') return lex_comment(body, tag_line);
    if (type == '%' && lex_raw(body, tag_line)) return;
    lex_code(body, type == '%' ? SegKind::kStatement : SegKind::kOutput, tag_line);
  }

  void lex_comment(size_t body, int tag_line) {
    size_t close = src_.find("#}", body);
    if (close == std::string::npos) fail_at(tag_line, "unclosed comment: missing '#}'");
    char marker = (close > body && (src_[close - 1] == '-' || src_[close - 1] == '+'))
                      ? src_[close - 1] : 0;
    finish_tag(close + 2, marker, true);
  }

  // Matches `name` surrounded by optional spaces followed by `-%}` / `%}` at i; returns the index
  // after the delimiter or npos, and the closing marker.
  size_t match_keyword_tag(size_t i, std::string_view name, char* end_marker) const {
    while (i < src_.size() && std::isspace(static_cast<unsigned char>(src_[i]))) ++i;
    if (src_.compare(i, name.size(), name) != 0) return std::string::npos;
    i += name.size();
    if (i < src_.size() && is_name_char(src_[i])) return std::string::npos;
    while (i < src_.size() && std::isspace(static_cast<unsigned char>(src_[i]))) ++i;
    *end_marker = 0;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) *end_marker = src_[i++];
    if (src_.compare(i, 2, "%}") != 0) return std::string::npos;
    return i + 2;
  }

  // {% raw %}...{% endraw %}: the body is text. Jinja does not trim the newline after `raw`.
  bool lex_raw(size_t body, int tag_line) {
    char marker = 0;
    size_t after = match_keyword_tag(body, "raw", &marker);
    if (after == std::string::npos || marker == '+') return false;
    finish_tag(after, marker == '-' ? '-' : '+', true);
    for (size_t tag = find_tag(pos_); tag != std::string::npos; tag = find_tag(tag + 1)) {
      if (src_[tag + 1] != '%') continue;
      char open = (tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+'))
                      ? src_[tag + 2] : 0;
      char close = 0;
      size_t end = match_keyword_tag(tag + 2 + (open ? 1 : 0), "endraw", &close);
      if (end == std::string::npos) continue;
      emit_text(leading_text(tag, open, true));
      advance_to(tag);
      finish_tag(end, close, true);
      return true;
    }
    fail_at(tag_line, "unclosed 'raw' block: missing '{% endraw %}'");
  }

  // Tokens of a {{ }} or {% %} tag up to its closing delimiter. As in Jinja, a delimiter inside
  // brackets does not close the tag ({{ {'a': {'b': 1}} }}).
  void lex_code(size_t i, SegKind kind, int tag_line) {
    Segment seg;
    seg.kind = kind;
    seg.line = tag_line;
    const std::string_view close = kind == SegKind::kOutput ? "}}" : "%}";
    std::string open_brackets;  // expected closers, innermost last
    int line = tag_line;
    while (true) {
      while (i < src_.size() && std::isspace(static_cast<unsigned char>(src_[i]))) {
        line += src_[i] == '\n';
        ++i;
      }
      if (i >= src_.size()) {
        fail_at(tag_line, fmt::format("unclosed tag: missing '{}'", close));
      }
      if (open_brackets.empty()) {
        char marker = (src_[i] == '-' || (src_[i] == '+' && kind == SegKind::kStatement))
                          ? src_[i] : 0;
        size_t at = i + (marker ? 1 : 0);
        if (src_.compare(at, 2, close) == 0) {
          Token end;
          end.line = line;
          seg.tokens.push_back(std::move(end));
          segments_.push_back(std::move(seg));
          advance_to(i);
          finish_tag(at + 2, marker, kind == SegKind::kStatement);
          return;
        }
      }
      Token token = next_token(i, line);
      if (token.kind == TokKind::kOp) track_bracket(token, open_brackets);
      seg.tokens.push_back(std::move(token));
    }
  }

  void track_bracket(const Token& token, std::string& open_brackets) {
    char c = token.text[0];
    if (c == '(') open_brackets += ')';
    else if (c == '[') open_brackets += ']';
    else if (c == '{') open_brackets += '}';
    else if ((c == ')' || c == ']' || c == '}') && !open_brackets.empty()) {
      if (c != open_brackets.back()) {
        fail_at(token.line, fmt::format("unexpected '{}', expected '{}'", c, open_brackets.back()));
      }
      open_brackets.pop_back();
    }
  }

  Token next_token(size_t& i, int& line) {
    Token token;
    token.line = line;
    char c = src_[i];
    if (c == '\'' || c == '"') {
      token.kind = TokKind::kString;
      token.text = lex_string(i, line);
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      lex_number(i, token);
    } else if (is_name_start(c)) {
      size_t start = i;
      while (i < src_.size() && is_name_char(src_[i])) ++i;
      token.kind = TokKind::kName;
      token.text = src_.substr(start, i - start);
    } else {
      static constexpr const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                             "/", "%", "~", "<", ">", "=", ".", ",", ":", "|",
                                             "(", ")", "[", "]", "{", "}", ";"};
      for (const char* op : kOps) {
        if (src_.compare(i, std::strlen(op), op) == 0) {
          token.kind = TokKind::kOp;
          token.text = op;
          i += std::strlen(op);
          return token;
        }
      }
      fail_at(line, fmt::format("unexpected character '{}'", c));
    }
    return token;
  }

  // A quoted string with Python's unicode-escape rules (unknown escapes are kept as written).
  std::string lex_string(size_t& i, int& line) {
    const char quote = src_[i++];
    const int start_line = line;
    std::string out;
    while (true) {
      if (i >= src_.size()) fail_at(start_line, "unterminated string literal");
      char c = src_[i++];
      if (c == quote) return out;
      line += c == '\n';
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= src_.size()) fail_at(start_line, "unterminated string literal");
      lex_escape(i, line, out);
    }
  }

  void lex_escape(size_t& i, int& line, std::string& out) {
    char e = src_[i++];
    switch (e) {
      case 'n': out += '\n'; return;
      case 't': out += '\t'; return;
      case 'r': out += '\r'; return;
      case '\\': out += '\\'; return;
      case '\'': out += '\''; return;
      case '"': out += '"'; return;
      case 'a': out += '\a'; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'v': out += '\v'; return;
      case '\n': ++line; return;  // line continuation
      case 'x': return lex_hex_escape(i, 2, line, out);
      case 'u': return lex_hex_escape(i, 4, line, out);
      case 'U': return lex_hex_escape(i, 8, line, out);
      default: break;
    }
    if (e >= '0' && e <= '7') {
      uint32_t cp = e - '0';
      for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) {
        cp = cp * 8 + (src_[i++] - '0');
      }
      append_utf8(out, cp);
      return;
    }
    out += '\\';
    out += e;
    if (e == '\n') ++line;
  }

  void lex_hex_escape(size_t& i, int digits, int line, std::string& out) {
    uint32_t cp = 0;
    auto res = std::from_chars(src_.data() + i, src_.data() + std::min(src_.size(), i + digits),
                               cp, 16);
    if (res.ptr != src_.data() + i + digits || cp > 0x10ffff) {
      fail_at(line, fmt::format("invalid \\{} escape in string literal",
                                digits == 2 ? 'x' : digits == 4 ? 'u' : 'U'));
    }
    i += digits;
    append_utf8(out, cp);
  }

  // Integers and floats as Jinja reads them: digits with `_` separators, an optional fraction
  // and exponent; a `.` not followed by a digit ends the number (so `x.0` stays a subscript).
  void lex_number(size_t& i, Token& token) {
    std::string digits;
    auto take_digits = [&] {
      while (i < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[i])) ||
                                 (src_[i] == '_' && i + 1 < src_.size() &&
                                  std::isdigit(static_cast<unsigned char>(src_[i + 1]))))) {
        if (src_[i] != '_') digits += src_[i];
        ++i;
      }
    };
    take_digits();
    bool is_float = false;
    if (i + 1 < src_.size() && src_[i] == '.' && std::isdigit(static_cast<unsigned char>(src_[i + 1]))) {
      is_float = true;
      digits += src_[i++];
      take_digits();
    }
    if (i < src_.size() && (src_[i] == 'e' || src_[i] == 'E')) {
      size_t j = i + 1;
      if (j < src_.size() && (src_[j] == '+' || src_[j] == '-')) ++j;
      if (j < src_.size() && std::isdigit(static_cast<unsigned char>(src_[j]))) {
        is_float = true;
        digits += 'e';
        digits.append(src_, i + 1, j - i - 1);
        i = j;
        take_digits();
      }
    }
    token.kind = is_float ? TokKind::kFloat : TokKind::kInt;
    token.text = digits;
    if (is_float) {
      token.real = std::strtod(digits.c_str(), nullptr);
    } else if (std::from_chars(digits.data(), digits.data() + digits.size(), token.integer).ec !=
               std::errc()) {
      fail_at(token.line, fmt::format("integer literal {} is too large", digits));
    }
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;  // the next text starts a line (for lstrip_blocks)
  std::vector<Segment> segments_;
};

}  // namespace

std::vector<Segment> lex_template(std::string_view source) { return Lexer(source).run(); }

}  // namespace vortex::jinja

// vortex::Error (include/vortex/error.h) — the one exception type for user-facing failures — and
// the helpers that raise it.
//
// Everything a user can get wrong (a missing file, a corrupt header, a bad flag, an out-of-range
// token id) throws vortex::Error with a message that names the file/field/value at fault. The CLI
// prints "error: <message>" and exits 1; the server answers a 4xx JSON. Internal invariant
// violations (programming errors) also throw, but say "internal:" first.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "vortex/error.h"

#ifdef __CUDACC__
#include <sstream>
#include <string_view>
#else
#include <fmt/format.h>
#endif

namespace vortex {

#ifdef __CUDACC__
// nvcc's front end cannot compile fmt's compile-time format-string checks, so CUDA files get a
// small run-time formatter with the same "{}" placeholders (plain "{}" only).
namespace detail {
inline void format_rest(std::ostringstream& out, std::string_view format) { out << format; }
template <typename First, typename... Rest>
void format_rest(std::ostringstream& out, std::string_view format, First&& first, Rest&&... rest) {
  size_t hole = format.find("{}");
  if (hole == std::string_view::npos) { out << format; return; }
  out << format.substr(0, hole) << first;
  format_rest(out, format.substr(hole + 2), std::forward<Rest>(rest)...);
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(std::string_view format, Args&&... args) {
  std::ostringstream out;
  detail::format_rest(out, format, std::forward<Args>(args)...);
  throw Error(out.str());
}

template <typename... Args>
void check(bool condition, std::string_view format, Args&&... args) {
  if (!condition) fail(format, std::forward<Args>(args)...);
}
#else

// Throws Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Throws Error with a fmt-formatted message when `condition` is false.
template <typename... Args>
void check(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Throws OptionError for `option` with a fmt-formatted complaint when `condition` is false.
template <typename... Args>
void check_option(bool condition, const char* option, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) throw OptionError(option, fmt::format(format, std::forward<Args>(args)...));
}
#endif

}  // namespace vortex

// vortex::Error — the one exception type for user-facing failures.
//
// Everything a user can get wrong (a missing file, a corrupt header, a bad flag, an out-of-range
// token id) throws vortex::Error with a message that names the file/field/value at fault. The CLI
// prints "error: <message>" and exits 1; the server answers a 4xx JSON. Internal invariant
// violations (programming errors) also throw, but say "internal:" first.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace vortex {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

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

}  // namespace vortex

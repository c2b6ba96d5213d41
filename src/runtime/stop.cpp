#include "runtime/stop.h"

#include <algorithm>

#include "core/error.h"

namespace vortex {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings) : stop_strings_(std::move(stop_strings)) {
  for (const auto& s : stop_strings_) check(!s.empty(), "stop strings must not be empty");
}

std::string StopStringMatcher::push(std::string_view text) {
  if (stopped_) return {};
  // A stop string can only start within the last (longest stop − 1) bytes before the new text.
  size_t longest = 0;
  for (const auto& s : stop_strings_) longest = std::max(longest, s.size());
  size_t search_from = text_.size() > longest ? text_.size() - longest : 0;
  text_.append(text);
  size_t first = std::string::npos;
  for (const auto& s : stop_strings_) first = std::min(first, text_.find(s, search_from));
  if (first != std::string::npos) {
    stopped_ = true;
    text_.resize(first);
  }
  size_t safe_end = stopped_ ? text_.size() : text_.size() - held_back_length();
  if (safe_end <= emitted_) return {};
  std::string out = text_.substr(emitted_, safe_end - emitted_);
  emitted_ = safe_end;
  return out;
}

std::string StopStringMatcher::flush() {
  std::string out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

size_t StopStringMatcher::held_back_length() const {
  size_t held = 0;
  for (const auto& s : stop_strings_) {
    for (size_t len = std::min(s.size() - 1, text_.size()); len > held; --len) {
      if (text_.compare(text_.size() - len, len, s, 0, len) == 0) { held = len; break; }
    }
  }
  return held;
}

}  // namespace vortex

// Stop strings over streamed text: finds the first stop string in the generated text and holds
// back any tail that could still become one, so streamed text never includes part of a stop string.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace vortex {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  // Appends newly decoded text. Returns the text that is now safe to emit. Sets stopped() once a
  // stop string appears; the emitted text then ends right before it.
  std::string push(std::string_view text);
  // At the end of generation: everything still held back.
  std::string flush();

  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }  // all text so far (cut at the stop string)

 private:
  size_t held_back_length() const;  // longest suffix of text_ that is a proper prefix of a stop string

  std::vector<std::string> stop_strings_;
  std::string text_;
  size_t emitted_ = 0;
  bool stopped_ = false;
};

}  // namespace vortex

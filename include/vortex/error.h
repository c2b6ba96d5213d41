// The exceptions the library throws for user-facing failures (src/core/error.h says how the code
// raises them).
//
// Everything a user can get wrong (a missing file, a corrupt header, a bad option, an out-of-range
// token id) throws vortex::Error with a message that names the file/field/value at fault. Internal
// invariant violations (programming errors) also throw it, but say "internal:" first.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace vortex {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A bad value of one of the library's options, named as its struct field is (EngineOptions'
// "page_size", ScoreOptions' "top_n"); what() is "<option> <complaint>". A front end that spells
// the option differently (the CLI's --page-size) rewrites the name (the CLI: cli/main.cpp).
class OptionError : public Error {
 public:
  OptionError(std::string option, const std::string& complaint)
      : Error(option + " " + complaint), option_(std::move(option)), complaint_(complaint) {}
  const std::string& option() const { return option_; }
  const std::string& complaint() const { return complaint_; }

 private:
  std::string option_, complaint_;
};

}  // namespace vortex

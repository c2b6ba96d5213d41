// What a result file records about the run that made it (bench/results/ rows, `vortex eval --json`):
// the exact command, the commit the binary was built from, the machine and the date.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace vortex {

struct RunInfo {
  std::string command;  // the process's argv joined by spaces (arguments with spaces quoted)
  std::string commit;   // the commit the binary was built from (with "-dirty" when the tree had changes)
  std::string machine;  // host name, CPU model and count, and the GPU's name when `device` is cuda
  std::string date;     // UTC, ISO 8601
};

RunInfo current_run_info(const std::string& device);
// The commit the binary was built from (RunInfo::commit).
std::string_view build_commit();
nlohmann::json run_info_json(const RunInfo& info);

}  // namespace vortex

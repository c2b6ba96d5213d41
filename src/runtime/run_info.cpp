#include "runtime/run_info.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#ifdef VORTEX_HAVE_CUDA
#include "backend/cuda/cuda_bench.h"
#endif
#include "vortex_commit.h"  // generated at build time: VORTEX_COMMIT

namespace vortex {
namespace {

std::string command_line() {
  std::ifstream file("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>()), out;
  std::stringstream parts(all);
  for (std::string arg; std::getline(parts, arg, '\0');) {
    if (!out.empty()) out += ' ';
    out += arg.find_first_of(" \t'\"") == std::string::npos ? arg : "'" + arg + "'";
  }
  return out;
}

std::string cpu_model() {
  std::ifstream file("/proc/cpuinfo");
  for (std::string line; std::getline(file, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

}  // namespace

std::string_view build_commit() { return VORTEX_COMMIT; }

RunInfo current_run_info(const std::string& device) {
  RunInfo info;
  info.command = command_line();
  info.commit = build_commit();
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  info.machine = fmt::format("{}: {} x {}", host, std::thread::hardware_concurrency(), cpu_model());
#ifdef VORTEX_HAVE_CUDA
  if (device == "cuda") info.machine += ", GPU " + cuda::device_name();
#else
  (void)device;
#endif
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char date[32] = {};
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  info.date = date;
  return info;
}

nlohmann::json run_info_json(const RunInfo& info) {
  return {{"command", info.command}, {"commit", info.commit}, {"machine", info.machine}, {"date", info.date}};
}

}  // namespace vortex

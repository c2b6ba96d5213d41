#include "common/test_util.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace vortex::test {

// The repository root: where the build was configured, or — when the build tree was copied to
// another machine (the GPU machine) — two folders above the test executable (build/tests/X).
std::filesystem::path source_dir() {
  std::filesystem::path configured = VORTEX_SOURCE_DIR;
  if (std::filesystem::exists(configured / "tests" / "data")) return configured;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe");
  for (auto dir = exe.parent_path(); !dir.empty() && dir != dir.root_path(); dir = dir.parent_path())
    if (std::filesystem::exists(dir / "tests" / "data" / "README.md")) return dir;
  return configured;
}
std::filesystem::path data_dir() { return source_dir() / "tests" / "data"; }
std::filesystem::path deps_dir() { return source_dir() / ".deps"; }

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("test: cannot open " + path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<float> random_floats(size_t count, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(count);
  for (auto& v : values) v = dist(rng);
  return values;
}

std::filesystem::path scratch_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("vortex-test-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace vortex::test

// Shared helpers for tests: paths to test data, random data, poisoned buffers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace vortex::test {

std::filesystem::path source_dir();      // the repository root
std::filesystem::path data_dir();        // tests/data
std::filesystem::path deps_dir();        // .deps (fetched by scripts/setup)
std::string read_file(const std::filesystem::path& path);

// Uniform random floats in [lo, hi) from a fixed seed: tests use random data, never zeros.
std::vector<float> random_floats(size_t count, uint32_t seed, float lo = -1.0f, float hi = 1.0f);

// A scratch directory under the build tree, emptied on creation.
std::filesystem::path scratch_dir(const std::string& name);

}  // namespace vortex::test

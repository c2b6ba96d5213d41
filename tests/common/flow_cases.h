// Random inputs of one flow indexer launch, laid out as the generated kernel reads them, and the CPU
// interpreter's answer for them: shared by the emulated (tests/unit) and GPU (tests/gpu) checks of
// the generated kernels. Letters as in src/backend/cuda/flow_codegen.h.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "backend/cuda/flow_codegen.h"
#include "vortex/flow.h"

namespace vortex::test {

struct IndexerCase {
  Flow flow;
  cuda::IndexerShape shape;
  int64_t rows = 0, kv_heads = 0, num_pages = 0;  // R, G, pages of the layer (R × pages_per_row)
  std::vector<float> q;                            // (R, H, D), bf16-exact when shape.q_type is bf16
  std::vector<uint16_t> q_bf16;                    // (R, H, D) the same values as bf16 bits
  std::vector<std::vector<float>> fields;          // per field: (num_pages, G, S, W) from reduce_page of random keys,
                                                   // rounded as the field's storage type keeps them (the CPU store)
  std::vector<std::vector<uint8_t>> records;       // per field: the same as the device stores it (field_storage.h)
  std::vector<std::vector<float>> state;           // per slot: (num_pages, G), random (not all zero)
  std::vector<int32_t> pages;                      // (total) candidates, (r, g)'s list at offsets[r·G + g]
  std::vector<int32_t> offsets, counts;            // (R, G)
  int32_t max_pages = 0;                           // the longest list

  int64_t total() const { return static_cast<int64_t>(pages.size()); }
};

// rows × kv_heads lists of distinct random pages, lengths cycling through `lengths` (0 allowed); each row
// owns pages_per_row pages of its own (rows never share a page).
IndexerCase make_indexer_case(const Flow& flow, const cuda::IndexerShape& shape, int64_t rows, int64_t kv_heads,
                              int64_t pages_per_row, const std::vector<int32_t>& lengths, uint32_t seed);

// The next decode step: a new q and new candidate lists; fields and state stay.
void next_step(IndexerCase& c, const std::vector<int32_t>& lengths, uint32_t seed);

// The interpreter on every (r, g): scores (total); `state` (per slot (num_pages, G)) is updated.
std::vector<float> interpret(const IndexerCase& c, std::vector<std::vector<float>>& state);

// Runs the generated kernel on a case: returns the scores (total) and updates `state` as the
// kernel's saves do.
using KernelRun = std::function<std::vector<float>(const IndexerCase& c, std::vector<std::vector<float>>& state)>;

// Two decode steps through `run` and through the interpreter, each from its own copy of the case's
// state; "" when every score and state value agrees within `tolerance` (normalised), else what differs.
std::string compare_two_steps(IndexerCase c, const KernelRun& run, double tolerance);

// max |a − b| / max |b|; infinite when a holds a NaN or the sizes differ.
double normalised_diff(const std::vector<float>& a, const std::vector<float>& b);

// A few flows beyond the built-ins that reach every op, value placement, field storage type and
// phase of the generator.
struct NamedFlow {
  std::string name;
  Flow flow;
};
inline void PrintTo(const NamedFlow& f, std::ostream* out) { *out << f.name; }
std::vector<NamedFlow> codegen_flows();

}  // namespace vortex::test

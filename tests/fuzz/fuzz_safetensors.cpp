// libFuzzer target for the safetensors header parser: arbitrary bytes must either parse or throw
// vortex::Error. Anything else — a crash, an ASan report, another exception type escaping — is a
// bug. Every parsed tensor's first and last byte is read so that a TensorView pointing outside
// the input shows up as an ASan heap-buffer-overflow here rather than later in a model load.
//
// Build and run: scripts/fuzz (see its header). Seeds: tests/fuzz/corpus/fuzz_safetensors/.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A private copy sized exactly to the input, so reading one byte past it is caught by ASan
  // even when libFuzzer's own buffer happens to be larger.
  std::vector<uint8_t> bytes(data, data + size);
  try {
    auto tensors = vortex::SafetensorsFile::parse(bytes.data(), bytes.size(), "fuzz.safetensors");
    volatile uint8_t sink = 0;
    for (const auto& [name, view] : tensors) {
      if (view.nbytes == 0) continue;
      const auto* first = static_cast<const uint8_t*>(view.data);
      sink = sink + first[0] + first[view.nbytes - 1];
    }
  } catch (const vortex::Error&) {
    // Rejected input: the expected outcome for almost every fuzz case.
  }
  return 0;
}

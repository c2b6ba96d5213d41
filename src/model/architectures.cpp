#include "model/weights.h"

namespace vortex {

ArchitectureTensors architecture_tensors(const ModelConfig& config) {
  switch (config.architecture) {
    case Architecture::kQwen3: return qwen3_tensors(config);
    case Architecture::kQwen2: return qwen2_tensors(config);
    case Architecture::kLlama: return llama_tensors(config);
  }
  return {};
}

}  // namespace vortex

// Memory-mapped safetensors checkpoints: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json`.
//
// The header is validated completely before any tensor is used: header length within the file,
// valid JSON, known dtypes, shape × dtype size == byte span, every span inside the data section,
// no two spans overlapping. Each violation is a vortex::Error naming the file and tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace vortex {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // points into the mapped file; valid while the SafetensorsFile lives
  size_t nbytes = 0;
  int64_t numel() const;
};

// One mapped .safetensors file.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  // Parses a header from memory (used by the loader and by the fuzz target): `bytes` is the whole
  // file. Throws vortex::Error on any violation; never reads outside `bytes`.
  static std::map<std::string, TensorView> parse(const uint8_t* bytes, size_t size, const std::string& file_name);
  ~SafetensorsFile();

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

// All tensors of a checkpoint directory, by name.
class WeightStore {
 public:
  static WeightStore open(const std::filesystem::path& model_dir);
  bool contains(std::string_view name) const;
  // Throws vortex::Error naming the tensor and the directory when missing.
  const TensorView& get(std::string_view name) const;
  const std::map<std::string, TensorView, std::less<>>& tensors() const { return tensors_; }

 private:
  void open_sharded(const std::filesystem::path& index);  // fills files_ and tensors_ from the index

  std::filesystem::path dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorView, std::less<>> tensors_;
};

}  // namespace vortex

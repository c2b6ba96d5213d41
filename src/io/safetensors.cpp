// Safetensors loading: the header parser (pure, bounds-checked, fuzzed by
// tests/fuzz/fuzz_safetensors.cpp), the mmap wrapper, and the checkpoint directory resolver.
//
// File layout: [u64 little-endian N][N bytes of JSON header][data section]. The header maps each
// tensor name to {dtype, shape, data_offsets: [begin, end]}, offsets relative to the data section.
// Limits: a tensor's bytes are not checked for alignment (writers pad the header to 8 bytes, so
// real checkpoints are aligned); a file truncated by someone else after mapping raises SIGBUS on
// access, which no user-space check can prevent.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace vortex {

namespace {

using nlohmann::json;

// The same cap the reference implementation (huggingface/safetensors) uses: a header larger
// than this is corrupt or hostile, and parsing it would cost memory for nothing.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

// A tensor's byte range inside the data section, kept for the overlap check.
struct Span {
  uint64_t begin = 0;
  uint64_t end = 0;
  const std::string* name = nullptr;
};

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = value << 8 | bytes[i];
  return value;
}

// JSON integers arrive as signed or unsigned; floats (2.0) and negatives are rejected.
bool as_unsigned(const json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

// A JSON value for an error message, cut short: a hostile header can hold megabytes in one value.
std::string brief(const json& value) {
  constexpr size_t kMaxChars = 64;
  std::string text = value.dump();
  if (text.size() > kMaxChars) text = text.substr(0, kMaxChars) + "...";
  return text;
}

// Parses the header text, rejecting repeated keys in any object: nlohmann keeps the last one
// silently, which would hide a second definition of a tensor or of its offsets.
json parse_header_json(std::string_view text, const std::string& file) {
  std::vector<std::set<std::string>> open_objects;  // keys seen so far, one set per enclosing object
  json::parser_callback_t on_event = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) open_objects.emplace_back();
    if (event == json::parse_event_t::object_end) open_objects.pop_back();
    if (event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      check(open_objects.back().insert(key).second, "{}: safetensors header repeats key '{}'", file, key);
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    fail("{}: safetensors header is not valid JSON: {}", file, e.what());
  }
}

void check_metadata(const json& metadata, const std::string& file) {
  check(metadata.is_object(), "{}: __metadata__ must be an object of strings", file);
  for (const auto& [key, value] : metadata.items()) {
    check(value.is_string(), "{}: __metadata__ entry '{}' must be a string", file, key);
  }
}

DType parse_entry_dtype(const json& entry, const std::string& file, const std::string& name) {
  auto it = entry.find("dtype");
  check(it != entry.end() && it->is_string(), "{}: tensor '{}': 'dtype' must be a string", file, name);
  const auto& text = it->get_ref<const std::string&>();
  DType dtype;
  check(parse_dtype(text, &dtype), "{}: tensor '{}': unsupported dtype '{}'", file, name, text);
  return dtype;
}

// Returns the shape and, through `nbytes`, numel × dtype size, with every product checked for
// overflow: numel must fit int64_t because TensorView::numel() returns it.
std::vector<int64_t> parse_entry_shape(const json& entry, DType dtype, const std::string& file,
                                       const std::string& name, uint64_t* nbytes) {
  auto it = entry.find("shape");
  check(it != entry.end() && it->is_array(), "{}: tensor '{}': 'shape' must be an array", file, name);
  std::vector<int64_t> shape;
  uint64_t numel = 1;
  for (const auto& dim_json : *it) {
    uint64_t dim = 0;
    check(as_unsigned(dim_json, &dim), "{}: tensor '{}': shape entry {} is not a non-negative integer",
          file, name, brief(dim_json));
    bool overflow = __builtin_mul_overflow(numel, dim, &numel) ||
                    numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    check(!overflow, "{}: tensor '{}': shape {} has too many elements", file, name, brief(*it));
    shape.push_back(static_cast<int64_t>(dim));
  }
  check(!__builtin_mul_overflow(numel, dtype_size(dtype), nbytes), "{}: tensor '{}': shape {} is too large",
        file, name, brief(*it));
  return shape;
}

Span parse_entry_offsets(const json& entry, uint64_t data_size, const std::string& file, const std::string& name) {
  auto it = entry.find("data_offsets");
  Span span;
  bool ok = it != entry.end() && it->is_array() && it->size() == 2 && as_unsigned((*it)[0], &span.begin) &&
            as_unsigned((*it)[1], &span.end);
  check(ok, "{}: tensor '{}': 'data_offsets' must be [begin, end] of non-negative integers", file, name);
  check(span.begin <= span.end && span.end <= data_size,
        "{}: tensor '{}': data_offsets [{}, {}] outside the data section of {} bytes", file, name, span.begin,
        span.end, data_size);
  return span;
}

// One header entry → TensorView, checked against the data section [data, data + data_size).
TensorView parse_entry(const std::string& name, const json& entry, const uint8_t* data, uint64_t data_size,
                       const std::string& file, Span* span) {
  check(entry.is_object(), "{}: tensor '{}': header entry must be an object", file, name);
  for (const auto& [key, value] : entry.items()) {
    check(key == "dtype" || key == "shape" || key == "data_offsets", "{}: tensor '{}': unknown key '{}'", file,
          name, key);
  }
  TensorView view;
  view.name = name;
  view.dtype = parse_entry_dtype(entry, file, name);
  uint64_t nbytes = 0;
  view.shape = parse_entry_shape(entry, view.dtype, file, name, &nbytes);
  *span = parse_entry_offsets(entry, data_size, file, name);
  check(span->end - span->begin == nbytes,
        "{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets [{}, {}] span {}", file, name,
        brief(entry.at("shape")), dtype_name(view.dtype), nbytes, span->begin, span->end, span->end - span->begin);
  view.data = data + span->begin;
  view.nbytes = nbytes;
  return view;
}

// Two tensors sharing bytes would alias silently; zero-size spans hold no bytes and may sit anywhere.
void check_no_overlap(std::vector<Span> spans, const std::string& file) {
  std::erase_if(spans, [](const Span& s) { return s.begin == s.end; });
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    const Span& prev = spans[i - 1];
    const Span& next = spans[i];
    check(next.begin >= prev.end, "{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", file, *prev.name,
          prev.begin, prev.end, *next.name, next.begin, next.end);
  }
}

std::string errno_text() { return std::strerror(errno); }

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "{}: cannot open: {}", path.string(), errno_text());
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

// A shard name comes from a file the user downloaded; it must name a file inside the model
// directory, never a path that walks out of it.
void check_shard_name(const std::string& shard, const std::filesystem::path& index) {
  bool ok = !shard.empty() && shard != "." && shard != ".." && shard.find('/') == std::string::npos &&
            shard.find('\\') == std::string::npos && shard.find('\0') == std::string::npos;
  check(ok, "{}: shard file name '{}' must be a plain file name inside the model directory", index.string(),
        shard);
}

// weight_map of the index: {tensor name: shard file name}, validated.
std::map<std::string, std::string> read_weight_map(const std::filesystem::path& index) {
  json root = read_json_file(index);
  check(root.is_object(), "{}: must be a JSON object", index.string());
  auto it = root.find("weight_map");
  check(it != root.end() && it->is_object(), "{}: 'weight_map' must be an object", index.string());
  check(!it->empty(), "{}: 'weight_map' is empty", index.string());
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, shard] : it->items()) {
    check(shard.is_string(), "{}: weight_map entry '{}' must be a shard file name", index.string(), tensor);
    check_shard_name(shard.get<std::string>(), index);
    weight_map.emplace(tensor, shard.get<std::string>());
  }
  return weight_map;
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

std::map<std::string, TensorView> SafetensorsFile::parse(const uint8_t* bytes, size_t size,
                                                         const std::string& file_name) {
  const std::string& file = file_name;
  check(size >= 8, "{}: {} bytes is too short for a safetensors file (needs an 8-byte header length)", file, size);
  uint64_t header_len = read_u64_le(bytes);
  check(header_len <= size - 8, "{}: header length {} runs past the end of the file ({} bytes)", file, header_len,
        size);
  check(header_len <= kMaxHeaderBytes, "{}: header length {} exceeds the {}-byte limit", file, header_len,
        kMaxHeaderBytes);
  std::string_view text(reinterpret_cast<const char*>(bytes + 8), header_len);
  json header = parse_header_json(text, file);
  check(header.is_object(), "{}: safetensors header must be a JSON object, got {}", file, header.type_name());

  const uint8_t* data = bytes + 8 + header_len;
  uint64_t data_size = size - 8 - header_len;
  std::map<std::string, TensorView> tensors;
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      check_metadata(entry, file);
      continue;
    }
    Span span;
    auto slot = tensors.emplace(name, parse_entry(name, entry, data, data_size, file, &span)).first;
    span.name = &slot->first;  // JSON object keys are unique, so this is the entry just parsed
    spans.push_back(span);
  }
  check_no_overlap(std::move(spans), file);
  return tensors;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string name = path.string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, "{}: cannot open: {}", name, errno_text());
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    bool is_dir = S_ISDIR(info.st_mode);
    ::close(fd);
    fail("{}: {}", name, is_dir ? "is a directory, not a safetensors file" : "not a regular file");
  }
  if (info.st_size == 0) {
    ::close(fd);
    fail("{}: file is empty", name);
  }
  // Owned by `file` from here on, so a parse error below unmaps it.
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  void* map = ::mmap(nullptr, static_cast<size_t>(info.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  check(map != MAP_FAILED, "{}: mmap failed: {}", name, std::strerror(map_errno));
  file->map_ = map;
  file->map_size_ = static_cast<size_t>(info.st_size);
  file->tensors_ = parse(static_cast<const uint8_t*>(map), file->map_size_, name);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

WeightStore WeightStore::open(const std::filesystem::path& model_dir) {
  WeightStore store;
  store.dir_ = model_dir;
  const auto index = model_dir / kIndexName;
  const auto single = model_dir / kSingleName;
  std::error_code ignored;  // an unreadable path counts as absent; opening it reports why
  if (std::filesystem::exists(index, ignored)) {
    store.open_sharded(index);
  } else if (std::filesystem::exists(single, ignored)) {
    store.files_.push_back(SafetensorsFile::open(single));
    for (const auto& [name, view] : store.files_.back()->tensors()) store.tensors_.emplace(name, view);
  } else {
    fail("no {} or {} in {}", kSingleName, kIndexName, model_dir.string());
  }
  return store;
}

// The index is the authority on which tensors exist (as in Hugging Face's loader); every shard's
// header is still checked for names that another shard also defines.
void WeightStore::open_sharded(const std::filesystem::path& index) {
  const auto weight_map = read_weight_map(index);
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;  // shard file name → file
  for (const auto& [tensor, shard] : weight_map) {
    if (!shards.contains(shard)) shards.emplace(shard, SafetensorsFile::open(dir_ / shard));
  }
  std::map<std::string_view, const std::string*> owner;  // tensor name → shard defining it
  for (const auto& [shard, file] : shards) {
    files_.push_back(file);
    for (const auto& [name, view] : file->tensors()) {
      auto [it, inserted] = owner.emplace(name, &shard);
      check(inserted, "{}: tensor '{}' is defined in both shard '{}' and shard '{}'", index.string(), name,
            *it->second, shard);
    }
  }
  for (const auto& [tensor, shard] : weight_map) {
    const auto& in_shard = shards.at(shard)->tensors();
    auto it = in_shard.find(tensor);
    check(it != in_shard.end(), "{}: tensor '{}' is listed in shard '{}' but that shard does not contain it",
          index.string(), tensor, shard);
    tensors_.emplace(tensor, it->second);
  }
}

bool WeightStore::contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

const TensorView& WeightStore::get(std::string_view name) const {
  auto it = tensors_.find(name);
  check(it != tensors_.end(), "tensor '{}' not found in {}", name, dir_.string());
  return it->second;
}

}  // namespace vortex

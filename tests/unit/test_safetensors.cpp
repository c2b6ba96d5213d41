// Safetensors loader: round trips of tensors written by a small in-test writer, sharded
// checkpoints, and one test per way a header or directory can be wrong. Every error test checks
// that the message names the file and tensor at fault, since that is what a user sees.
#include "io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "core/dtype.h"
#include "core/error.h"

namespace vortex {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// ---- a minimal safetensors writer -----------------------------------------------------------

struct TensorSpec {
  std::string name;
  std::string dtype;           // safetensors spelling, passed through unchecked so tests can lie
  std::vector<int64_t> shape;
  std::string bytes;           // raw little-endian element bytes
};

// [u64 header length][header][data]; no padding, so odd header lengths are exercised too.
std::string pack_raw(const std::string& header, const std::string& data) {
  std::string file(8, '\0');
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>(length >> (8 * i) & 0xff);
  return file + header + data;
}

// Lays the tensors out back to back; `edit` may corrupt the header before it is serialised.
std::string pack(const std::vector<TensorSpec>& tensors, const json& metadata = nullptr,
                 const std::function<void(json&)>& edit = nullptr) {
  json header = json::object();
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::string data;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  if (edit) edit(header);
  return pack_raw(header.dump(), data);
}

template <typename T>
std::string to_bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

TensorSpec f32_tensor(const std::string& name, std::vector<int64_t> shape, uint32_t seed) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  return {name, "F32", shape, to_bytes(test::random_floats(numel, seed))};
}

void write_file(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
  ASSERT_TRUE(out.good()) << path;
}

// The Error message of `body`, or a test failure when it does not throw vortex::Error.
std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected vortex::Error";
  return "";
}

std::string parse_error(const std::string& file) {
  return error_of([&] {
    SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "bad.safetensors");
  });
}

// ---- round trips ----------------------------------------------------------------------------

TEST(Safetensors, RoundTripsF32Bf16F16Exactly) {
  auto values = test::random_floats(3 * 17, 7, -4.0f, 4.0f);
  std::vector<uint16_t> bf16(values.size()), f16(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    bf16[i] = f32_to_bf16(values[i]);
    f16[i] = f32_to_f16(values[i]);
  }
  auto dir = test::scratch_dir("st_roundtrip");
  write_file(dir / "model.safetensors", pack({{"a.f32", "F32", {3, 17}, to_bytes(values)},
                                               {"b.bf16", "BF16", {17, 3}, to_bytes(bf16)},
                                               {"c.f16", "F16", {51}, to_bytes(f16)}}));
  auto store = WeightStore::open(dir);
  ASSERT_EQ(store.tensors().size(), 3u);

  const auto& a = store.get("a.f32");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3, 17}));
  EXPECT_EQ(a.numel(), 51);
  ASSERT_EQ(a.nbytes, values.size() * 4);
  EXPECT_EQ(std::memcmp(a.data, values.data(), a.nbytes), 0);

  const auto& b = store.get("b.bf16");
  EXPECT_EQ(b.dtype, DType::kBF16);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{17, 3}));
  ASSERT_EQ(b.nbytes, bf16.size() * 2);
  EXPECT_EQ(std::memcmp(b.data, bf16.data(), b.nbytes), 0);

  const auto& c = store.get("c.f16");
  EXPECT_EQ(c.dtype, DType::kF16);
  ASSERT_EQ(c.nbytes, f16.size() * 2);
  EXPECT_EQ(std::memcmp(c.data, f16.data(), c.nbytes), 0);
  EXPECT_TRUE(store.contains("c.f16"));
  EXPECT_FALSE(store.contains("d"));
}

TEST(Safetensors, DataPointsAfterHeader) {
  std::string file = pack({f32_tensor("x", {2}, 1), f32_tensor("y", {3}, 2)});
  auto tensors = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "f");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);
  const auto* base = reinterpret_cast<const uint8_t*>(file.data()) + 8 + header_len;
  EXPECT_EQ(tensors.at("x").data, base);
  EXPECT_EQ(tensors.at("y").data, base + 8);
}

TEST(Safetensors, SkipsMetadata) {
  std::string file = pack({f32_tensor("w", {4}, 3)}, json{{"format", "pt"}, {"note", "x"}});
  auto tensors = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "f");
  ASSERT_EQ(tensors.size(), 1u);
  EXPECT_TRUE(tensors.contains("w"));
}

TEST(Safetensors, AcceptsZeroSizeTensorsAndScalars) {
  std::string file = pack({{"empty", "F32", {0, 5}, ""}, f32_tensor("scalar", {}, 4), {"also_empty", "BF16", {0}, ""}});
  auto tensors = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "f");
  EXPECT_EQ(tensors.at("empty").nbytes, 0u);
  EXPECT_EQ(tensors.at("empty").numel(), 0);
  EXPECT_EQ(tensors.at("scalar").numel(), 1);
  EXPECT_EQ(tensors.at("scalar").nbytes, 4u);
}

// Two shards, one tensor per shard plus one more, read through the index.
std::filesystem::path make_sharded(const std::string& name, const json& weight_map) {
  auto dir = test::scratch_dir(name);
  write_file(dir / "s1.safetensors", pack({f32_tensor("embed", {5, 3}, 10), f32_tensor("norm", {3}, 11)}));
  write_file(dir / "s2.safetensors", pack({f32_tensor("head", {3, 5}, 12)}));
  write_file(dir / "model.safetensors.index.json", json{{"metadata", {{"total_size", 132}}}, {"weight_map", weight_map}}.dump());
  return dir;
}

TEST(Safetensors, OpensShardedCheckpoint) {
  auto dir = make_sharded("st_sharded", {{"embed", "s1.safetensors"}, {"norm", "s1.safetensors"}, {"head", "s2.safetensors"}});
  // A stray single file must be ignored when the index exists.
  write_file(dir / "model.safetensors", "garbage");
  auto store = WeightStore::open(dir);
  ASSERT_EQ(store.tensors().size(), 3u);
  auto head = test::random_floats(15, 12);
  EXPECT_EQ(store.get("head").shape, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(std::memcmp(store.get("head").data, head.data(), 60), 0);
  auto embed = test::random_floats(15, 10);
  EXPECT_EQ(std::memcmp(store.get("embed").data, embed.data(), 60), 0);
}

// ---- header errors --------------------------------------------------------------------------

TEST(SafetensorsErrors, HeaderLengthBeyondFile) {
  std::string file = pack({f32_tensor("w", {4}, 1)});
  file[0] = static_cast<char>(0xff);
  file[1] = static_cast<char>(0xff);
  std::string msg = parse_error(file);
  EXPECT_THAT(msg, HasSubstr("bad.safetensors"));
  EXPECT_THAT(msg, HasSubstr("header length 65535"));
}

TEST(SafetensorsErrors, HeaderLengthHugeDoesNotWrap) {
  std::string file = pack({f32_tensor("w", {4}, 1)});
  std::memset(file.data(), 0xff, 8);  // 2^64 - 1: header_len + 8 would wrap around
  EXPECT_THAT(parse_error(file), HasSubstr("bad.safetensors: header length 18446744073709551615 runs past the end"));
}

TEST(SafetensorsErrors, HeaderLengthOverLimit) {
  // A file big enough to hold the claimed header, so only the 100 MB cap can reject it.
  constexpr uint64_t kClaimed = 100'000'001;
  std::string file(8 + kClaimed, ' ');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>(kClaimed >> (8 * i) & 0xff);
  EXPECT_THAT(parse_error(file), HasSubstr("bad.safetensors: header length 100000001 exceeds the 100000000-byte limit"));
}

TEST(SafetensorsErrors, TruncatedDataSection) {
  std::string file = pack({f32_tensor("first", {4}, 1), f32_tensor("second", {4}, 2)});
  file.resize(file.size() - 1);
  std::string msg = parse_error(file);
  EXPECT_THAT(msg, HasSubstr("bad.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'second'"));
  EXPECT_THAT(msg, HasSubstr("outside the data section of 31 bytes"));
}

TEST(SafetensorsErrors, OffsetsOutOfRange) {
  std::string file = pack({f32_tensor("w", {4}, 1)}, nullptr, [](json& h) { h["w"]["data_offsets"] = {1000, 1016}; });
  std::string msg = parse_error(file);
  EXPECT_THAT(msg, HasSubstr("'w'"));
  EXPECT_THAT(msg, HasSubstr("[1000, 1016]"));
}

TEST(SafetensorsErrors, OffsetsReversed) {
  std::string file = pack({f32_tensor("w", {0}, 1), f32_tensor("v", {4}, 2)}, nullptr,
                          [](json& h) { h["w"]["data_offsets"] = {8, 0}; });
  EXPECT_THAT(parse_error(file), HasSubstr("tensor 'w': data_offsets [8, 0]"));
}

TEST(SafetensorsErrors, OverlappingOffsets) {
  std::string file = pack({f32_tensor("a", {4}, 1), f32_tensor("b", {4}, 2)}, nullptr,
                          [](json& h) { h["b"]["data_offsets"] = {8, 24}; });
  std::string msg = parse_error(file);
  EXPECT_THAT(msg, HasSubstr("bad.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'a'"));
  EXPECT_THAT(msg, HasSubstr("'b'"));
  EXPECT_THAT(msg, HasSubstr("overlap"));
}

TEST(SafetensorsErrors, ShapeDisagreesWithSpan) {
  std::string file = pack({f32_tensor("w", {4}, 1)}, nullptr, [](json& h) { h["w"]["shape"] = {2, 3}; });
  std::string msg = parse_error(file);
  EXPECT_THAT(msg, HasSubstr("tensor 'w'"));
  EXPECT_THAT(msg, HasSubstr("needs 24 bytes"));
  EXPECT_THAT(msg, HasSubstr("span 16"));
}

TEST(SafetensorsErrors, UnknownDtype) {
  std::string file = pack({{"w", "F8_E4M3", {4}, std::string(4, 'x')}});
  std::string msg = parse_error(file);
  EXPECT_THAT(msg, HasSubstr("tensor 'w'"));
  EXPECT_THAT(msg, HasSubstr("'F8_E4M3'"));
}

TEST(SafetensorsErrors, InvalidJsonHeader) {
  std::string msg = parse_error(pack_raw("{\"w\": {\"dtype\": ", ""));
  EXPECT_THAT(msg, HasSubstr("bad.safetensors"));
  EXPECT_THAT(msg, HasSubstr("not valid JSON"));
  EXPECT_THAT(msg, HasSubstr("parse error"));  // nlohmann's own explanation is kept
}

TEST(SafetensorsErrors, NonObjectHeader) {
  std::string msg = parse_error(pack_raw("[1, 2, 3]", ""));
  EXPECT_THAT(msg, HasSubstr("bad.safetensors"));
  EXPECT_THAT(msg, HasSubstr("must be a JSON object, got array"));
}

TEST(SafetensorsErrors, NegativeShapeEntry) {
  std::string file = pack({f32_tensor("w", {4}, 1)}, nullptr, [](json& h) { h["w"]["shape"] = {-4}; });
  std::string msg = parse_error(file);
  EXPECT_THAT(msg, HasSubstr("tensor 'w'"));
  EXPECT_THAT(msg, HasSubstr("shape entry -4"));
}

TEST(SafetensorsErrors, FractionalShapeEntry) {
  std::string file = pack({f32_tensor("w", {4}, 1)}, nullptr, [](json& h) { h["w"]["shape"] = {4.0}; });
  EXPECT_THAT(parse_error(file), HasSubstr("tensor 'w': shape entry 4.0"));
}

TEST(SafetensorsErrors, ShapeProductOverflow) {
  std::string file = pack({f32_tensor("w", {4}, 1)}, nullptr,
                          [](json& h) { h["w"]["shape"] = {1ull << 32, 1ull << 32}; });
  EXPECT_THAT(parse_error(file), HasSubstr("tensor 'w': shape [4294967296,4294967296] has too many elements"));
  // numel fits int64 but numel × 4 bytes does not.
  file = pack({f32_tensor("v", {4}, 1)}, nullptr, [](json& h) { h["v"]["shape"] = {1ull << 62}; });
  EXPECT_THAT(parse_error(file), HasSubstr("tensor 'v': shape [4611686018427387904] is too large"));
}

TEST(SafetensorsErrors, UnknownTensorKey) {
  std::string file = pack({f32_tensor("w", {4}, 1)}, nullptr, [](json& h) { h["w"]["strides"] = {1}; });
  EXPECT_THAT(parse_error(file), HasSubstr("tensor 'w': unknown key 'strides'"));
}

TEST(SafetensorsErrors, MissingTensorKey) {
  std::string file = pack({f32_tensor("w", {4}, 1)}, nullptr, [](json& h) { h["w"].erase("data_offsets"); });
  EXPECT_THAT(parse_error(file), HasSubstr("tensor 'w': 'data_offsets'"));
}

TEST(SafetensorsErrors, MetadataMustHoldStrings) {
  std::string file = pack({f32_tensor("w", {4}, 1)}, json{{"total", 5}});
  EXPECT_THAT(parse_error(file), HasSubstr("bad.safetensors: __metadata__ entry 'total'"));
}

TEST(SafetensorsErrors, DuplicateTensorInHeader) {
  std::string entry = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  std::string msg = parse_error(pack_raw("{\"w\":" + entry + ",\"w\":" + entry + "}", "abcd"));
  EXPECT_THAT(msg, HasSubstr("bad.safetensors: safetensors header repeats key 'w'"));
  // Inside an entry too: a second data_offsets must not silently win.
  msg = parse_error(pack_raw(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"data_offsets":[0,4]}})", "abcd"));
  EXPECT_THAT(msg, HasSubstr("repeats key 'data_offsets'"));
}

TEST(SafetensorsErrors, FileShorterThanEightBytes) {
  auto dir = test::scratch_dir("st_short");
  write_file(dir / "model.safetensors", "abc");
  std::string msg = error_of([&] { WeightStore::open(dir); });
  EXPECT_THAT(msg, HasSubstr((dir / "model.safetensors").string()));
  EXPECT_THAT(msg, HasSubstr("3 bytes is too short"));
}

// ---- file and directory errors --------------------------------------------------------------

TEST(SafetensorsErrors, MissingFile) {
  auto path = test::scratch_dir("st_missing") / "nope.safetensors";
  std::string msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_THAT(msg, HasSubstr(path.string()));
  EXPECT_THAT(msg, HasSubstr("cannot open"));
}

TEST(SafetensorsErrors, DirectoryInsteadOfFile) {
  auto dir = test::scratch_dir("st_dir");
  std::string msg = error_of([&] { SafetensorsFile::open(dir); });
  EXPECT_THAT(msg, HasSubstr(dir.string()));
  EXPECT_THAT(msg, HasSubstr("is a directory"));
}

TEST(SafetensorsErrors, EmptyFile) {
  auto path = test::scratch_dir("st_empty") / "empty.safetensors";
  write_file(path, "");
  std::string msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_THAT(msg, HasSubstr(path.string()));
  EXPECT_THAT(msg, HasSubstr("empty"));
}

TEST(SafetensorsErrors, OpenNamesPathOnHeaderError) {
  auto path = test::scratch_dir("st_open_bad") / "x.safetensors";
  write_file(path, pack({f32_tensor("w", {4}, 1)}, nullptr, [](json& h) { h["w"]["dtype"] = "Q4"; }));
  std::string msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_THAT(msg, HasSubstr(path.string() + ": tensor 'w': unsupported dtype 'Q4'"));
}

TEST(SafetensorsErrors, NoCheckpointInDirectory) {
  auto dir = test::scratch_dir("st_nothing");
  std::string msg = error_of([&] { WeightStore::open(dir); });
  EXPECT_THAT(msg, HasSubstr("no model.safetensors or model.safetensors.index.json in " + dir.string()));
}

TEST(SafetensorsErrors, GetMissingTensor) {
  auto dir = test::scratch_dir("st_get_missing");
  write_file(dir / "model.safetensors", pack({f32_tensor("w", {4}, 1)}));
  auto store = WeightStore::open(dir);
  std::string msg = error_of([&] { store.get("lm_head.weight"); });
  EXPECT_THAT(msg, HasSubstr("tensor 'lm_head.weight' not found in " + dir.string()));
}

TEST(SafetensorsErrors, IndexNamesTensorMissingFromShard) {
  auto dir = make_sharded("st_shard_missing",
                          {{"embed", "s1.safetensors"}, {"head", "s2.safetensors"}, {"ghost", "s2.safetensors"}});
  std::string msg = error_of([&] { WeightStore::open(dir); });
  EXPECT_THAT(msg, HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(msg, HasSubstr("tensor 'ghost'"));
  EXPECT_THAT(msg, HasSubstr("'s2.safetensors'"));
}

TEST(SafetensorsErrors, IndexPointsAtWrongShard) {
  auto dir = make_sharded("st_shard_wrong", {{"embed", "s2.safetensors"}, {"head", "s2.safetensors"}});
  std::string msg = error_of([&] { WeightStore::open(dir); });
  EXPECT_THAT(msg, HasSubstr("tensor 'embed' is listed in shard 's2.safetensors'"));
}

TEST(SafetensorsErrors, IndexNamesMissingShardFile) {
  auto dir = make_sharded("st_shard_absent", {{"embed", "s3.safetensors"}});
  std::string msg = error_of([&] { WeightStore::open(dir); });
  EXPECT_THAT(msg, HasSubstr((dir / "s3.safetensors").string() + ": cannot open"));
}

TEST(SafetensorsErrors, ShardPathEscapesDirectory) {
  for (const char* shard : {"../s1.safetensors", "sub/s1.safetensors", "/etc/passwd", "..", "."}) {
    auto dir = make_sharded("st_shard_escape", {{"embed", shard}});
    std::string msg = error_of([&] { WeightStore::open(dir); });
    EXPECT_THAT(msg, HasSubstr("model.safetensors.index.json"));
    EXPECT_THAT(msg, HasSubstr(std::string("shard file name '") + shard + "'"));
  }
}

TEST(SafetensorsErrors, TensorInTwoShards) {
  auto dir = make_sharded("st_shard_dup", {{"embed", "s1.safetensors"}, {"head", "s2.safetensors"}});
  write_file(dir / "s2.safetensors", pack({f32_tensor("head", {3, 5}, 12), f32_tensor("norm", {3}, 13)}));
  std::string msg = error_of([&] { WeightStore::open(dir); });
  EXPECT_THAT(msg, HasSubstr("tensor 'norm' is defined in both shard 's1.safetensors' and shard 's2.safetensors'"));
}

TEST(SafetensorsErrors, IndexWithoutWeightMap) {
  auto dir = test::scratch_dir("st_index_bad");
  write_file(dir / "model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_THAT(error_of([&] { WeightStore::open(dir); }),
              HasSubstr((dir / "model.safetensors.index.json").string() + ": 'weight_map' must be an object"));
  write_file(dir / "model.safetensors.index.json", R"({"weight_map": )");
  std::string msg = error_of([&] { WeightStore::open(dir); });
  EXPECT_THAT(msg, HasSubstr((dir / "model.safetensors.index.json").string() + ": not valid JSON"));
}

}  // namespace
}  // namespace vortex

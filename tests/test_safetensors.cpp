// vla::io::Safetensors (vla/io/safetensors.hpp): files built in memory round-trip F32/F16/BF16 values
// exactly (every half pattern, subnormals, inf, NaN), metadata and zero-element tensors; every broken
// file is refused with a FormatError that names the source and the tensor.
#include <catch2/catch.hpp>
#include <vla/io/safetensors.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

using vla::io::DType;
using vla::io::FormatError;
using vla::io::Safetensors;
using Bytes = std::vector<std::uint8_t>;

namespace {

struct Entry {
  std::string name, dtype;
  std::vector<std::int64_t> shape;
  Bytes data;
};

Bytes f32_bytes(const std::vector<float>& v) {
  Bytes out;
  for (float f : v) {
    std::uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    for (int i = 0; i < 4; ++i) out.push_back(std::uint8_t(b >> (8 * i)));
  }
  return out;
}

Bytes u16_bytes(const std::vector<std::uint16_t>& v) {
  Bytes out;
  for (std::uint16_t h : v) {
    out.push_back(std::uint8_t(h & 0xff));
    out.push_back(std::uint8_t(h >> 8));
  }
  return out;
}

std::uint32_t bits_of(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

/// A file from header text and data bytes as given; `n` overrides the header length field.
Bytes raw_file(const std::string& header, const Bytes& data = {}, std::uint64_t n = ~std::uint64_t(0)) {
  if (n == ~std::uint64_t(0)) n = header.size();
  Bytes out;
  for (int i = 0; i < 8; ++i) out.push_back(std::uint8_t(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

/// A file as the reference writer lays it out: entries one after another in the order given, the
/// header padded with spaces to a multiple of 8 bytes.
Bytes write_file(const std::vector<Entry>& entries, const nlohmann::json& metadata = nullptr) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.is_null()) h["__metadata__"] = metadata;
  Bytes data;
  for (const Entry& e : entries) {
    h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {data.size(), data.size() + e.data.size()}}};
    data.insert(data.end(), e.data.begin(), e.data.end());
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return raw_file(text, data);
}

/// parse() must throw FormatError whose message names the source and contains every one of `parts`.
void expect_rejected(const Bytes& bytes, const std::vector<std::string>& parts) {
  auto parse = [&] { return Safetensors::parse(bytes, "case.safetensors"); };
  REQUIRE_THROWS_AS(parse(), FormatError);
  REQUIRE_THROWS_WITH(parse(), Catch::Contains("case.safetensors: "));
  for (const std::string& p : parts) REQUIRE_THROWS_WITH(parse(), Catch::Contains(p));
}

/// A header of one tensor 'w' whose entry is `entry` (JSON text), with `data` bytes.
Bytes one_tensor(const std::string& entry, const Bytes& data = Bytes(8, 0)) {
  return raw_file("{\"w\":" + entry + "}", data);
}

/// The value of half `h`, computed independently of the reader (in double, from the definition).
double half_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (e == 0) v = std::ldexp(double(m), -24);
  else v = std::ldexp(double(1024 + m), e - 25);
  return s ? -v : v;
}

std::filesystem::path temp_file(const std::string& stem) {
  return std::filesystem::temp_directory_path() /
         ("vla_test_" + stem + "_" + std::to_string(std::random_device{}()) + ".safetensors");
}

}  // namespace

TEST_CASE("safetensors: F32, F16, BF16 tensors, metadata and look-ups round-trip", "[safetensors]") {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> f32 = {1.f, -2.5f, 0.f, -0.f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                                  std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(), 3.f};
  const std::vector<std::uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7E01, 0x8000};
  const std::vector<std::uint16_t> bf16 = {0x3F80, 0xC000, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0x8000};
  // Names in no sorted order and laid out out of name order: the reader must not depend on either.
  const Bytes file = write_file({{"z.f32", "F32", {2, 5}, f32_bytes(f32)},
                                 {"a.f16", "F16", {10}, u16_bytes(f16)},
                                 {"m.bf16", "BF16", {2, 2, 2}, u16_bytes(bf16)}},
                                {{"format", "pt"}, {"note", "vla test"}});
  const Safetensors st = Safetensors::parse(file, "rt.safetensors");
  CHECK(st.source() == "rt.safetensors");
  CHECK(st.names() == std::vector<std::string>{"a.f16", "m.bf16", "z.f32"});
  CHECK(st.contains("m.bf16"));
  CHECK_FALSE(st.contains("__metadata__"));
  CHECK(st.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "vla test"}});

  const vla::io::TensorInfo& z = st.info("z.f32");
  CHECK(z.name == "z.f32");
  CHECK(z.dtype == DType::F32);
  CHECK(z.shape == std::vector<std::int64_t>{2, 5});
  CHECK(z.begin == 0);
  CHECK(z.end == 40);
  CHECK(st.info("a.f16").begin == 40);
  CHECK(std::string(vla::io::dtype_name(st.info("m.bf16").dtype)) == "BF16");

  // F32: bit for bit, in order (row-major as stored), NaN included.
  const std::vector<float> got32 = st.to_float("z.f32", {2, 5});
  REQUIRE(got32.size() == f32.size());
  for (std::size_t i = 0; i < f32.size(); ++i) CHECK(bits_of(got32[i]) == bits_of(f32[i]));

  // F16: 1, −2, the smallest subnormal 2^-24, the largest subnormal, the smallest normal 2^-14,
  // the largest finite 65504, ±inf, a NaN (payload kept), −0.
  const std::vector<float> got16 = st.to_float("a.f16", {10});
  REQUIRE(got16.size() == 10);
  CHECK(got16[0] == 1.f);
  CHECK(got16[1] == -2.f);
  CHECK(got16[2] == std::ldexp(1.f, -24));
  CHECK(got16[3] == std::ldexp(1023.f, -24));
  CHECK(got16[4] == std::ldexp(1.f, -14));
  CHECK(got16[5] == 65504.f);
  CHECK(got16[6] == inf);
  CHECK(got16[7] == -inf);
  CHECK(std::isnan(got16[8]));
  CHECK(bits_of(got16[8]) == 0x7FC02000u);
  CHECK(bits_of(got16[9]) == 0x80000000u);

  // BF16: the top half of a float.
  const std::vector<float> gotb = st.to_float("m.bf16", {2, 2, 2});
  REQUIRE(gotb.size() == 8);
  CHECK(gotb[0] == 1.f);
  CHECK(gotb[1] == -2.f);
  CHECK(gotb[2] == 3.38953139e38f);
  CHECK(gotb[3] == std::ldexp(1.f, -133));
  CHECK(gotb[4] == inf);
  CHECK(gotb[5] == -inf);
  CHECK(std::isnan(gotb[6]));
  CHECK(bits_of(gotb[7]) == 0x80000000u);

  REQUIRE_THROWS_WITH(st.info("missing"), Catch::Contains("rt.safetensors: no tensor 'missing'"));
  REQUIRE_THROWS_AS(st.to_float("missing", {1}), FormatError);
  REQUIRE_THROWS_WITH(st.to_float("z.f32", {5, 2}),
                      Catch::Contains("tensor 'z.f32'") && Catch::Contains("expected shape [5, 2], stored [2, 5]"));
  REQUIRE_THROWS_WITH(st.to_float("z.f32", {10}), Catch::Contains("expected shape [10], stored [2, 5]"));
}

TEST_CASE("safetensors: every half-precision pattern widens exactly", "[safetensors]") {
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = std::uint16_t(i);
  const Safetensors st = Safetensors::parse(write_file({{"h", "F16", {65536}, u16_bytes(all)}}));
  const std::vector<float> got = st.to_float("h", {65536});
  REQUIRE(got.size() == all.size());
  int wrong = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const double want = half_value(all[i]);
    const bool ok = std::isnan(want) ? std::isnan(got[i])
                                     : double(got[i]) == want && std::signbit(got[i]) == std::signbit(want);
    if (!ok && ++wrong <= 5) UNSCOPED_INFO("half 0x" << std::hex << i << ": got " << got[i] << ", want " << want);
  }
  CHECK(wrong == 0);
}

TEST_CASE("safetensors: zero-element and scalar tensors, an empty file, padding", "[safetensors]") {
  const Bytes file = write_file({{"empty", "F32", {0, 4}, {}},
                                 {"scalar", "BF16", {}, u16_bytes({0x4040})},
                                 {"also_empty", "F16", {3, 0}, {}}});
  const Safetensors st = Safetensors::parse(file);
  CHECK(st.source() == "<memory>");
  CHECK(st.names().size() == 3);
  CHECK(st.to_float("empty", {0, 4}).empty());
  CHECK(st.to_float("also_empty", {3, 0}).empty());
  CHECK(st.to_float("scalar", {}) == std::vector<float>{3.f});
  CHECK(st.metadata().empty());
  REQUIRE_THROWS_WITH(st.to_float("empty", {0}), Catch::Contains("tensor 'empty'") && Catch::Contains("stored [0, 4]"));

  // The reference writer's empty file: "{}" padded with spaces, no data.
  const Safetensors none = Safetensors::parse(raw_file("{}      "));
  CHECK(none.names().empty());
  // Two zero-element tensors may share an offset, also at a tensor's start or end.
  CHECK_NOTHROW(Safetensors::parse(raw_file(
      R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F16","shape":[0],"data_offsets":[0,0]},)"
      R"("c":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"d":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
      Bytes(4, 0))));
}

TEST_CASE("safetensors: a broken length field or header is refused", "[safetensors][invalid]") {
  SECTION("shorter than 8 bytes") { expect_rejected({1, 2, 3}, {"file of 3 bytes", "shorter than the 8-byte"}); }
  SECTION("header length above the limit") {
    expect_rejected(raw_file("{}", {}, Safetensors::kMaxHeaderBytes + 1), {"header length 100000001", "limit"});
  }
  SECTION("header length beyond the file") {
    expect_rejected(raw_file("{}", {}, 3), {"header length 3 exceeds the 2 bytes", "truncated"});
    expect_rejected(raw_file("", {}, ~std::uint64_t(0) - 1), {"exceeds the limit"});
  }
  SECTION("not JSON") {
    expect_rejected(raw_file("{not json}"), {"not valid JSON"});
    expect_rejected(raw_file("{\"w\":1} trailing"), {"not valid JSON"});
    expect_rejected(raw_file("{\"a\":\"\xff\"}"), {"not valid JSON"});  // invalid UTF-8
    expect_rejected(raw_file("{/*c*/}"), {"not valid JSON"});
    // nlohmann alone would stop at a NUL and accept what comes before it.
    expect_rejected(raw_file(std::string("{}\0", 3)), {"NUL byte at byte 2"});
    expect_rejected(raw_file(std::string("{}\0garbage", 10)), {"NUL byte"});
  }
  SECTION("not an object") {
    expect_rejected(raw_file("[1, 2]"), {"header is a JSON array, not an object"});
    expect_rejected(raw_file("7"), {"header is a JSON number"});
  }
  SECTION("nested deeper than a header can be") {
    expect_rejected(raw_file(R"({"w":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}})"), {"nests deeper"});
    expect_rejected(raw_file(std::string(5000, '[')), {"nests deeper"});
    // Brackets inside strings are not nesting.
    CHECK_NOTHROW(Safetensors::parse(raw_file(R"({"__metadata__":{"k":"[[[[{{{{\"]]]]"}})")));
  }
  SECTION("duplicate keys") {
    expect_rejected(raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                             R"("w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})"),
                    {"key 'w' twice"});
    expect_rejected(one_tensor(R"({"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]})"), {"key 'dtype' twice"});
  }
  SECTION("__metadata__ not a string map") {
    expect_rejected(raw_file(R"({"__metadata__":["a"]})"), {"__metadata__ is a JSON array"});
    expect_rejected(raw_file(R"({"__metadata__":{"epoch":3}})"), {"__metadata__ 'epoch'", "not a string"});
  }
}

TEST_CASE("safetensors: a broken tensor entry is refused naming the tensor", "[safetensors][invalid]") {
  auto with = [&](std::vector<std::string> parts) {
    parts.insert(parts.begin(), "tensor 'w': ");
    return parts;
  };
  SECTION("entry not an object") { expect_rejected(one_tensor("5"), with({"entry is a JSON number, not an object"})); }
  SECTION("missing fields") {
    expect_rejected(one_tensor(R"({"shape":[2],"data_offsets":[0,8]})"), with({"missing field 'dtype'"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","data_offsets":[0,8]})"), with({"missing field 'shape'"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2]})"), with({"missing field 'data_offsets'"}));
  }
  SECTION("unknown field") {
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"scale":0.5})"),
                    with({"unknown field 'scale'"}));
  }
  SECTION("wrong-typed fields") {
    expect_rejected(one_tensor(R"({"dtype":32,"shape":[2],"data_offsets":[0,8]})"), with({"dtype is a JSON number"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"), with({"shape is a JSON string"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":8})"), with({"data_offsets must be"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})"), with({"data_offsets must be"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,"8"]})"),
                    with({"data_offsets end = a JSON string is not an integer"}));
  }
  SECTION("dtype not F32/F16/BF16") {
    for (const char* d : {"I32", "F64", "U8", "BOOL", "f32", ""})
      expect_rejected(one_tensor(std::string(R"({"dtype":")") + d + R"(","shape":[2],"data_offsets":[0,8]})"),
                      with({std::string("dtype '") + d + "' is not supported"}));
  }
  SECTION("shape entries negative, non-integer or too large") {
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]})"), with({"shape[1] = -1 is negative"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,8]})"), with({"shape[0] = 1.5 is not an integer"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), with({"is not an integer"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[true],"data_offsets":[0,8]})"), with({"a JSON boolean is not an integer"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]})"),
                    with({"beyond 2^63 - 1"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]})"),
                    with({"is not an integer"}));
  }
  SECTION("element count × dtype size overflows") {
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2147483648,2147483648,2147483648],"data_offsets":[0,8]})"),
                    with({"shape[1]", "overflows 64 bits"}));
    // Also when a zero makes the count 0, whatever the order (the count must be representable).
    expect_rejected(one_tensor(R"({"dtype":"F16","shape":[0,4294967296,4294967296],"data_offsets":[0,0]})", {}),
                    with({"overflows 64 bits"}));
  }
  SECTION("byte count other than the shape's") {
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", Bytes(4, 0)),
                    with({"hold 4 bytes", "shape [2] of F32 needs 8"}));
    expect_rejected(one_tensor(R"({"dtype":"BF16","shape":[2],"data_offsets":[0,8]})"), with({"of BF16 needs 4"}));
  }
  SECTION("offsets negative, reversed or beyond the data") {
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), with({"begin = -8 is negative"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), with({"[8, 0) begin > end"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", Bytes(7, 0)),
                    with({"[0, 8) end beyond the data section of 7 bytes"}));
    expect_rejected(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]})"),
                    with({"beyond 2^63 - 1"}));
  }
}

TEST_CASE("safetensors: tensors must tile the data section", "[safetensors][invalid]") {
  auto entry = [](const char* name, int b, int e) {
    return std::string("\"") + name + R"(":{"dtype":"F32","shape":[)" + std::to_string((e - b) / 4) +
           R"(],"data_offsets":[)" + std::to_string(b) + "," + std::to_string(e) + "]}";
  };
  SECTION("overlapping ranges name both tensors") {
    expect_rejected(raw_file("{" + entry("a", 0, 8) + "," + entry("b", 4, 12) + "}", Bytes(12, 0)),
                    {"tensor 'b' [4, 12) overlaps tensor 'a' [0, 8)"});
    expect_rejected(raw_file("{" + entry("a", 0, 8) + "," + entry("b", 0, 8) + "}", Bytes(8, 0)),
                    {"tensor 'b' [0, 8) overlaps tensor 'a' [0, 8)"});
    // A zero-element tensor inside another's bytes: no byte shared, but no place of its own either.
    expect_rejected(raw_file("{" + entry("a", 0, 8) + "," + entry("z", 4, 4) + "}", Bytes(8, 0)),
                    {"tensor 'z' [4, 4) overlaps tensor 'a' [0, 8)"});
  }
  SECTION("a hole between tensors, before the first, after the last") {
    expect_rejected(raw_file("{" + entry("a", 0, 4) + "," + entry("b", 8, 12) + "}", Bytes(12, 0)),
                    {"bytes [4, 8) of the data section belong to no tensor", "'a'", "'b'"});
    expect_rejected(raw_file("{" + entry("b", 4, 8) + "}", Bytes(8, 0)), {"bytes [0, 4)", "before tensor 'b'"});
    expect_rejected(raw_file("{" + entry("a", 0, 4) + "}", Bytes(8, 0)), {"bytes [4, 8)", "after the last, tensor 'a'"});
    expect_rejected(raw_file("{}", Bytes(3, 0)), {"bytes [0, 3)", "the header has none"});
  }
}

TEST_CASE("safetensors: open() reads a file, and names the path when it cannot", "[safetensors][invalid]") {
  const Bytes file = write_file({{"w", "F32", {3}, f32_bytes({1.f, 2.f, 3.f})}});
  const std::filesystem::path good = temp_file("good"), cut = temp_file("cut");
  {
    std::ofstream(good, std::ios::binary).write(reinterpret_cast<const char*>(file.data()), std::streamsize(file.size()));
    std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(file.data()), std::streamsize(file.size() - 2));
  }
  const Safetensors st = Safetensors::open(good.string());
  CHECK(st.source() == good.string());
  CHECK(st.to_float("w", {3}) == std::vector<float>{1.f, 2.f, 3.f});
  REQUIRE_THROWS_AS(Safetensors::open(cut.string()), FormatError);
  REQUIRE_THROWS_WITH(Safetensors::open(cut.string()),
                      Catch::Contains(cut.string() + ": tensor 'w'") && Catch::Contains("beyond the data section of 10 bytes"));
  std::filesystem::remove(good);
  std::filesystem::remove(cut);

  const std::string missing = (std::filesystem::temp_directory_path() / "vla_no_such_dir" / "x.safetensors").string();
  REQUIRE_THROWS_AS(Safetensors::open(missing), FormatError);
  REQUIRE_THROWS_WITH(Safetensors::open(missing), Catch::Contains(missing + ": cannot open"));
}

// vla/io/safetensors.hpp — a reader of safetensors files (https://github.com/huggingface/safetensors),
// the format model weights come in: an 8-byte little-endian header length N, N bytes of a JSON object
// describing each tensor (dtype, shape, byte range), then the data section. Only F32, F16 and BF16
// are accepted: they are what the weights of a VLA layer are stored in, and all widen to float exactly.
// Needs nlohmann_json (the vla::io CMake target); the rest of vla does not include it.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace vla::io {

/// The dtypes accepted; any other is rejected naming the tensor and the dtype.
enum class DType { F32, F16, BF16 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "?";
}

/// One tensor of the header. [begin, end) is its byte range in the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::size_t begin = 0, end = 0;
};

/// Every rejection of a file, and every failed look-up: the message names the source and the tensor.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

inline std::size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

/// IEEE binary16 → float, exactly: every half is a float (11-bit significand, exponents within
/// float's normal range), so this is a re-encoding, not a rounding. NaN payloads are kept.
inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN with its payload
  } else if (exp == 0) {
    // ±0 and subnormals: mant · 2^-24, a normal float (or zero) computed exactly.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  } else {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// bfloat16 is float's top half.
inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline const char* json_type(const nlohmann::json& v) { return v.type_name(); }

}  // namespace detail

/// A safetensors file held in memory, its header validated once, at parse time; tensors are
/// converted to float on demand (to_float).
class Safetensors {
 public:
  /// The reference implementation's limit on N (its MAX_HEADER_SIZE, 100,000,000 bytes, "100 Mo"):
  /// a larger header is refused before anything is parsed.
  static constexpr std::size_t kMaxHeaderBytes = 100'000'000;

  /// Reads the whole file at `path`; FormatError naming the path if it cannot be read or is invalid.
  static Safetensors open(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw FormatError(path + ": cannot open: " + std::strerror(errno));
    std::vector<std::uint8_t> bytes;
    f.seekg(0, std::ios::end);
    const std::streamoff size = f.tellg();
    f.seekg(0, std::ios::beg);
    if (size < 0 || !f) throw FormatError(path + ": cannot read its size");
    bytes.resize(static_cast<std::size_t>(size));
    if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size))
      throw FormatError(path + ": read failed after " + std::to_string(f.gcount()) + " of " + std::to_string(size) + " bytes");
    return parse(std::move(bytes), path);
  }

  /// Validates `bytes` as a safetensors file (everything the header claims is checked against the
  /// bytes) and keeps them; `source` names it in messages.
  static Safetensors parse(std::vector<std::uint8_t> bytes, std::string source = "<memory>") {
    Safetensors st;
    st.source_ = std::move(source);
    st.bytes_ = std::move(bytes);
    st.read_header();
    return st;
  }

  const std::string& source() const { return source_; }

  /// The tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;
  }

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  const TensorInfo& info(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw FormatError(source_ + ": no tensor '" + name + "'");
    return it->second;
  }

  /// The optional "__metadata__" string map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The tensor converted to float (F16/BF16 widened exactly, little-endian), after checking its shape
  /// equals `expected` (FormatError naming the tensor, the expected and the stored shape).
  std::vector<float> to_float(const std::string& name, const std::vector<std::int64_t>& expected) const {
    const TensorInfo& t = info(name);
    if (t.shape != expected)
      throw FormatError(source_ + ": tensor '" + name + "': expected shape " + detail::shape_text(expected) +
                        ", stored " + detail::shape_text(t.shape));
    const std::uint8_t* p = bytes_.data() + data_begin_ + t.begin;
    const std::size_t n = (t.end - t.begin) / detail::dtype_size(t.dtype);
    std::vector<float> out(n);
    // Bytes are assembled little-endian by hand, so the result does not depend on the host's order.
    for (std::size_t i = 0; i < n; ++i) {
      if (t.dtype == DType::F32) {
        const std::uint8_t* b = p + 4 * i;
        const std::uint32_t bits = std::uint32_t(b[0]) | std::uint32_t(b[1]) << 8 | std::uint32_t(b[2]) << 16 |
                                   std::uint32_t(b[3]) << 24;
        std::memcpy(&out[i], &bits, sizeof bits);
      } else {
        const std::uint16_t h = static_cast<std::uint16_t>(p[2 * i] | p[2 * i + 1] << 8);
        out[i] = t.dtype == DType::F16 ? detail::f16_to_float(h) : detail::bf16_to_float(h);
      }
    }
    return out;
  }

 private:
  using json = nlohmann::json;

  std::string source_;
  std::vector<std::uint8_t> bytes_;
  std::size_t data_begin_ = 0;  // 8 + N: where the data section starts in bytes_
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;

  Safetensors() = default;  // only parse() makes one: every Safetensors holds a validated file

  [[noreturn]] void fail(const std::string& what) const { throw FormatError(source_ + ": " + what); }
  [[noreturn]] void fail_tensor(const std::string& name, const std::string& what) const {
    fail("tensor '" + name + "': " + what);
  }

  void read_header() {
    const std::size_t size = bytes_.size();
    if (size < 8) fail("file of " + std::to_string(size) + " bytes is shorter than the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes_[std::size_t(i)];
    if (n > kMaxHeaderBytes)
      fail("header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
           " bytes after the length field (truncated file?)");
    data_begin_ = 8 + static_cast<std::size_t>(n);
    const char* text = reinterpret_cast<const char*>(bytes_.data()) + 8;
    const json header = parse_json(text, text + n);
    const std::size_t data_size = size - data_begin_;
    if (!header.is_object()) fail(std::string("header is a JSON ") + detail::json_type(header) + ", not an object");
    for (const auto& kv : header.items()) {
      if (kv.key() == "__metadata__") {
        read_metadata(kv.value());
      } else {
        TensorInfo t = read_entry(kv.key(), kv.value(), data_size);
        tensors_.emplace(t.name, std::move(t));
      }
    }
    check_layout(data_size);
  }

  // The JSON text → a value, or FormatError: duplicate keys (which nlohmann would silently resolve to
  // the last one: a file whose readers disagree on a tensor's bytes) are caught through the parse
  // callback, which sees every key; nlohmann's own exceptions are wrapped, none leaks.
  json parse_json(const char* first, const char* last) const {
    check_before_parse(first, last);
    std::vector<std::set<std::string>> keys;  // the keys seen so far in each open object
    std::string duplicate;
    bool has_duplicate = false;
    const json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
      if (ev == json::parse_event_t::object_start) {
        keys.emplace_back();
      } else if (ev == json::parse_event_t::object_end) {
        if (!keys.empty()) keys.pop_back();
      } else if (ev == json::parse_event_t::key && !keys.empty() && parsed.is_string()) {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!keys.back().insert(k).second && !has_duplicate) {
          has_duplicate = true;
          duplicate = k;
        }
      }
      return true;
    };
    json j;
    try {
      j = json::parse(first, last, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
    } catch (const json::exception& e) {
      fail(std::string("header is not valid JSON: ") + e.what());
    }
    if (has_duplicate) fail("header has the key '" + duplicate + "' twice");
    return j;
  }

  // Two things the parser does not do for us, checked before it runs. A NUL byte: nlohmann takes it for
  // the end of the input and ignores what follows ("{}\0garbage" parses as "{}"), and valid JSON never
  // holds one. Nesting: a header needs three levels (the object, a tensor's entry, its shape); anything
  // deeper is refused before nlohmann builds it, since a 100 MB header of '[' would otherwise cost
  // gigabytes of nested values. Exact on valid JSON (strings and escapes are skipped); invalid JSON
  // fails either here or in the parser.
  void check_before_parse(const char* first, const char* last) const {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (const char* c = first; c != last; ++c) {
      if (*c == '\0') fail("header has a NUL byte at byte " + std::to_string(c - first) + " (JSON cannot)");
      if (in_string) {
        if (escaped) escaped = false;
        else if (*c == '\\') escaped = true;
        else if (*c == '"') in_string = false;
      } else if (*c == '"') {
        in_string = true;
      } else if (*c == '{' || *c == '[') {
        if (++depth > 3) fail("header nests deeper than a safetensors header can (3 levels) at byte " +
                              std::to_string(c - first));
      } else if (*c == '}' || *c == ']') {
        --depth;
      }
    }
  }

  void read_metadata(const json& m) {
    if (!m.is_object()) fail(std::string("__metadata__ is a JSON ") + detail::json_type(m) + ", not an object");
    for (const auto& kv : m.items()) {
      if (!kv.value().is_string())
        fail("__metadata__ '" + kv.key() + "': value is a JSON " + detail::json_type(kv.value()) + ", not a string");
      metadata_.emplace(kv.key(), kv.value().get<std::string>());
    }
  }

  // A JSON number that is a non-negative integer fitting in int64 (shapes are int64 in TensorInfo;
  // offsets beyond 2^63 cannot lie inside any file anyway).
  static bool as_index(const json& v, std::uint64_t& out) {
    if (v.is_number_unsigned()) {
      out = v.get<std::uint64_t>();
      return out <= std::uint64_t(std::numeric_limits<std::int64_t>::max());
    }
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {  // "-0"
      out = std::uint64_t(v.get<std::int64_t>());
      return true;
    }
    return false;
  }

  static std::string why_not_index(const json& v) {
    if (v.is_number_integer() && !v.is_number_unsigned()) return v.dump() + " is negative";
    if (v.is_number_unsigned()) return v.dump() + " is beyond 2^63 - 1";
    if (v.is_number_float()) return v.dump() + " is not an integer";
    return std::string("a JSON ") + detail::json_type(v) + " is not an integer";
  }

  TensorInfo read_entry(const std::string& name, const json& e, std::size_t data_size) const {
    if (!e.is_object()) fail_tensor(name, std::string("entry is a JSON ") + detail::json_type(e) + ", not an object");
    // Unknown fields are refused, where the reference ignores them: a field we do not know may
    // change what the bytes mean (a scale, a quantisation), and loading them as plain floats would
    // then give wrong weights without a word.
    for (const auto& kv : e.items())
      if (kv.key() != "dtype" && kv.key() != "shape" && kv.key() != "data_offsets")
        fail_tensor(name, "unknown field '" + kv.key() + "' (a tensor has dtype, shape, data_offsets)");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!e.contains(field)) fail_tensor(name, std::string("missing field '") + field + "'");
    TensorInfo t;
    t.name = name;

    const json& dt = e.at("dtype");
    if (!dt.is_string()) fail_tensor(name, std::string("dtype is a JSON ") + detail::json_type(dt) + ", not a string");
    const std::string& d = dt.get_ref<const std::string&>();
    if (d == "F32") t.dtype = DType::F32;
    else if (d == "F16") t.dtype = DType::F16;
    else if (d == "BF16") t.dtype = DType::BF16;
    else fail_tensor(name, "dtype '" + d + "' is not supported (F32, F16, BF16 are)");

    const json& sh = e.at("shape");
    if (!sh.is_array()) fail_tensor(name, std::string("shape is a JSON ") + detail::json_type(sh) + ", not an array");
    // The element count must be representable whatever the order of the dimensions: the product of
    // the non-zero ones times the dtype size must fit in 64 bits even when a zero makes the count 0
    // (the reference's running product would accept [0, 2^62, 2^62] but refuse [2^62, 2^62, 0]).
    std::uint64_t count = 1, nonzero_bytes = detail::dtype_size(t.dtype);
    bool has_zero = false;
    for (std::size_t i = 0; i < sh.size(); ++i) {
      std::uint64_t dim = 0;
      if (!as_index(sh[i], dim)) fail_tensor(name, "shape[" + std::to_string(i) + "] = " + why_not_index(sh[i]));
      t.shape.push_back(static_cast<std::int64_t>(dim));
      if (dim == 0) {
        has_zero = true;
        continue;
      }
      if (nonzero_bytes > std::numeric_limits<std::uint64_t>::max() / dim)
        fail_tensor(name, "shape[" + std::to_string(i) + "]: the element count × " +
                              std::to_string(detail::dtype_size(t.dtype)) + " bytes overflows 64 bits");
      nonzero_bytes *= dim;
      count *= dim;
    }
    if (has_zero) count = 0;
    const std::uint64_t nbytes = count * detail::dtype_size(t.dtype);

    const json& off = e.at("data_offsets");
    if (!off.is_array() || off.size() != 2)
      fail_tensor(name, "data_offsets must be an array of two integers [begin, end], not " + off.dump());
    std::uint64_t b = 0, en = 0;
    if (!as_index(off[0], b)) fail_tensor(name, "data_offsets begin = " + why_not_index(off[0]));
    if (!as_index(off[1], en)) fail_tensor(name, "data_offsets end = " + why_not_index(off[1]));
    const std::string range = "[" + std::to_string(b) + ", " + std::to_string(en) + ")";
    if (b > en) fail_tensor(name, "data_offsets " + range + " begin > end");
    if (en > data_size)
      fail_tensor(name, "data_offsets " + range + " end beyond the data section of " + std::to_string(data_size) + " bytes");
    if (en - b != nbytes)
      fail_tensor(name, "data_offsets " + range + " hold " + std::to_string(en - b) + " bytes, but shape " +
                            detail::shape_text(t.shape) + " of " + dtype_name(t.dtype) + " needs " + std::to_string(nbytes));
    t.begin = static_cast<std::size_t>(b);
    t.end = static_cast<std::size_t>(en);
    return t;
  }

  // Ranges must tile the data section: no two tensors share a byte, and, as the reference requires,
  // no byte belongs to no tensor. A hole or a tail is data no header entry accounts for: a file
  // written by a buggy tool, cut and concatenated, or padded by a writer the reference refuses anyway;
  // refusing it here means we never accept a file the reference implementation would reject.
  void check_layout(std::size_t data_size) const {
    std::vector<const TensorInfo*> order;
    order.reserve(tensors_.size());
    for (const auto& kv : tensors_) order.push_back(&kv.second);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
    });
    auto range = [](const TensorInfo* t) {
      return "[" + std::to_string(t->begin) + ", " + std::to_string(t->end) + ")";
    };
    std::size_t covered = 0;
    const TensorInfo* last = nullptr;  // the tensor ending at `covered`
    for (const TensorInfo* t : order) {
      if (t->begin < covered)
        fail("tensor '" + t->name + "' " + range(t) + " overlaps tensor '" + last->name + "' " + range(last));
      if (t->begin > covered)
        fail("bytes [" + std::to_string(covered) + ", " + std::to_string(t->begin) + ") of the data section belong to no tensor " +
             (last ? "(between tensor '" + last->name + "' and tensor '" + t->name + "')"
                   : "(before tensor '" + t->name + "')"));
      covered = t->end;  // begin == covered here, so end ≥ covered
      last = t;
    }
    if (covered != data_size)
      fail("bytes [" + std::to_string(covered) + ", " + std::to_string(data_size) + ") of the data section belong to no tensor " +
           (last ? "(after the last, tensor '" + last->name + "')" : "(the header has none)"));
  }
};

}  // namespace vla::io

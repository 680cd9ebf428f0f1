// libFuzzer harness: vla::io::Safetensors::parse on arbitrary bytes (issue 13). Invariants: a file is
// either refused with FormatError (any other exception is a bug) or accepted, and then every tensor's
// byte range lies inside the data section, no two ranges share a byte and together they cover it,
// each range holds exactly its shape's elements, and to_float with the tensor's own shape returns that
// many floats (a wrong shape is refused with FormatError).
#include <vla/io/safetensors.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using vla::io::FormatError;
  using vla::io::Safetensors;
  std::vector<std::uint8_t> bytes(data, data + size);
  std::optional<Safetensors> parsed;
  try {
    parsed = Safetensors::parse(bytes, "fuzz");
  } catch (const FormatError&) {
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vla fuzz: %s\n", e.what());
    vfuzz::broken("parse threw something other than FormatError");
  }
  const Safetensors& st = *parsed;
  // Accepted: the header length field is then valid, so the data section is what follows it.
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  const std::size_t data_size = size - 8 - std::size_t(n);

  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  for (const std::string& name : st.names()) {
    const vla::io::TensorInfo& t = st.info(name);
    if (t.name != name) vfuzz::broken("info(name).name differs from name");
    if (t.begin > t.end || t.end > data_size) vfuzz::broken("a range outside the data section");
    std::uint64_t count = 1;
    for (std::int64_t d : t.shape) {
      if (d < 0) vfuzz::broken("a negative dimension");
      count *= std::uint64_t(d);  // the reader refuses counts that do not fit, so no wrap for an accepted file
    }
    const std::size_t elem = t.dtype == vla::io::DType::F32 ? 4 : 2;
    if ((t.end - t.begin) != count * elem) vfuzz::broken("a range that does not hold its shape's elements");
    ranges.emplace_back(t.begin, t.end);
    try {
      if (st.to_float(name, t.shape).size() != count) vfuzz::broken("to_float's size differs from the element count");
    } catch (const std::exception&) {
      vfuzz::broken("to_float with the tensor's own shape threw");
    }
    std::vector<std::int64_t> wrong = t.shape;
    wrong.push_back(1);
    try {
      st.to_float(name, wrong);
      vfuzz::broken("to_float accepted a shape other than the stored one");
    } catch (const FormatError&) {
    }
  }
  std::sort(ranges.begin(), ranges.end());
  std::size_t covered = 0;
  for (const auto& r : ranges) {
    if (r.first != covered) vfuzz::broken("ranges overlap or leave a hole");
    covered = r.second;
  }
  if (covered != data_size) vfuzz::broken("ranges do not cover the data section");
  try {
    st.info("\x01 no such tensor");
    if (!st.contains("\x01 no such tensor")) vfuzz::broken("info() found a tensor contains() does not");
  } catch (const FormatError&) {
  }
  return 0;
}

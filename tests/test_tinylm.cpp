// vla/models/tinylm.hpp against the authors' own PyTorch classes: fixtures made by
// tools/parity/make_tinylm_fixture.py (their TinyLM with VLAv3Attn and with LinearAttn, and their
// single-head VLAv3 module, run in float64; tests/fixtures/README.md). Decode equals prefill at every
// position; snapshots roll a slot back; bad model directories and bad calls fail by name, unchanged.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support.hpp"
#include "tinylm_fixture.hpp"
#include "vla/models/tinylm.hpp"

namespace {

namespace fs = std::filesystem;
const std::string kFix = VLA_FIXTURE_DIR;

template <class S>
double rel_rms(const vla::TokenRows<S>& got, const std::vector<float>& want) {
  std::vector<double> w(want.begin(), want.end());
  return vt::rel_rms(vt::to_vec(got.template cast<double>()), w);
}

using Expected = vt::TinyLMExpected;
Expected expected(const std::string& dir, std::int64_t vocab) { return vt::tinylm_expected(dir, vocab); }

// A copy of a fixture model directory to damage.
std::string copy_dir(const std::string& from, const std::string& name) {
  const fs::path to = fs::temp_directory_path() / ("vla_test_" + name);
  fs::remove_all(to);
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from)) fs::copy_file(e.path(), to / e.path().filename());
  return to.string();
}
void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }
std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("tinylm: the authors' TinyLM logits (VLAv3Attn and LinearAttn), float and double", "[tinylm][parity]") {
  for (const char* kind : {"vla", "linear_attention"}) {
    CAPTURE(kind);
    const std::string dir = kFix + "/tinylm_" + kind;
    const auto mf = vla::models::TinyLM<vla::backend::Cpu, float>::load(dir);
    const auto md = vla::models::TinyLM<vla::backend::Cpu, double>::load(dir);
    CHECK(std::string(vla::layers::kind_name(mf.config().attention)) == kind);
    const Expected e = expected(dir, mf.config().vocab_size);
    auto cf = mf.make_cache(1);
    auto cd = md.make_cache(1);
    const auto lf = mf.prefill(e.tokens, cf, 0);
    const auto ld = md.prefill(e.tokens, cd, 0);
    // Their float64 logits are stored rounded to float (relative 3e-8): the floor of what is visible.
    CHECK(rel_rms(ld, e.logits) < 1e-7);
    CHECK(rel_rms(lf, e.logits) < 1e-5);
    INFO("float rel RMS " << rel_rms(lf, e.logits) << ", double " << rel_rms(ld, e.logits));
    CHECK(vt::all_finite(lf));
  }
}

TEST_CASE("tinylm: decode steps give the prefill's logits at every position", "[tinylm]") {
  for (const char* kind : {"vla", "linear_attention"}) {
    CAPTURE(kind);
    const std::string dir = kFix + "/tinylm_" + kind;
    const auto model = vla::models::TinyLM<vla::backend::Cpu, double>::load(dir);
    const Expected e = expected(dir, model.config().vocab_size);
    auto pre = model.make_cache(2);
    const auto want = model.prefill(e.tokens, pre, 1);
    auto dec = model.make_cache(2);
    vla::TokenRows<double> got(want.rows(), want.cols());
    for (std::size_t t = 0; t < e.tokens.size(); ++t) got.row(static_cast<Eigen::Index>(t)) = model.decode({e.tokens[t]}, dec, {1}).row(0);
    CHECK(vt::rel_rms(vt::to_vec(got), vt::to_vec(want)) < 1e-13);
    CHECK(dec.positions[1] == static_cast<std::int64_t>(e.tokens.size()));
    CHECK(dec.positions[0] == 0);
    const auto mf = vla::models::TinyLM<vla::backend::Cpu, float>::load(dir);
    auto pf = mf.make_cache(1), df = mf.make_cache(1);
    const auto wf = mf.prefill(e.tokens, pf, 0);
    double worst = 0;
    for (std::size_t t = 0; t < e.tokens.size(); ++t) {
      const vla::TokenRows<float> row = mf.decode({e.tokens[t]}, df, {0});
      const vla::TokenRows<float> ref = wf.row(static_cast<Eigen::Index>(t));
      worst = std::max(worst, vt::rel_rms(vt::to_vec(row.cast<double>()), vt::to_vec(ref.cast<double>())));
    }
    INFO("float: worst position's rel RMS, decode vs prefill " << worst);
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("tinylm: the authors' single-head VLAv3 module through the layer", "[tinylm][parity]") {
  const auto f = vla::io::Safetensors::open(kFix + "/vlav3_single_head.safetensors");
  const std::int64_t T = f.info("input.x").shape.at(0), d = f.info("input.x").shape.at(1);
  vla::layers::AttentionSpec spec;
  spec.kind = vla::layers::AttentionKind::vla;
  spec.d_model = d;
  spec.heads = 1;
  // Their module's constants (stored in the file's metadata by the fixture script).
  spec.op.lambda0 = std::stod(f.metadata().at("lambda0"));
  spec.op.stab_eps = std::stod(f.metadata().at("stab_eps"));
  spec.op.refresh_eps = std::stod(f.metadata().at("refresh_eps"));
  spec.op.refresh_period = std::stoi(f.metadata().at("refresh_period"));
  spec.op.denom_eps = std::stod(f.metadata().at("denom_eps"));
  CHECK(spec.op.lambda0 == 10.0);
  const auto y_want = f.to_float("output.y", {T, d});
  for (int precision = 0; precision < 2; ++precision) {
    auto check = [&](auto scalar) {
      using S = decltype(scalar);
      const vla::layers::Attention<vla::backend::Cpu, S> layer(
          spec, vla::io::read_attention<S>(f, "", spec, vla::io::AttentionNames::authors_vlav3(), 1e-5));
      REQUIRE(layer.weights().out_norm.has_value());
      const vla::TokenRows<S> x = vla::io::read_matrix<S>(f, "input.x", T, d);
      auto cache = layer.make_cache(1);
      vla::TokenRows<S> y;
      layer.prefill(x, cache, 0, y);
      return rel_rms(y, y_want);
    };
    if (precision == 0) CHECK(check(double{}) < 1e-7);
    if (precision == 1) CHECK(check(float{}) < 1e-5);
  }
}

TEST_CASE("tinylm: a snapshot rolls a slot back; pieces of a prompt equal the whole", "[tinylm]") {
  const std::string dir = kFix + "/tinylm_vla";
  const auto model = vla::models::TinyLM<vla::backend::Cpu, float>::load(dir);
  const Expected e = expected(dir, model.config().vocab_size);
  const std::vector<std::int64_t> prompt(e.tokens.begin(), e.tokens.begin() + 40);
  auto cache = model.make_cache(1);
  std::vector<vla::models::TinyLM<vla::backend::Cpu, float>::Snapshot> snaps;
  const auto all = model.prefill(prompt, cache, 0, {25, 40}, &snaps);
  REQUIRE(snaps.size() == 2);
  CHECK(snaps[0].position == 25);
  const auto after = model.save(cache, 0);
  // Speculative tokens, then rejected: back to position 25 and the rest of the prompt again.
  model.decode({3}, cache, {0});
  model.decode({5}, cache, {0});
  model.restore(cache, 0, snaps[0]);
  CHECK(cache.positions[0] == 25);
  const std::vector<std::int64_t> rest(prompt.begin() + 25, prompt.end());
  const auto again = model.prefill(rest, cache, 0);
  CHECK(vt::bitwise_equal(again, all.bottomRows(15)));
  const auto now = model.save(cache, 0);
  for (std::size_t l = 0; l < now.layers.size(); ++l)
    for (std::size_t h = 0; h < now.layers[l].size(); ++h) CHECK(vt::same_snapshot(now.layers[l][h], after.layers[l][h]));
  // The whole prompt in one call: the same logits (the op and the position-wise layers do not care where a prompt is cut).
  auto one = model.make_cache(1);
  const auto whole = model.prefill(prompt, one, 0);
  CHECK(vt::rel_rms(vt::to_vec(whole.cast<double>()), vt::to_vec(all.cast<double>())) < 1e-6);
  model.reset(cache, 0);
  CHECK(cache.positions[0] == 0);
}

TEST_CASE("tinylm: bad calls are refused by name and change nothing", "[tinylm][invalid]") {
  const auto model = vla::models::TinyLM<vla::backend::Cpu, float>::load(kFix + "/tinylm_vla");
  const auto& c = model.config();
  auto cache = model.make_cache(2);
  model.prefill({1, 2, 3}, cache, 0);
  const auto before = model.save(cache, 0);
  auto unchanged = [&] {
    const auto now = model.save(cache, 0);
    for (std::size_t l = 0; l < now.layers.size(); ++l)
      for (std::size_t h = 0; h < now.layers[l].size(); ++h)
        if (!vt::same_snapshot(now.layers[l][h], before.layers[l][h])) return false;
    return now.position == before.position && cache.positions[1] == 0;
  };
  CHECK_THROWS_WITH(model.prefill({1, c.vocab_size}, cache, 0), Catch::Contains("outside the vocabulary"));
  CHECK_THROWS_WITH(model.prefill({-1}, cache, 0), Catch::Contains("token id -1"));
  CHECK_THROWS_WITH(model.prefill(std::vector<std::int64_t>(static_cast<std::size_t>(c.max_seq_len), 1), cache, 0),
                    Catch::Contains("past max_seq_len"));
  CHECK_THROWS_WITH(model.prefill({1}, cache, 2), Catch::Contains("slot 2 is out of range"));
  CHECK_THROWS_WITH(model.decode({1, 2}, cache, {0, 0}), Catch::Contains("slot 0 is given twice"));
  CHECK_THROWS_WITH(model.decode({1}, cache, {0, 1}), Catch::Contains("1 tokens for 2 slots"));
  CHECK_THROWS_WITH(model.prefill({1, 2}, cache, 0, {2, 1}), Catch::Contains("ascending"));
  auto snap = before;
  snap.layers[0][0].A(0, 1) += 1.0f;  // no longer symmetric: refused before any head is set
  CHECK_THROWS(model.restore(cache, 1, snap));
  CHECK(unchanged());
}

TEST_CASE("tinylm: bad model directories fail with the file and the tensor named", "[tinylm][invalid]") {
  using Model = vla::models::TinyLM<vla::backend::Cpu, float>;
  const std::string good = kFix + "/tinylm_vla";
  const std::string cfg_text = read_text(good + "/config.json");
  {
    const std::string d = copy_dir(good, "bad_json");
    write_text(d + "/config.json", "{\"attention\": \"vla\", ");
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("config.json: not a JSON object"));
    write_text(d + "/config.json", replace(cfg_text, "\"d_ff\"", "\"d_fff\""));
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("unknown key 'd_fff'"));
    write_text(d + "/config.json", replace(cfg_text, "\"vla\"", "\"softmax\""));
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("unknown attention kind 'softmax'"));
    write_text(d + "/config.json", replace(cfg_text, "\"lambda0\": 0.1", "\"lambda0\": -1"));
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("lambda0"));
    fs::remove(d + "/config.json");
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("config.json: cannot be opened"));
  }
  {
    const std::string d = copy_dir(good, "missing_tensor");
    write_text(d + "/config.json", replace(cfg_text, "\"n_layers\": 2", "\"n_layers\": 3"));
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("blocks.2.ln1.weight"));
    write_text(d + "/config.json", replace(cfg_text, "\"d_ff\": 128", "\"d_ff\": 129"));
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("blocks.0.ff.0.weight"));
  }
  {
    const std::string d = copy_dir(good, "truncated");
    const std::string bytes = read_text(d + "/model.safetensors");
    write_text(d + "/model.safetensors", bytes.substr(0, bytes.size() - 100));
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("model.safetensors"));
    fs::remove(d + "/model.safetensors");
    CHECK_THROWS_WITH(Model::load(d), Catch::Contains("model.safetensors"));
  }
}

// vla/cuda/tinylm.cuh: the TinyLM on the GPU against the authors' own PyTorch TinyLM (the float64
// fixtures of tests/fixtures/, tools/parity/make_tinylm_fixture.py), decode equal to prefill at every
// position through slots in any order, a batched prefill equal to one prompt at a time, and bad
// calls refused with a Status before anything changes.
#include "support.cuh"

#include <vla/cuda/tinylm.cuh>

#include "../tinylm_fixture.hpp"

using namespace vtest;
using Model = vla::models::TinyLM<vla::backend::Cuda, float>;

namespace {

const std::string kFix = VLA_FIXTURE_DIR;

using Expected = vt::TinyLMExpected;
Expected expected(const std::string& dir, std::int64_t vocab) { return vt::tinylm_expected(dir, vocab); }
double rel(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("cuda tinylm: the authors' TinyLM logits (VLAv3Attn and LinearAttn)", "[tinylm]") {
  for (const char* kind : {"vla", "linear_attention"}) {
    CAPTURE(kind);
    const std::string dir = kFix + "/tinylm_" + kind;
    Model m;
    vla::cuda::Status st = Model::load(dir, nullptr, m);
    INFO(st.message);
    REQUIRE(st.ok());
    const Expected e = expected(dir, m.config().vocab_size);
    Model::Cache c;
    REQUIRE(m.make_cache(3, nullptr, c).ok());
    REQUIRE(m.prefill(e.tokens, 1, c, 1, nullptr).ok());
    const std::vector<float> got = m.logits_to_host(nullptr);
    const double r = rel(got, e.logits);
    std::printf("cuda tinylm %s: prefill logits rel RMS vs the authors' float64 %.3g\n", kind, r);
    CHECK(r < 1e-5);
    CHECK(c.positions[1] == static_cast<std::int64_t>(e.tokens.size()));
    CHECK(c.positions[0] == 0);

    // Decode: the same prompt in slot 2 beside a second sequence (the prompt reversed) in slot 0,
    // one token each per step, slots given as {2, 0}; then the reversed prompt alone as a prefill.
    Model::Cache dc;
    REQUIRE(m.make_cache(3, nullptr, dc).ok());
    std::vector<std::int64_t> rev(e.tokens.rbegin(), e.tokens.rend());
    const std::int64_t T = static_cast<std::int64_t>(e.tokens.size()), V = m.config().vocab_size;
    std::vector<float> dec_a, dec_b;
    for (std::int64_t t = 0; t < T; ++t) {
      REQUIRE(m.decode({e.tokens[static_cast<std::size_t>(t)], rev[static_cast<std::size_t>(t)]}, dc, {2, 0}, nullptr).ok());
      const std::vector<float> l = m.logits_to_host(nullptr);
      dec_a.insert(dec_a.end(), l.begin(), l.begin() + V);
      dec_b.insert(dec_b.end(), l.begin() + V, l.end());
    }
    INFO(m.graph_note());
    CHECK(m.graph_note() == "decode graphs on");  // the steps above replayed a captured graph
    const double rd = rel(dec_a, got);
    std::printf("cuda tinylm %s: decode vs prefill rel RMS %.3g\n", kind, rd);
    CHECK(rd < 1e-5);
    // The same decode with plain launches: the same logits, bit for bit (the same kernels in the same order).
    Model::Cache pc;
    REQUIRE(m.make_cache(3, nullptr, pc).ok());
    m.decode_graphs = false;
    std::vector<float> plain_a;
    for (std::int64_t t = 0; t < T; ++t) {
      REQUIRE(m.decode({e.tokens[static_cast<std::size_t>(t)], rev[static_cast<std::size_t>(t)]}, pc, {2, 0}, nullptr).ok());
      const std::vector<float> l = m.logits_to_host(nullptr);
      plain_a.insert(plain_a.end(), l.begin(), l.begin() + V);
    }
    m.decode_graphs = true;
    CHECK(plain_a == dec_a);
    Model::Cache bc;
    REQUIRE(m.make_cache(2, nullptr, bc).ok());
    std::vector<std::int64_t> both = e.tokens;
    both.insert(both.end(), rev.begin(), rev.end());
    REQUIRE(m.prefill(both, 2, bc, 0, nullptr).ok());  // a batch of two prompts
    const std::vector<float> lb = m.logits_to_host(nullptr);
    CHECK(rel(std::vector<float>(lb.begin(), lb.begin() + T * V), got) < 1e-6);
    CHECK(rel(dec_b, std::vector<float>(lb.begin() + T * V, lb.end())) < 1e-5);
  }
}

TEST_CASE("cuda tinylm: bad calls and bad model directories are refused by name", "[tinylm][invalid]") {
  Model m;
  REQUIRE(Model::load(kFix + "/tinylm_vla", nullptr, m).ok());
  Model::Cache c;
  REQUIRE(m.make_cache(2, nullptr, c).ok());
  REQUIRE(m.prefill({1, 2, 3}, 1, c, 0, nullptr).ok());
  auto mentions = [](const vla::cuda::Status& s, const std::string& what) {
    INFO(s.message);
    return !s.ok() && s.message.find(what) != std::string::npos;
  };
  CHECK(mentions(m.prefill({1, 64}, 1, c, 0, nullptr), "outside the vocabulary"));
  CHECK(mentions(m.prefill({1, 2, 3}, 2, c, 0, nullptr), "not batch (2) prompts"));
  CHECK(mentions(m.prefill({1, 2}, 2, c, 1, nullptr), "out of range"));
  CHECK(mentions(m.prefill(std::vector<std::int64_t>(200, 1), 1, c, 0, nullptr), "past max_seq_len"));
  CHECK(mentions(m.decode({1, 2}, c, {1, 1}, nullptr), "given twice"));
  CHECK(mentions(m.decode({1}, c, {5}, nullptr), "out of range"));
  CHECK((c.positions[0] == 3 && c.positions[1] == 0));
  // Save after the prompt, decode two tokens, restore, decode them again: the same logits, bit for bit.
  Model::Snapshot snap;
  REQUIRE(m.save(c, 0, nullptr, snap).ok());
  REQUIRE(m.decode({7}, c, {0}, nullptr).ok());
  REQUIRE(m.decode({9}, c, {0}, nullptr).ok());
  const std::vector<float> first = m.logits_to_host(nullptr);
  REQUIRE(m.restore(c, 0, snap, nullptr).ok());
  CHECK(c.positions[0] == 3);
  REQUIRE(m.decode({7}, c, {0}, nullptr).ok());
  REQUIRE(m.decode({9}, c, {0}, nullptr).ok());
  CHECK(m.logits_to_host(nullptr) == first);
  auto bad = snap;
  bad.layers[1][0].A[1] += 1.f;  // no longer symmetric: refused before any head is written
  Model::Snapshot before;
  REQUIRE(m.save(c, 0, nullptr, before).ok());
  CHECK(mentions(m.restore(c, 0, bad, nullptr), "layer 1, head 0"));
  Model::Snapshot after;
  REQUIRE(m.save(c, 0, nullptr, after).ok());
  for (std::size_t l = 0; l < after.layers.size(); ++l)
    for (std::size_t h = 0; h < after.layers[l].size(); ++h) {
      CHECK(after.layers[l][h].S == before.layers[l][h].S);
      CHECK(after.layers[l][h].A == before.layers[l][h].A);
    }
  CHECK(after.position == before.position);
  REQUIRE(m.reset(c, 0, nullptr).ok());
  CHECK(c.positions[0] == 0);
  Model other;
  CHECK(mentions(Model::load(kFix + "/no_such_model", nullptr, other), "config.json: cannot be opened"));
  vla::models::TensorMap none;
  vla::models::TinyLMConfig cfg = m.config();
  CHECK(mentions(Model::create(cfg, none, nullptr, other), "no tensor 'tok.weight'"));
  cfg.n_heads = 4;  // head size 16: not built for the GPU
  CHECK(mentions(Model::create(cfg, none, nullptr, other), "head size 16"));
}

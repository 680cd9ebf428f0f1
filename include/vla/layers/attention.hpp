// vla/layers/attention.hpp — the multi-head attention layer around the recurrence: projections,
// feature maps, the penalty direction, the head split, the op, the output norm and projection, and
// a per-layer state cache indexed by sequence slot (docs/layers.md; the op is docs/maths.md §2, §7).
//
//   vla::layers::AttentionSpec spec{vla::layers::AttentionKind::vla, /*d_model*/ 128, /*heads*/ 4};
//   vla::layers::Attention<vla::backend::Cpu, float> attn(spec, weights);   // shapes checked here
//   vla::HostStates<float> cache = attn.make_cache(/*slots*/ 8);
//   attn.prefill(x, cache, /*slot*/ 0, y);             // x, y: [T, d_model], one row per token
//   attn.decode(x1, cache, {0, 3, 5}, y1);             // one token for each of three slots
//
// What it computes is the authors' layers (docs/layers.md has the table), per kind:
//   vla:              q = φ(x W_qᵀ + b_q), k_raw = x W_kᵀ + b_k, k = φ(k_raw), v = x W_vᵀ + b_v,
//                     u = k_raw W_uᵀ (all heads' raw keys, no bias), split into heads; the VLA op;
//                     heads merged; LayerNorm; y = · W_oᵀ + b_o.
//   linear_attention: q = φ(x W_qᵀ + b_q), k = φ(x W_kᵀ + b_k), v; the op; y = o W_oᵀ + b_o.
//   deltanet:         q = φ(·), k = x W_kᵀ + b_k (the op normalises k), v, β = sigmoid(x W_βᵀ + b_β)
//                     per head ([d_model] → [H]); the op; y = o W_oᵀ + b_o.
// φ is ELU+1 unless the spec turns it off for q or k; an output norm may be added to any kind.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "vla/backend/cpu.hpp"
#include "vla/config.hpp"
#include "vla/feature_map.hpp"
#include "vla/layers/dense.hpp"
#include "vla/layers/kind.hpp"
#include "vla/rows.hpp"

namespace vla {
namespace layers {

/// The layer's parameters in PyTorch's layouts. Which are used depends on the kind: u for vla
/// ([d_model, d_model], no bias), beta for deltanet ([heads, d_model]); out_norm is optional for
/// every kind (the authors' VLA layer has one, their linear attention none).
template <class Scalar>
struct AttentionWeights {
  Linear<Scalar> q, k, v, o;
  Linear<Scalar> u;
  Linear<Scalar> beta;
  std::optional<LayerNorm<Scalar>> out_norm;
};

/// One attention layer on a backend. Specialised for backend::Cpu here.
template <class Backend, class Scalar>
class Attention;

template <class Scalar>
class Attention<backend::Cpu, Scalar> {
 public:
  using Rows = TokenRows<Scalar>;

  /// Checks every shape against the spec (the message names the parameter) and the op's config.
  Attention(const AttentionSpec& spec, AttentionWeights<Scalar> w) : spec_(spec), w_(std::move(w)) {
    if (spec.d_model <= 0 || spec.heads <= 0 || spec.d_model % spec.heads != 0)
      throw std::invalid_argument("vla::layers::Attention: d_model (" + std::to_string(spec.d_model) +
                                  ") must be a positive multiple of heads (" + std::to_string(spec.heads) + ")");
    spec.op.validate_for<Scalar>();
    const std::int64_t d = spec.d_model;
    w_.q.check("q", d, d);
    w_.k.check("k", d, d);
    w_.v.check("v", d, d);
    w_.o.check("o", d, d);
    if (spec.kind == AttentionKind::vla) w_.u.check("u", d, d, /*bias_allowed=*/false);
    if (spec.kind == AttentionKind::deltanet) w_.beta.check("beta", spec.heads, d);
    if (w_.out_norm) w_.out_norm->check("out_norm", d);
  }

  const AttentionSpec& spec() const { return spec_; }
  const AttentionWeights<Scalar>& weights() const { return w_; }

  /// A fresh cache of `slots` sequences for this layer (docs/maths.md §2's fresh state).
  HostStates<Scalar> make_cache(std::int64_t slots) const {
    return HostStates<Scalar>(slots, spec_.heads, spec_.head_dim(), spec_.head_dim(), spec_.op);
  }

  /// The T rows of x (one sequence, [T, d_model]) continuing the cache's slot; y gets [T, d_model].
  /// Everything is checked before the slot changes; on a throw the cache and y are as they were.
  void prefill(const Eigen::Ref<const Rows>& x, HostStates<Scalar>& cache, std::int64_t slot, Rows& y) const {
    check_cache(cache);
    if (slot < 0 || slot >= cache.sequences())
      throw std::invalid_argument("vla::layers::Attention::prefill: slot " + std::to_string(slot) + " is out of range (" +
                                  std::to_string(cache.sequences()) + " slots)");
    run(x, cache, {slot}, /*one token per slot=*/false, y);
  }

  /// One token for each of B sequences: row b of x ([B, d_model]) continues slot slots[b]. Slots
  /// must be distinct. y gets [B, d_model].
  void decode(const Eigen::Ref<const Rows>& x, HostStates<Scalar>& cache, const std::vector<std::int64_t>& slots,
              Rows& y) const {
    check_cache(cache);
    if (static_cast<std::int64_t>(slots.size()) != x.rows())
      throw std::invalid_argument("vla::layers::Attention::decode: " + std::to_string(x.rows()) + " rows for " +
                                  std::to_string(slots.size()) + " slots");
    std::vector<std::int64_t> sorted = slots;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < sorted.size(); ++i) {
      if (sorted[i] < 0 || sorted[i] >= cache.sequences())
        throw std::invalid_argument("vla::layers::Attention::decode: slot " + std::to_string(sorted[i]) + " is out of range (" +
                                    std::to_string(cache.sequences()) + " slots)");
      if (i > 0 && sorted[i] == sorted[i - 1])
        throw std::invalid_argument("vla::layers::Attention::decode: slot " + std::to_string(sorted[i]) + " is given twice");
    }
    run(x, cache, slots, /*one token per slot=*/true, y);
  }

  /// The op's inputs for the rows of x, as the layer computes them (for tests and for callers that
  /// want the projections without the op). u is empty unless vla, beta ([T, H]) unless deltanet.
  struct OpInputs {
    Rows q, k, v, u, beta;
  };
  OpInputs project(const Eigen::Ref<const Rows>& x) const {
    if (x.cols() != spec_.d_model)
      throw std::invalid_argument("vla::layers::Attention: x has " + std::to_string(x.cols()) + " columns, d_model is " +
                                  std::to_string(spec_.d_model));
    if (!x.allFinite()) throw std::invalid_argument("vla::layers::Attention: x holds a NaN or an infinity");
    OpInputs in;
    w_.q.apply(x, in.q);
    if (spec_.q_feature_map) elu_plus_one_inplace(in.q.data(), in.q.size());
    w_.k.apply(x, in.k);
    if (spec_.kind == AttentionKind::vla) w_.u.apply(in.k, in.u);  // from the raw keys of all heads
    if (spec_.kind != AttentionKind::deltanet && spec_.k_feature_map) elu_plus_one_inplace(in.k.data(), in.k.size());
    w_.v.apply(x, in.v);
    if (spec_.kind == AttentionKind::deltanet) {
      w_.beta.apply(x, in.beta);
      sigmoid_inplace<Scalar>(in.beta);
      // sigmoid(s) rounds to 0 for s below about −88 (float) or −745 (double); the op takes β in
      // (0, 1] (a zero step is no write), so such a β becomes the smallest normal value instead,
      // a write of relative size 1e-38 (float), which is the limit the sigmoid was heading to.
      in.beta = in.beta.cwiseMax(std::numeric_limits<Scalar>::min());
    }
    return in;
  }

 private:
  void check_cache(const HostStates<Scalar>& cache) const {
    if (cache.heads() != spec_.heads || cache.dk() != spec_.head_dim() || cache.dv() != spec_.head_dim())
      throw std::invalid_argument("vla::layers::Attention: the cache is for " + std::to_string(cache.heads()) + " heads of " +
                                  std::to_string(cache.dk()) + ", the layer has " + std::to_string(spec_.heads) + " of " +
                                  std::to_string(spec_.head_dim()));
  }

  template <class Op>
  void run_op(const OpInputs& in, Rows& o, StateBuffers<Scalar> st, std::int64_t batch, std::int64_t seq_len) const {
    ForwardArgs<Scalar> a;
    a.batch = batch;
    a.seq_len = seq_len;
    a.heads = spec_.heads;
    a.dk = a.dv = spec_.head_dim();
    a.q = in.q.data();
    a.k = in.k.data();
    a.v = in.v.data();
    if (Op::uses_u) a.u = in.u.data();
    if (Op::uses_beta) a.beta = in.beta.data();
    a.o = o.data();
    a.initial_state = {st.A, st.S, st.z, st.steps};
    a.final_state = st;  // in place: the op reads each state before it writes it
    CpuOptions opt;
    // Every state in a HostStates is one vla wrote or one HostStates::set validated (SPD checked),
    // so the O(dk³) factorisation per head and call is skipped; finiteness is still checked.
    opt.check_positive_definite = false;
    vla::forward<backend::Cpu, Op>(a, spec_.op, opt);
  }

  // slots: the cache slots of the batch's sequences; one_token: x holds one token per slot (decode)
  // rather than T tokens of slots[0] (prefill).
  void run(const Eigen::Ref<const Rows>& x, HostStates<Scalar>& cache, const std::vector<std::int64_t>& slots,
           bool one_token, Rows& y) const {
    const OpInputs in = project(x);  // throws before anything changes
    const std::int64_t H = spec_.heads, d = spec_.head_dim(), rows = x.rows();
    Rows o(rows, spec_.d_model);
    const std::int64_t batch = one_token ? static_cast<std::int64_t>(slots.size()) : 1;
    const std::int64_t seq_len = one_token ? 1 : rows;
    // The op reads [B, T, H, d]: for decode, row b is sequence b's one token. Its states must be
    // [B, H, …] contiguous: consecutive ascending slots are used in place, others go through a
    // gathered copy (copied back only after the op succeeded, so a throw changes nothing).
    bool consecutive = true;
    for (std::size_t i = 1; i < slots.size(); ++i) consecutive = consecutive && slots[i] == slots[0] + static_cast<std::int64_t>(i);
    if (batch > 0) {
      if (consecutive) {
        run_kind(in, o, slot_buffers(cache.buffers(), slots[0], d), batch, seq_len);
      } else {
        HostStates<Scalar> gathered(batch, H, d, d, spec_.op);
        for (std::int64_t b = 0; b < batch; ++b)
          for (std::int64_t h = 0; h < H; ++h) copy_state(cache, slots[static_cast<std::size_t>(b)], gathered, b, h);
        run_kind(in, o, gathered.buffers(), batch, seq_len);
        for (std::int64_t b = 0; b < batch; ++b)
          for (std::int64_t h = 0; h < H; ++h) copy_state(gathered, b, cache, slots[static_cast<std::size_t>(b)], h);
      }
    }
    if (w_.out_norm) w_.out_norm->apply(o);
    w_.o.apply(o, y);
  }

  void run_kind(const OpInputs& in, Rows& o, StateBuffers<Scalar> st, std::int64_t batch, std::int64_t seq_len) const {
    switch (spec_.kind) {
      case AttentionKind::vla: run_op<op::Vla>(in, o, st, batch, seq_len); break;
      case AttentionKind::linear_attention: run_op<op::LinearAttention>(in, o, st, batch, seq_len); break;
      case AttentionKind::deltanet: run_op<op::DeltaNet>(in, o, st, batch, seq_len); break;
    }
  }

  StateBuffers<Scalar> slot_buffers(StateBuffers<Scalar> b, std::int64_t slot, std::int64_t d) const {
    const std::int64_t p = slot * spec_.heads;
    return {b.A + p * d * d, b.S + p * d * d, b.z + p * d, b.steps + p};
  }
  // A raw copy of one (slot, head) between caches of this layer's shape: both hold states vla
  // wrote or validated, so HostStates::set's check (a Cholesky) is not needed.
  void copy_state(HostStates<Scalar>& from, std::int64_t fs, HostStates<Scalar>& to, std::int64_t ts, std::int64_t h) const {
    const std::int64_t d = spec_.head_dim();
    const StateBuffers<Scalar> f = slot_buffers(from.buffers(), fs, d), t = slot_buffers(to.buffers(), ts, d);
    std::copy_n(f.A + h * d * d, d * d, t.A + h * d * d);
    std::copy_n(f.S + h * d * d, d * d, t.S + h * d * d);
    std::copy_n(f.z + h * d, d, t.z + h * d);
    t.steps[h] = f.steps[h];
  }

  AttentionSpec spec_;
  AttentionWeights<Scalar> w_;
};

}  // namespace layers
}  // namespace vla

// Experiment 1: ‖S_t‖_F of VLA against linear attention and DeltaNet in the paper's setting
// (random-init model, d_model 128, 4 heads, d_h 32, ELU+1 features, random tokens), the ratio at
// T = 1,000 over seeds, then one head out to T = 1,000,000.
//
// The model: token ids uniform over a vocabulary of 8,192, embeddings N(0, 1); two pre-LN blocks,
// each attention (q, k, v, o projections, no bias, PyTorch's default init U(±1/√fan_in); q, k
// through ELU+1; 4 heads of 32; residual) then a GELU MLP 128→512→128 (same init; residual).
// LayerNorm has its init parameters (weight 1, bias 0). Each memory runs its own copy of the
// same weights on the same tokens (layer 2's input depends on layer 1's memory). VLA's penalty
// direction is u = k (the feature-mapped key); a variant draws u from its own projection (no
// feature map). DeltaNet's β_t = sigmoid(w_β·x_t) per head from a random-init projection.
// Outputs are normalised (o = Sq / max(zᵀq, ε)) for VLA and linear attention; DeltaNet o = Sq.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "vla/diagnostics.hpp"

namespace vlaexp {
namespace {

constexpr int kD = 128, kHeads = 4, kDh = 32, kLayers = 2, kVocab = 8192, kMlp = 512;

enum class Mem { LA, DN, VLA, VLA_UPROJ };
const char* mem_name(Mem m) {
  switch (m) {
    case Mem::LA: return "linear_attention";
    case Mem::DN: return "deltanet";
    case Mem::VLA: return "vla";
    case Mem::VLA_UPROJ: return "vla_uproj";
  }
  return "?";
}

struct Layer {
  Mat Wq, Wk, Wv, Wu, Wo, W1, W2, Wb;
};
struct Model {
  Mat E;  // d × vocab
  std::vector<Layer> layers;
};

Model make_model(std::uint64_t seed) {
  Rng r(seed_of("model", seed));
  Model m;
  m.E = r.normal_mat(kD, kVocab);
  for (int l = 0; l < kLayers; ++l) {
    Layer L;
    L.Wq = r.linear_init(kD, kD);
    L.Wk = r.linear_init(kD, kD);
    L.Wv = r.linear_init(kD, kD);
    L.Wu = r.linear_init(kD, kD);
    L.Wo = r.linear_init(kD, kD);
    L.W1 = r.linear_init(kMlp, kD);
    L.W2 = r.linear_init(kD, kMlp);
    L.Wb = r.linear_init(kHeads, kD);
    m.layers.push_back(std::move(L));
  }
  return m;
}

std::vector<int> make_tokens(std::uint64_t seed, std::int64_t T) {
  Rng r(seed_of("tokens", seed));
  std::vector<int> t(static_cast<std::size_t>(T));
  for (auto& x : t) x = static_cast<int>(r.below(kVocab));
  return t;
}

/// Runs the 2-layer model with memory `mem`; returns ‖S‖_F at each checkpoint, [cp][layer][head].
std::vector<double> run_model(const Model& m, const std::vector<int>& tok, Mem mem, const std::vector<std::int64_t>& cps) {
  const std::int64_t T = static_cast<std::int64_t>(tok.size()), B = 1000;
  std::vector<int> cp_of(static_cast<std::size_t>(T + 1), -1);
  for (std::size_t i = 0; i < cps.size(); ++i) cp_of[static_cast<std::size_t>(cps[i])] = static_cast<int>(i);
  std::vector<double> norms(cps.size() * kLayers * kHeads, 0.0);

  std::vector<vla::VlaState<double>> vs;
  std::vector<vla::LinearAttentionState<double>> ls;
  std::vector<vla::DeltaNetState<double>> ds;
  for (int i = 0; i < kLayers * kHeads; ++i) {
    vs.emplace_back(kDh, kDh);
    ls.emplace_back(kDh, kDh);
    ds.emplace_back(kDh, kDh);
  }
  Mat X(kD, B), Hn, Q, K, V, U, Bt, O(kD, B), M1;
  for (std::int64_t b0 = 0; b0 < T; b0 += B) {
    const std::int64_t nb = std::min(B, T - b0);
    X.resize(kD, nb);
    O.resize(kD, nb);
    for (std::int64_t j = 0; j < nb; ++j) X.col(j) = m.E.col(tok[static_cast<std::size_t>(b0 + j)]);
    for (int l = 0; l < kLayers; ++l) {
      const Layer& L = m.layers[static_cast<std::size_t>(l)];
      layer_norm_cols(X, Hn);
      Q.noalias() = L.Wq * Hn;
      K.noalias() = L.Wk * Hn;
      V.noalias() = L.Wv * Hn;
      phi_inplace(Q);
      phi_inplace(K);
      if (mem == Mem::VLA_UPROJ) U.noalias() = L.Wu * Hn;
      if (mem == Mem::DN) Bt = (L.Wb * Hn).unaryExpr([](double x) { return sigmoid(x); });
      for (int h = 0; h < kHeads; ++h) {
        const int idx = l * kHeads + h;
        for (std::int64_t j = 0; j < nb; ++j) {
          auto q = Q.col(j).segment(h * kDh, kDh);
          auto k = K.col(j).segment(h * kDh, kDh);
          auto v = V.col(j).segment(h * kDh, kDh);
          auto o = O.col(j).segment(h * kDh, kDh);
          double s_norm = 0;
          switch (mem) {
            case Mem::LA:
              ls[idx].step_unchecked(q, k, v, o);
              break;
            case Mem::DN:
              ds[idx].step_unchecked(q, k, v, Bt(h, j), o);
              break;
            case Mem::VLA:
              vs[idx].step_unchecked(q, k, v, k, o);
              break;
            case Mem::VLA_UPROJ:
              vs[idx].step_unchecked(q, k, v, U.col(j).segment(h * kDh, kDh), o);
              break;
          }
          const int c = cp_of[static_cast<std::size_t>(b0 + j + 1)];
          if (c >= 0) {
            s_norm = mem == Mem::LA ? ls[idx].S().norm() : mem == Mem::DN ? ds[idx].S().norm() : vs[idx].S().norm();
            norms[(static_cast<std::size_t>(c) * kLayers + l) * kHeads + h] = s_norm;
          }
        }
      }
      X.noalias() += L.Wo * O;
      layer_norm_cols(X, Hn);
      M1.noalias() = L.W1 * Hn;
      M1 = M1.unaryExpr([](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); });
      X.noalias() += L.W2 * M1;
    }
  }
  return norms;
}

// ---- one head, out to T = 1e6 -----------------------------------------------------------------

enum class LongMem { LA, DN, VLA, VLA_F32, VLA_NOREFRESH, COUNT };
const char* long_name(int i) {
  static const char* n[] = {"linear_attention", "deltanet", "vla", "vla_float32", "vla_no_refresh"};
  return n[i];
}
constexpr int kLong = static_cast<int>(LongMem::COUNT);

struct LongResult {
  // [variant][cp]
  std::vector<std::vector<double>> s_norm, cond, align;
  std::vector<double> f32_diff;  // ‖S_f32 − S_f64‖_F / ‖S_f64‖_F per checkpoint
};

/// Head 0 of layer 1 of the model above (the same embeddings, LayerNorm and projections).
LongResult run_long(std::uint64_t seed, std::int64_t T, const std::vector<std::int64_t>& cps) {
  const Model m = make_model(seed);
  const Layer& L = m.layers[0];
  const Mat Wq = L.Wq.topRows(kDh), Wk = L.Wk.topRows(kDh), Wv = L.Wv.topRows(kDh);
  const Eigen::RowVectorXd wb = L.Wb.row(0);
  Rng r(seed_of("tokens-long", seed));

  vla::Config no_refresh;
  no_refresh.refresh_period = 0;
  vla::LinearAttentionState<double> la(kDh, kDh);
  vla::DeltaNetState<double> dn(kDh, kDh);
  vla::VlaState<double> va(kDh, kDh), vn(kDh, kDh, no_refresh);
  vla::VlaState<float> vf(kDh, kDh);

  LongResult res;
  for (auto* v : {&res.s_norm, &res.cond, &res.align})
    v->assign(kLong, std::vector<double>(cps.size(), std::nan("")));
  res.f32_diff.assign(cps.size(), std::nan(""));
  const std::int64_t B = 4096;
  Mat X(kD, B), Hn, Q, K, V;
  Eigen::MatrixXf Qf, Kf, Vf;
  Eigen::VectorXd o(kDh);
  Eigen::VectorXf of(kDh);
  std::size_t ci = 0;
  for (std::int64_t b0 = 0; b0 < T; b0 += B) {
    const std::int64_t nb = std::min(B, T - b0);
    X.resize(kD, nb);
    for (std::int64_t j = 0; j < nb; ++j) X.col(j) = m.E.col(r.below(kVocab));
    layer_norm_cols(X, Hn);
    Q.noalias() = Wq * Hn;
    K.noalias() = Wk * Hn;
    V.noalias() = Wv * Hn;
    phi_inplace(Q);
    phi_inplace(K);
    const Eigen::RowVectorXd beta = (wb * Hn).unaryExpr([](double x) { return sigmoid(x); });
    Qf = Q.cast<float>();
    Kf = K.cast<float>();
    Vf = V.cast<float>();
    for (std::int64_t j = 0; j < nb; ++j) {
      la.step_unchecked(Q.col(j), K.col(j), V.col(j), o);
      dn.step_unchecked(Q.col(j), K.col(j), V.col(j), beta[j], o);
      va.step_unchecked(Q.col(j), K.col(j), V.col(j), K.col(j), o);
      vn.step_unchecked(Q.col(j), K.col(j), V.col(j), K.col(j), o);
      vf.step_unchecked(Qf.col(j), Kf.col(j), Vf.col(j), Kf.col(j), of);
      if (ci < cps.size() && b0 + j + 1 == cps[ci]) {
        res.s_norm[0][ci] = la.S().norm();
        res.s_norm[1][ci] = dn.S().norm();
        using C = vla::DiagnosticsOptions::Condition;
        const auto rv = vla::measure<double>(va, K.col(j), C::Exact);
        const auto rn = vla::measure<double>(vn, K.col(j), C::Exact);
        const auto rf = vla::measure<float>(vf, Kf.col(j), C::Exact);
        const vla::DiagnosticRecord* rec[] = {&rv, &rf, &rn};
        const int at[] = {2, 3, 4};
        for (int i = 0; i < 3; ++i) {
          res.s_norm[at[i]][ci] = rec[i]->s_norm;
          res.cond[at[i]][ci] = rec[i]->cond;
          res.align[at[i]][ci] = rec[i]->alignment;
        }
        res.f32_diff[ci] = (vf.S().cast<double>() - va.S()).norm() / va.S().norm();
        ++ci;
      }
    }
  }
  return res;
}

}  // namespace

void run_state_norm(const Options& opt) {
  // ---- the 2-layer model ----
  const int seeds = 10;
  const std::int64_t T = 10000, T_ratio = 1000;
  const auto cps = log_checkpoints(T, 10, {T_ratio});
  std::size_t cp_ratio = 0;
  while (cps[cp_ratio] != T_ratio) ++cp_ratio;
  const Mem mems[] = {Mem::LA, Mem::DN, Mem::VLA, Mem::VLA_UPROJ};
  const int nm = 4;
  std::vector<std::vector<double>> out(static_cast<std::size_t>(seeds * nm));
  std::fprintf(stderr, "[state_norm] 2-layer model, %d seeds x %d memories, T = %lld\n", seeds, nm,
               static_cast<long long>(T));
  parallel_jobs(seeds * nm, opt.threads, [&](std::int64_t i) {
    const int s = static_cast<int>(i / nm), mi = static_cast<int>(i % nm);
    const Model m = make_model(static_cast<std::uint64_t>(s));
    out[static_cast<std::size_t>(i)] = run_model(m, make_tokens(static_cast<std::uint64_t>(s), T), mems[mi], cps);
  });
  auto at = [&](int s, int mi, std::size_t c, int l, int h) {
    return out[static_cast<std::size_t>(s * nm + mi)][(c * kLayers + static_cast<std::size_t>(l)) * kHeads +
                                                       static_cast<std::size_t>(h)];
  };
  // Mean over heads of one layer (l = -1: over both layers).
  auto head_mean = [&](int s, int mi, std::size_t c, int l) {
    double sum = 0;
    int n = 0;
    for (int ll = 0; ll < kLayers; ++ll)
      if (l < 0 || l == ll)
        for (int h = 0; h < kHeads; ++h, ++n) sum += at(s, mi, c, ll, h);
    return sum / n;
  };
  {
    Csv csv(opt.out_dir + "/state_norm_model.csv", "memory,layer,t,mean,sd,min,max,seeds");
    for (int mi = 0; mi < nm; ++mi)
      for (int l = -1; l < kLayers; ++l)
        for (std::size_t c = 0; c < cps.size(); ++c) {
          std::vector<double> x;
          for (int s = 0; s < seeds; ++s) x.push_back(head_mean(s, mi, c, l));
          const Stats st = stats(x);
          csv.row(mem_name(mems[mi]), l < 0 ? std::string("all") : std::to_string(l + 1), cps[c], st.mean, st.sd,
                  st.min, st.max, seeds);
        }
  }
  {
    Csv csv(opt.out_dir + "/state_norm_ratio.csv",
            "seed,la_over_vla,la_over_vla_layer1,la_over_vla_layer2,la_over_vla_per_head_median,la_over_dn,dn_over_vla,"
            "la_over_vla_uproj");
    std::vector<double> r_all, r_l1, r_l2, r_med, r_ladn, r_dnv, r_up, n_la, n_dn, n_v, n_vu;
    for (int s = 0; s < seeds; ++s) {
      const double la = head_mean(s, 0, cp_ratio, -1), dn = head_mean(s, 1, cp_ratio, -1),
                   v = head_mean(s, 2, cp_ratio, -1), vu = head_mean(s, 3, cp_ratio, -1);
      std::vector<double> per_head;
      for (int l = 0; l < kLayers; ++l)
        for (int h = 0; h < kHeads; ++h) per_head.push_back(at(s, 0, cp_ratio, l, h) / at(s, 2, cp_ratio, l, h));
      r_all.push_back(la / v);
      r_l1.push_back(head_mean(s, 0, cp_ratio, 0) / head_mean(s, 2, cp_ratio, 0));
      r_l2.push_back(head_mean(s, 0, cp_ratio, 1) / head_mean(s, 2, cp_ratio, 1));
      r_med.push_back(quantile(per_head, 0.5));
      r_ladn.push_back(la / dn);
      r_dnv.push_back(dn / v);
      r_up.push_back(la / vu);
      n_la.push_back(la);
      n_dn.push_back(dn);
      n_v.push_back(v);
      n_vu.push_back(vu);
      csv.row(s, r_all.back(), r_l1.back(), r_l2.back(), r_med.back(), r_ladn.back(), r_dnv.back(), r_up.back());
    }
    auto range = [](const Stats& st) { return "[" + fmt(st.min) + ", " + fmt(st.max) + "]"; };
    Table t({"quantity (seeds 0–9; at T = 1,000 unless stated)", "mean ± sd", "min–max over seeds"});
    auto add = [&](const std::string& what, const std::vector<double>& x) {
      const Stats st = stats(x);
      t.row({what, pm(st), range(st)});
    };
    add("**‖S‖_F(LA) / ‖S‖_F(VLA), both layers** (paper: 109×)", r_all);
    add("same, layer 1 only (a single layer of random projections)", r_l1);
    add("same, layer 2 only", r_l2);
    add("same, median over the 8 (layer, head) pairs", r_med);
    add("‖S‖_F(LA) / ‖S‖_F(VLA with u from its own projection)", r_up);
    add("‖S‖_F(LA) / ‖S‖_F(DeltaNet)", r_ladn);
    add("‖S‖_F(DeltaNet) / ‖S‖_F(VLA)", r_dnv);
    // Where the ratio reaches the paper's 109× (it grows about linearly with T): first crossing,
    // log-log interpolated between checkpoints, per seed.
    auto crossing = [&](int s, int l) {
      double prev_t = 0, prev_r = 0;
      for (std::size_t c = 0; c < cps.size(); ++c) {
        const double rr = head_mean(s, 0, c, l) / head_mean(s, 2, c, l), tt = static_cast<double>(cps[c]);
        if (rr >= 109.0) {
          if (c == 0) return tt;
          const double f = (std::log(109.0) - std::log(prev_r)) / (std::log(rr) - std::log(prev_r));
          return std::exp(std::log(prev_t) + f * (std::log(tt) - std::log(prev_t)));
        }
        prev_t = tt;
        prev_r = rr;
      }
      return std::nan("");
    };
    std::vector<double> x_all, x_l1;
    for (int s = 0; s < seeds; ++s) {
      x_all.push_back(crossing(s, -1));
      x_l1.push_back(crossing(s, 0));
    }
    add("T at which ‖S‖_F(LA) / ‖S‖_F(VLA) reaches 109×, both layers", x_all);
    add("same, layer 1 only", x_l1);
    add("‖S‖_F, linear attention (mean over layers and heads)", n_la);
    add("‖S‖_F, DeltaNet", n_dn);
    add("‖S‖_F, VLA (u = k)", n_v);
    add("‖S‖_F, VLA (u projected)", n_vu);
    t.write(opt, "state_norm_ratio",
            "Ratio of the layer-and-head mean ‖S‖_F, per seed, then mean ± sample sd over seeds 0–9 "
            "(each seed: new weights, embeddings and tokens).");
  }

  // ---- one head to T = 1e6 ----
  const int lseeds = 5;
  const std::int64_t TL = std::max<std::int64_t>(10000, std::llround(1e6 * opt.scale));
  const auto lcps = log_checkpoints(TL, 10);
  std::vector<LongResult> lres(lseeds);
  std::fprintf(stderr, "[state_norm] one head, %d seeds, T = %lld\n", lseeds, static_cast<long long>(TL));
  parallel_jobs(lseeds, opt.threads,
                [&](std::int64_t s) { lres[static_cast<std::size_t>(s)] = run_long(static_cast<std::uint64_t>(s), TL, lcps); });
  {
    Csv csv(opt.out_dir + "/state_norm_long.csv", "memory,t,s_mean,s_sd,s_min,s_max,cond_mean,cond_max,c_mean,seeds");
    for (int v = 0; v < kLong; ++v)
      for (std::size_t c = 0; c < lcps.size(); ++c) {
        std::vector<double> sn, cd, al;
        for (auto& r : lres) {
          sn.push_back(r.s_norm[v][c]);
          cd.push_back(r.cond[v][c]);
          al.push_back(r.align[v][c]);
        }
        const Stats a = stats(sn), b = stats(cd), g = stats(al);
        csv.row(long_name(v), lcps[c], a.mean, a.sd, a.min, a.max, b.mean, b.max, g.mean, lseeds);
      }
    Table t({"T", "‖S‖_F linear attn.", "‖S‖_F DeltaNet", "‖S‖_F VLA", "LA / VLA", "VLA float32 vs float64",
             "cond(A) VLA", "cond(A) VLA, refresh off"});
    for (std::int64_t Tq : {std::int64_t(1000), std::int64_t(10000), std::int64_t(100000), std::int64_t(1000000)}) {
      if (Tq > TL) continue;
      const std::size_t c = static_cast<std::size_t>(std::find(lcps.begin(), lcps.end(), Tq) - lcps.begin());
      if (c >= lcps.size()) continue;
      std::vector<double> la, dn, v, ratio, f32, cv, cn;
      for (auto& r : lres) {
        la.push_back(r.s_norm[0][c]);
        dn.push_back(r.s_norm[1][c]);
        v.push_back(r.s_norm[2][c]);
        ratio.push_back(r.s_norm[0][c] / r.s_norm[2][c]);
        f32.push_back(r.f32_diff[c]);
        cv.push_back(r.cond[2][c]);
        cn.push_back(r.cond[4][c]);
      }
      t.row({grouped(Tq), pm(stats(la)), pm(stats(dn)), pm(stats(v)), pm(stats(ratio)),
             fmt(stats(f32).max, 2), pm(stats(cv)), pm(stats(cn))});
    }
    t.write(opt, "state_norm_long",
            "One head (layer 1, head 0 of the model above: same embeddings, LayerNorm, projections, u = k), "
            "seeds 0–4, mean ± sd. “float32 vs float64” is the largest ‖S_f32 − S_f64‖_F / ‖S_f64‖_F over the seeds, same inputs. "
            "cond(A) is exact (eigenvalues of A in double).");
  }
}

}  // namespace vlaexp

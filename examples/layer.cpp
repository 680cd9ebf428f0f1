// layer: one multi-head VLA attention layer of a C++ model, prefill then decode, on Eigen matrices.
// Activations are row-per-token ([T, d_model]); the projections give [T, H·d] rows, which is the
// layout vla::forward_rows reads. The per-layer state cache (vla::HostStates) carries the sequence
// from the prompt into the decode steps.
#include <vla/vla.hpp>

#include <cstdio>

int main() {
  const int d_model = 64, H = 4, d = 16, T = 256;
  using Rows = vla::TokenRows<float>;
  const Eigen::MatrixXf Wq = Eigen::MatrixXf::Random(d_model, H * d) * 0.2f, Wk = Eigen::MatrixXf::Random(d_model, H * d) * 0.2f,
                        Wv = Eigen::MatrixXf::Random(d_model, H * d) * 0.2f, Wu = Eigen::MatrixXf::Random(H * d, H * d) * 0.2f;
  const vla::Config cfg;                           // the paper's constants
  vla::HostStates<float> cache(1, H, d, d, cfg);   // one sequence × H heads, fresh

  // Prefill: q = ELU(x Wq)+1, k_raw = x Wk, k = ELU(k_raw)+1, v = x Wv, u = k_raw Wu (the authors' layer,
  // without biases); then the recurrence over all T tokens, continuing from (and updating) the cache.
  const Rows x = Rows::Random(T, d_model);
  const Rows k_raw = x * Wk;
  const Rows q = vla::elu_plus_one(Rows(x * Wq)), k = vla::elu_plus_one(k_raw), v = x * Wv, u = k_raw * Wu;
  Rows o(T, H * d);
  vla::forward_rows(q, k, v, u, o, H, cfg, &cache);
  std::printf("prefill: %d tokens, |o| = %.4f, steps in the cache: %lld\n", T, o.norm(),
              static_cast<long long>(cache.get(0, 0).steps));

  // Decode: one token at a time through the same call (T = 1); a snapshot rolls a head back.
  const vla::VlaSnapshot<float> before = cache.get(0, 2);
  vla::CpuOptions decode;
  decode.check_positive_definite = false;  // the cache holds states vla wrote: skip the O(d³) check per call
  for (int step = 0; step < 4; ++step) {
    const Rows xt = Rows::Random(1, d_model);
    const Rows kt_raw = xt * Wk;
    Rows ot(1, H * d);
    vla::forward_rows(vla::elu_plus_one(Rows(xt * Wq)), vla::elu_plus_one(kt_raw), Rows(xt * Wv), Rows(kt_raw * Wu), ot,
                      H, cfg, &cache, decode);
    std::printf("decode step %d: |o_t| = %.4f\n", step, ot.norm());
  }
  cache.set(0, 2, before);  // e.g. rejected speculative tokens: head 2 back to the end of the prompt
  std::printf("head 2 rolled back to step %lld\n", static_cast<long long>(cache.get(0, 2).steps));
  return o.allFinite() ? 0 : 1;
}

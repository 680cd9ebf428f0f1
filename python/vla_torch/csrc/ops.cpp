// python/vla_torch/csrc/ops.cpp — vla's VLA op as PyTorch custom operators (TORCH_LIBRARY "vla"):
// vla::vla_forward and vla::vla_backward. CPU tensors (float32, float64) run vla's Eigen backend
// (vla::forward / vla::backward<backend::Cpu>, docs/maths.md §2 and §9); with VLA_TORCH_CUDA (the
// build found CUDA), CUDA tensors (float32, float16, bfloat16 tokens; the state float32) run vla's
// CUDA backend on torch's current stream (cuda_bridge.h; docs/cuda.md). The Python package
// (vla_torch/__init__.py) adds autograd and fake (meta) kernels. Shapes are vla's layouts
// (include/vla/layout.hpp): q, k, u [B, T, H, dk], v [B, T, H, dv], states A [N, H, dk, dk],
// S [N, H, dv, dk], z [N, H, dk], steps [N, H] (int64); with cu_seqlens (int64, N + 1 offsets) B = 1.
#ifdef VLA_TORCH_PYMODULE  // built by setup.py as the module vla_torch._C (importing it registers the ops)
#include <Python.h>
#endif
#include <torch/library.h>
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

#include <vla/vla.hpp>

#ifdef VLA_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_bridge.h"
#endif

namespace {

using torch::Tensor;

vla::Config make_config(double lambda0, double stab_eps, int64_t refresh_period, double refresh_eps, double denom_eps,
                        bool normalize_output) {
  vla::Config cfg;
  cfg.lambda0 = lambda0;
  cfg.stab_eps = stab_eps;
  cfg.refresh_period = static_cast<int>(refresh_period);
  cfg.refresh_eps = refresh_eps;
  cfg.denom_eps = denom_eps;
  cfg.normalize_output = normalize_output;
  return cfg;
}

struct Dims {
  int64_t batch, seq_len, heads, dk, dv, n_seq;
};

// The token tensors' checks (vla's own checks then cover values, states and configurations).
// on_gpu: the CUDA operators' rules (one CUDA device; float32, float16 or bfloat16 tokens).
Dims check_tokens(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& u, const std::optional<Tensor>& cu,
                  bool on_gpu = false) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && u.dim() == 4,
              "vla: q, k, u must be [B, T, H, dk] and v [B, T, H, dv]");
  const Dims d{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), q.size(0)};
  TORCH_CHECK(k.sizes() == q.sizes() && u.sizes() == q.sizes(), "vla: q, k and u must have the same shape");
  TORCH_CHECK(v.size(0) == d.batch && v.size(1) == d.seq_len && v.size(2) == d.heads, "vla: v must be [B, T, H, dv]");
  for (const Tensor* t : {&q, &k, &v, &u}) {
    TORCH_CHECK(t->device() == q.device(), "vla: q, k, v and u must be on one device");
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "vla: q, k, v and u must have one dtype");
  }
  if (on_gpu) {
    TORCH_CHECK(q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kHalf ||
                    q.scalar_type() == torch::kBFloat16,
                "vla: the CUDA backend takes float32, float16 or bfloat16 tokens (its state is float32)");
  } else {
    TORCH_CHECK(q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kDouble,
                "vla: the CPU backend takes float32 or float64 tensors");
  }
  Dims out = d;
  if (cu) {
    // On the GPU cu_seqlens may be a CPU or a CUDA tensor: the operator makes the copy it lacks.
    TORCH_CHECK(cu->scalar_type() == torch::kLong && cu->dim() == 1 && cu->numel() >= 1 &&
                    (cu->device().is_cpu() || (on_gpu && cu->device() == q.device())),
                on_gpu ? "vla: cu_seqlens must be a 1-D int64 tensor of N + 1 offsets, on the CPU or the tokens' device"
                       : "vla: cu_seqlens must be a 1-D int64 CPU tensor of N + 1 offsets");
    TORCH_CHECK(d.batch == 1, "vla: with cu_seqlens the token tensors are [1, total_T, H, d]");
    out.n_seq = cu->numel() - 1;
  }
  return out;
}

// vla takes a null token pointer for a caller's mistake, even with no tokens; an empty tensor's
// data_ptr is null, so zero-token calls point at this (never read).
template <class Scalar>
Scalar* data_or_dummy(const Tensor& t) {
  static Scalar dummy[1] = {};
  return t.numel() ? t.data_ptr<Scalar>() : dummy;
}

template <class Scalar>
vla::ForwardArgs<Scalar, Scalar> forward_args(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v,
                                              const Tensor& u, const std::optional<Tensor>& cu) {
  vla::ForwardArgs<Scalar, Scalar> a;
  a.batch = d.n_seq;
  a.seq_len = cu ? 0 : d.seq_len;
  a.heads = d.heads;
  a.dk = d.dk;
  a.dv = d.dv;
  a.cu_seqlens = cu ? cu->data_ptr<int64_t>() : nullptr;
  a.q = data_or_dummy<Scalar>(q);
  a.k = data_or_dummy<Scalar>(k);
  a.v = data_or_dummy<Scalar>(v);
  a.u = data_or_dummy<Scalar>(u);
  return a;
}

// An initial state is all of (A, S, z, steps) or none of them.
bool check_state(const Dims& d, const std::optional<Tensor>& A, const std::optional<Tensor>& S,
                 const std::optional<Tensor>& z, const std::optional<Tensor>& steps, torch::ScalarType dt,
                 const torch::Device& dev) {
  const int given = A.has_value() + S.has_value() + z.has_value() + steps.has_value();
  TORCH_CHECK(given == 0 || given == 4, "vla: give all of A0, S0, z0, steps0 or none");
  if (!given) return false;
  TORCH_CHECK(A->device() == dev && S->device() == dev && z->device() == dev && steps->device() == dev,
              "vla: the initial state must be on the tokens' device");
  TORCH_CHECK(A->sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dk, d.dk}), "vla: A0 must be [N, H, dk, dk]");
  TORCH_CHECK(S->sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dv, d.dk}), "vla: S0 must be [N, H, dv, dk]");
  TORCH_CHECK(z->sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dk}), "vla: z0 must be [N, H, dk]");
  TORCH_CHECK(steps->sizes() == torch::IntArrayRef({d.n_seq, d.heads}) && steps->scalar_type() == torch::kLong,
              "vla: steps0 must be int64 [N, H]");
  TORCH_CHECK(A->scalar_type() == dt && S->scalar_type() == dt && z->scalar_type() == dt,
              dt == torch::kFloat ? "vla: the state must be float32" : "vla: the state must have the tokens' dtype");
  return true;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> vla_forward_cpu(
    const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& u_, const std::optional<Tensor>& cu,
    const std::optional<Tensor>& A0_, const std::optional<Tensor>& S0_, const std::optional<Tensor>& z0_,
    const std::optional<Tensor>& steps0_, double lambda0, double stab_eps, int64_t refresh_period, double refresh_eps,
    double denom_eps, bool normalize_output) {
  const Dims d = check_tokens(q_, k_, v_, u_, cu);
  const Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous(), u = u_.contiguous();
  const bool init = check_state(d, A0_, S0_, z0_, steps0_, q.scalar_type(), q.device());
  const auto opts = q.options();
  Tensor o = torch::empty({d.batch, d.seq_len, d.heads, d.dv}, opts);
  Tensor A = torch::empty({d.n_seq, d.heads, d.dk, d.dk}, opts), S = torch::empty({d.n_seq, d.heads, d.dv, d.dk}, opts),
         z = torch::empty({d.n_seq, d.heads, d.dk}, opts),
         steps = torch::empty({d.n_seq, d.heads}, opts.dtype(torch::kLong));
  Tensor A0, S0, z0, steps0;
  if (init) A0 = A0_->contiguous(), S0 = S0_->contiguous(), z0 = z0_->contiguous(), steps0 = steps0_->contiguous();
  const vla::Config cfg = make_config(lambda0, stab_eps, refresh_period, refresh_eps, denom_eps, normalize_output);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "vla_forward", [&] {
    auto a = forward_args<scalar_t>(d, q, k, v, u, cu);
    a.o = data_or_dummy<scalar_t>(o);
    if (init)
      a.initial_state = {A0.data_ptr<scalar_t>(), S0.data_ptr<scalar_t>(), z0.data_ptr<scalar_t>(),
                         steps0.data_ptr<int64_t>()};
    a.final_state = {A.data_ptr<scalar_t>(), S.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), steps.data_ptr<int64_t>()};
    vla::CpuOptions opt;
    opt.threads = 0;  // all hardware threads over (sequence, head); results do not depend on it
    try {
      vla::forward<vla::backend::Cpu, vla::op::Vla>(a, cfg, opt);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK(false, e.what());
    }
  });
  return {o, A, S, z, steps};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> vla_backward_cpu(
    const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& u_, const std::optional<Tensor>& cu,
    const std::optional<Tensor>& A0_, const std::optional<Tensor>& S0_, const std::optional<Tensor>& z0_,
    const std::optional<Tensor>& steps0_, const Tensor& d_o_, const std::optional<Tensor>& dA_,
    const std::optional<Tensor>& dS_, const std::optional<Tensor>& dz_, double lambda0, double stab_eps,
    int64_t refresh_period, double refresh_eps, double denom_eps, bool normalize_output) {
  const Dims d = check_tokens(q_, k_, v_, u_, cu);
  const Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous(), u = u_.contiguous();
  const bool init = check_state(d, A0_, S0_, z0_, steps0_, q.scalar_type(), q.device());
  TORCH_CHECK(d_o_.sizes() == torch::IntArrayRef({d.batch, d.seq_len, d.heads, d.dv}) &&
                  d_o_.scalar_type() == q.scalar_type(),
              "vla: d_o must be shaped like o, with the tokens' dtype");
  const Tensor d_o = d_o_.contiguous();
  // The final state's gradient: any part may be absent (None: zero).
  const auto opts = q.options();
  const Tensor dA = dA_ ? dA_->contiguous() : torch::zeros({d.n_seq, d.heads, d.dk, d.dk}, opts);
  const Tensor dS = dS_ ? dS_->contiguous() : torch::zeros({d.n_seq, d.heads, d.dv, d.dk}, opts);
  const Tensor dz = dz_ ? dz_->contiguous() : torch::zeros({d.n_seq, d.heads, d.dk}, opts);
  TORCH_CHECK(dA.sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dk, d.dk}) &&
                  dS.sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dv, d.dk}) &&
                  dz.sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dk}),
              "vla: the final state's gradients must be shaped like the state");
  Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v), du = torch::empty_like(u);
  Tensor dA0 = torch::empty({d.n_seq, d.heads, d.dk, d.dk}, opts), dS0 = torch::empty({d.n_seq, d.heads, d.dv, d.dk}, opts),
         dz0 = torch::empty({d.n_seq, d.heads, d.dk}, opts);
  Tensor A0, S0, z0, steps0;
  if (init) A0 = A0_->contiguous(), S0 = S0_->contiguous(), z0 = z0_->contiguous(), steps0 = steps0_->contiguous();
  Tensor o_unused = torch::empty_like(d_o);
  const vla::Config cfg = make_config(lambda0, stab_eps, refresh_period, refresh_eps, denom_eps, normalize_output);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "vla_backward", [&] {
    auto a = forward_args<scalar_t>(d, q, k, v, u, cu);
    a.o = data_or_dummy<scalar_t>(o_unused);  // required by the shared checks; the backward does not write it
    if (init)
      a.initial_state = {A0.data_ptr<scalar_t>(), S0.data_ptr<scalar_t>(), z0.data_ptr<scalar_t>(),
                         steps0.data_ptr<int64_t>()};
    vla::GradArgs<scalar_t, scalar_t> g;
    g.d_o = data_or_dummy<scalar_t>(d_o);
    g.d_final_state = {dA.data_ptr<scalar_t>(), dS.data_ptr<scalar_t>(), dz.data_ptr<scalar_t>(), nullptr};
    g.d_q = data_or_dummy<scalar_t>(dq);
    g.d_k = data_or_dummy<scalar_t>(dk);
    g.d_v = data_or_dummy<scalar_t>(dv);
    g.d_u = data_or_dummy<scalar_t>(du);
    g.d_initial_state = {dA0.data_ptr<scalar_t>(), dS0.data_ptr<scalar_t>(), dz0.data_ptr<scalar_t>(), nullptr};
    vla::CpuOptions opt;
    opt.threads = 0;
    try {
      vla::backward<vla::backend::Cpu, vla::op::Vla>(a, g, cfg, opt);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK(false, e.what());
    }
  });
  return {dq, dk, dv, du, dA0, dS0, dz0};
}

#ifdef VLA_TORCH_CUDA
// ---- CUDA tensors: vla's CUDA backend (docs/cuda.md) on torch's current stream -----------------

// The kernels read tokens with 16-byte loads and take 16-byte aligned buffers: a contiguous view
// that starts off that alignment (a slice, say) is copied.
Tensor gpu_buffer(const Tensor& t) {
  Tensor c = t.contiguous();
  if (reinterpret_cast<std::uintptr_t>(c.data_ptr()) % 16) c = c.clone();
  if (!c.numel()) c = torch::empty({16}, c.options());  // a real device address for zero tokens (never read)
  return c;
}

template <class In>
In* gpu_ptr(const Tensor& t) {
  return reinterpret_cast<In*>(t.data_ptr());
}

// cu_seqlens on the device for the kernels, and on the host for vla's checks (no stream wait).
struct GpuSeqlens {
  Tensor device, host;
  GpuSeqlens(const std::optional<Tensor>& cu, const torch::Device& dev) {
    if (!cu) return;
    host = cu->to(torch::kCPU).contiguous();
    device = cu->to(dev).contiguous();
  }
  const int64_t* dev_ptr() const { return device.defined() ? device.data_ptr<int64_t>() : nullptr; }
  const int64_t* host_ptr() const { return host.defined() ? host.data_ptr<int64_t>() : nullptr; }
};

// Calls fn(TokenTag<In>{}) with In the token type of dtype t (float, __half, __nv_bfloat16).
template <class In>
struct TokenTag {
  using type = In;
};
template <class Fn>
void dispatch_gpu_tokens(torch::ScalarType t, Fn&& fn) {
  if (t == torch::kFloat)
    fn(TokenTag<float>{});
  else if (t == torch::kHalf)
    fn(TokenTag<__half>{});
  else
    fn(TokenTag<__nv_bfloat16>{});
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> vla_forward_cuda(
    const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& u_, const std::optional<Tensor>& cu,
    const std::optional<Tensor>& A0_, const std::optional<Tensor>& S0_, const std::optional<Tensor>& z0_,
    const std::optional<Tensor>& steps0_, double lambda0, double stab_eps, int64_t refresh_period, double refresh_eps,
    double denom_eps, bool normalize_output) {
  const Dims d = check_tokens(q_, k_, v_, u_, cu, /*on_gpu=*/true);
  const c10::cuda::CUDAGuard guard(q_.device());
  const bool init = check_state(d, A0_, S0_, z0_, steps0_, torch::kFloat, q_.device());
  const Tensor q = gpu_buffer(q_), k = gpu_buffer(k_), v = gpu_buffer(v_), u = gpu_buffer(u_);
  const GpuSeqlens seq(cu, q_.device());
  const auto st_opts = q_.options().dtype(torch::kFloat);
  Tensor o = torch::empty({d.batch, d.seq_len, d.heads, d.dv}, q_.options());
  Tensor o_buf = gpu_buffer(o);  // o itself unless it has no elements
  Tensor A = torch::empty({d.n_seq, d.heads, d.dk, d.dk}, st_opts), S = torch::empty({d.n_seq, d.heads, d.dv, d.dk}, st_opts),
         z = torch::empty({d.n_seq, d.heads, d.dk}, st_opts),
         steps = torch::empty({d.n_seq, d.heads}, st_opts.dtype(torch::kLong));
  Tensor A0, S0, z0, steps0;
  if (init) A0 = gpu_buffer(*A0_), S0 = gpu_buffer(*S0_), z0 = gpu_buffer(*z0_), steps0 = gpu_buffer(*steps0_);
  const vla::Config cfg = make_config(lambda0, stab_eps, refresh_period, refresh_eps, denom_eps, normalize_output);
  std::string error;
  dispatch_gpu_tokens(q.scalar_type(), [&](auto tag) {
    using In = typename decltype(tag)::type;
    vla::ForwardArgs<In, float> a;
    a.batch = d.n_seq, a.seq_len = cu ? 0 : d.seq_len, a.heads = d.heads, a.dk = d.dk, a.dv = d.dv;
    a.cu_seqlens = seq.dev_ptr();
    a.q = gpu_ptr<In>(q), a.k = gpu_ptr<In>(k), a.v = gpu_ptr<In>(v), a.u = gpu_ptr<In>(u), a.o = gpu_ptr<In>(o_buf);
    if (init)
      a.initial_state = {A0.data_ptr<float>(), S0.data_ptr<float>(), z0.data_ptr<float>(), steps0.data_ptr<int64_t>()};
    if (d.n_seq * d.heads > 0)
      a.final_state = {A.data_ptr<float>(), S.data_ptr<float>(), z.data_ptr<float>(), steps.data_ptr<int64_t>()};
    error = vla_torch::forward_on_gpu<In>(a, cfg, at::cuda::getCurrentCUDAStream().stream(), seq.host_ptr());
  });
  TORCH_CHECK(error.empty(), error);
  return {o, A, S, z, steps};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> vla_backward_cuda(
    const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& u_, const std::optional<Tensor>& cu,
    const std::optional<Tensor>& A0_, const std::optional<Tensor>& S0_, const std::optional<Tensor>& z0_,
    const std::optional<Tensor>& steps0_, const Tensor& d_o_, const std::optional<Tensor>& dA_,
    const std::optional<Tensor>& dS_, const std::optional<Tensor>& dz_, double lambda0, double stab_eps,
    int64_t refresh_period, double refresh_eps, double denom_eps, bool normalize_output) {
  const Dims d = check_tokens(q_, k_, v_, u_, cu, /*on_gpu=*/true);
  const c10::cuda::CUDAGuard guard(q_.device());
  const bool init = check_state(d, A0_, S0_, z0_, steps0_, torch::kFloat, q_.device());
  TORCH_CHECK(d_o_.sizes() == torch::IntArrayRef({d.batch, d.seq_len, d.heads, d.dv}) &&
                  d_o_.scalar_type() == q_.scalar_type() && d_o_.device() == q_.device(),
              "vla: d_o must be shaped like o, with the tokens' dtype and device");
  const Tensor q = gpu_buffer(q_), k = gpu_buffer(k_), v = gpu_buffer(v_), u = gpu_buffer(u_), d_o = gpu_buffer(d_o_);
  const GpuSeqlens seq(cu, q_.device());
  const auto st_opts = q_.options().dtype(torch::kFloat);
  // The final state's gradient: all of it or none (vla's rule); a missing part is zero.
  const bool has_dfinal = dA_ || dS_ || dz_;
  Tensor dA, dS, dz;
  if (has_dfinal) {
    for (const auto* t : {&dA_, &dS_, &dz_})
      TORCH_CHECK(!*t || ((*t)->scalar_type() == torch::kFloat && (*t)->device() == q_.device()),
                  "vla: the final state's gradients must be float32 on the tokens' device");
    dA = gpu_buffer(dA_ ? *dA_ : torch::zeros({d.n_seq, d.heads, d.dk, d.dk}, st_opts));
    dS = gpu_buffer(dS_ ? *dS_ : torch::zeros({d.n_seq, d.heads, d.dv, d.dk}, st_opts));
    dz = gpu_buffer(dz_ ? *dz_ : torch::zeros({d.n_seq, d.heads, d.dk}, st_opts));
    TORCH_CHECK((!dA_ || dA_->sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dk, d.dk})) &&
                    (!dS_ || dS_->sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dv, d.dk})) &&
                    (!dz_ || dz_->sizes() == torch::IntArrayRef({d.n_seq, d.heads, d.dk})),
                "vla: the final state's gradients must be shaped like the state");
  }
  Tensor dq = torch::empty(q_.sizes(), q_.options()), dk = torch::empty(k_.sizes(), k_.options()),
         dv = torch::empty(v_.sizes(), v_.options()), du = torch::empty(u_.sizes(), u_.options());
  const Tensor dq_buf = gpu_buffer(dq), dk_buf = gpu_buffer(dk), dv_buf = gpu_buffer(dv), du_buf = gpu_buffer(du);
  Tensor dA0 = torch::empty({d.n_seq, d.heads, d.dk, d.dk}, st_opts), dS0 = torch::empty({d.n_seq, d.heads, d.dv, d.dk}, st_opts),
         dz0 = torch::empty({d.n_seq, d.heads, d.dk}, st_opts);
  Tensor A0, S0, z0, steps0;
  if (init) A0 = gpu_buffer(*A0_), S0 = gpu_buffer(*S0_), z0 = gpu_buffer(*z0_), steps0 = gpu_buffer(*steps0_);
  const vla::Config cfg = make_config(lambda0, stab_eps, refresh_period, refresh_eps, denom_eps, normalize_output);
  Tensor o_unused = gpu_buffer(torch::empty({0}, q.options()));  // required by the shared checks; not written
  std::string error;
  dispatch_gpu_tokens(q.scalar_type(), [&](auto tag) {
    using In = typename decltype(tag)::type;
    vla::ForwardArgs<In, float> a;
    a.batch = d.n_seq, a.seq_len = cu ? 0 : d.seq_len, a.heads = d.heads, a.dk = d.dk, a.dv = d.dv;
    a.cu_seqlens = seq.dev_ptr();
    a.q = gpu_ptr<In>(q), a.k = gpu_ptr<In>(k), a.v = gpu_ptr<In>(v), a.u = gpu_ptr<In>(u), a.o = gpu_ptr<In>(o_unused);
    if (init)
      a.initial_state = {A0.data_ptr<float>(), S0.data_ptr<float>(), z0.data_ptr<float>(), steps0.data_ptr<int64_t>()};
    vla::GradArgs<In, float> g;
    g.d_o = gpu_ptr<In>(d_o);
    if (has_dfinal) g.d_final_state = {dA.data_ptr<float>(), dS.data_ptr<float>(), dz.data_ptr<float>(), nullptr};
    g.d_q = gpu_ptr<In>(dq_buf), g.d_k = gpu_ptr<In>(dk_buf), g.d_v = gpu_ptr<In>(dv_buf), g.d_u = gpu_ptr<In>(du_buf);
    if (d.n_seq * d.heads > 0)
      g.d_initial_state = {dA0.data_ptr<float>(), dS0.data_ptr<float>(), dz0.data_ptr<float>(), nullptr};
    error = vla_torch::backward_on_gpu<In>(a, g, cfg, at::cuda::getCurrentCUDAStream().stream(), seq.host_ptr());
  });
  TORCH_CHECK(error.empty(), error);
  return {dq, dk, dv, du, dA0, dS0, dz0};
}
#endif  // VLA_TORCH_CUDA

}  // namespace

TORCH_LIBRARY(vla, m) {
  m.def(
      "vla_forward(Tensor q, Tensor k, Tensor v, Tensor u, Tensor? cu_seqlens, Tensor? A0, Tensor? S0, Tensor? z0, "
      "Tensor? steps0, float lambda0, float stab_eps, int refresh_period, float refresh_eps, float denom_eps, "
      "bool normalize_output) -> (Tensor o, Tensor A, Tensor S, Tensor z, Tensor steps)");
  m.def(
      "vla_backward(Tensor q, Tensor k, Tensor v, Tensor u, Tensor? cu_seqlens, Tensor? A0, Tensor? S0, Tensor? z0, "
      "Tensor? steps0, Tensor d_o, Tensor? dA, Tensor? dS, Tensor? dz, float lambda0, float stab_eps, "
      "int refresh_period, float refresh_eps, float denom_eps, bool normalize_output) -> "
      "(Tensor dq, Tensor dk, Tensor dv, Tensor du, Tensor dA0, Tensor dS0, Tensor dz0)");
}

TORCH_LIBRARY_IMPL(vla, CPU, m) {
  m.impl("vla_forward", &vla_forward_cpu);
  m.impl("vla_backward", &vla_backward_cpu);
}

#ifdef VLA_TORCH_CUDA
TORCH_LIBRARY_IMPL(vla, CUDA, m) {
  m.impl("vla_forward", &vla_forward_cuda);
  m.impl("vla_backward", &vla_backward_cuda);
}
#endif

#ifdef VLA_TORCH_PYMODULE
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "vla's operators (torch.ops.vla)", -1, nullptr};
  return PyModule_Create(&module);
}
#endif

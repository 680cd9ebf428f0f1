// python/vla_torch/csrc/ops.cpp — vla's ops as PyTorch custom operators (TORCH_LIBRARY "vla"):
// vla_forward / vla_backward (docs/maths.md §2, §9), linear_attention_forward / _backward and
// deltanet_forward / _backward (the baselines of §7), and each op's decode step (*_decode_step: one
// token per sequence, the state updated in place). CPU tensors (float32, float64) run vla's Eigen
// backend (vla::forward / vla::backward<backend::Cpu, Op>); with VLA_TORCH_CUDA (the build found
// CUDA), CUDA tensors (float32, float16, bfloat16 tokens; the state float32) run vla's CUDA backend
// on torch's current stream (cuda_bridge.h; docs/cuda.md; the baselines' CUDA backward is not built
// and says so). One implementation serves every op (its traits: vla::op::*::uses_u, uses_beta,
// uses_A, uses_z, uses_steps); the schemas below take and return only the parts an op has.
// The Python package (vla_torch/__init__.py) adds autograd and fake (meta) kernels. Shapes are vla's
// layouts (include/vla/layout.hpp): q, k, u [B, T, H, dk], v [B, T, H, dv], beta [B, T, H], states
// A [N, H, dk, dk], S [N, H, dv, dk], z [N, H, dk], steps [N, H] (int64); with cu_seqlens (int64,
// N + 1 offsets) B = 1.
#ifdef VLA_TORCH_PYMODULE  // built by setup.py as the module vla_torch._C (importing it registers the ops)
#include <Python.h>
#endif
#include <torch/library.h>
#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>

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
using OptTensor = std::optional<Tensor>;

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
  bool gpu;
};

// The tensors' checks (vla's own checks then cover values, states and configurations). x is u
// (VLA, shaped like q) or beta (DeltaNet, [B, T, H]); linear attention has none.
template <class Op>
Dims check_tokens(const Tensor& q, const Tensor& k, const Tensor& v, const OptTensor& x, const OptTensor& cu) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "vla: q, k", Op::uses_u ? ", u" : "",
              " must be [B, T, H, dk] and v [B, T, H, dv]");
  const Dims d{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), q.size(0), q.device().is_cuda()};
  TORCH_CHECK(k.sizes() == q.sizes(), "vla: q, k", Op::uses_u ? " and u" : "", " must have the same shape");
  TORCH_CHECK(v.size(0) == d.batch && v.size(1) == d.seq_len && v.size(2) == d.heads, "vla: v must be [B, T, H, dv]");
  if (Op::uses_u) TORCH_CHECK(x && x->sizes() == q.sizes(), "vla: q, k and u must have the same shape");
  if (Op::uses_beta)
    TORCH_CHECK(x && x->sizes() == torch::IntArrayRef({d.batch, d.seq_len, d.heads}), "vla: beta must be [B, T, H]");
  for (const Tensor* t : {&q, &k, &v, x ? &*x : &q}) {
    TORCH_CHECK(t->device() == q.device(), "vla: the token tensors must be on one device");
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "vla: the token tensors must have one dtype");
  }
  if (d.gpu) {
#ifdef VLA_TORCH_CUDA
    TORCH_CHECK(q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kHalf ||
                    q.scalar_type() == torch::kBFloat16,
                "vla: the CUDA backend takes float32, float16 or bfloat16 tokens (its state is float32)");
#else
    TORCH_CHECK(false, "vla: this build of vla_torch has no CUDA operators (built without CUDA)");
#endif
  } else {
    TORCH_CHECK(q.device().is_cpu(), "vla: tensors on ", q.device(), " are not supported (CPU or CUDA)");
    TORCH_CHECK(q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kDouble,
                "vla: the CPU backend takes float32 or float64 tensors");
  }
  Dims out = d;
  if (cu) {
    // On the GPU cu_seqlens may be a CPU or a CUDA tensor: the operator makes the copy it lacks.
    TORCH_CHECK(cu->scalar_type() == torch::kLong && cu->dim() == 1 && cu->numel() >= 1 &&
                    (cu->device().is_cpu() || (d.gpu && cu->device() == q.device())),
                d.gpu ? "vla: cu_seqlens must be a 1-D int64 tensor of N + 1 offsets, on the CPU or the tokens' device"
                      : "vla: cu_seqlens must be a 1-D int64 CPU tensor of N + 1 offsets");
    TORCH_CHECK(d.batch == 1, "vla: with cu_seqlens the token tensors are [1, total_T, H, d]");
    out.n_seq = cu->numel() - 1;
  }
  return out;
}

torch::ScalarType state_dtype(const Dims& d, const Tensor& q) { return d.gpu ? torch::kFloat : q.scalar_type(); }

// A state's parts, as given (A and steps: VLA; z: VLA and linear attention; S: every op).
struct StateParts {
  OptTensor A, S, z, steps;
};

std::vector<int64_t> part_shape(const Dims& d, char part) {
  switch (part) {
    case 'A': return {d.n_seq, d.heads, d.dk, d.dk};
    case 'S': return {d.n_seq, d.heads, d.dv, d.dk};
    case 'z': return {d.n_seq, d.heads, d.dk};
    default: return {d.n_seq, d.heads};
  }
}

// An initial state is all of the op's parts or none of them.
template <class Op>
bool check_state(const Dims& d, const StateParts& s, torch::ScalarType dt, const torch::Device& dev) {
  const int given = s.A.has_value() + s.S.has_value() + s.z.has_value() + s.steps.has_value();
  const int needed = 1 + Op::uses_A + Op::uses_z + Op::uses_steps;
  TORCH_CHECK(given == 0 || given == needed, "vla: give all of the initial state (", Op::uses_A ? "A0, " : "", "S0",
              Op::uses_z ? ", z0" : "", Op::uses_steps ? ", steps0" : "", ") or none");
  if (!given) return false;
  const std::pair<const OptTensor*, char> parts[] = {{&s.A, 'A'}, {&s.S, 'S'}, {&s.z, 'z'}, {&s.steps, 't'}};
  for (const auto& [t, part] : parts) {
    if (!*t) continue;
    TORCH_CHECK((*t)->device() == dev, "vla: the initial state must be on the tokens' device");
    TORCH_CHECK((*t)->sizes() == torch::IntArrayRef(part_shape(d, part)), "vla: ",
                part == 'A' ? "A0 must be [N, H, dk, dk]" : part == 'S' ? "S0 must be [N, H, dv, dk]"
                : part == 'z' ? "z0 must be [N, H, dk]" : "steps0 must be int64 [N, H]");
    TORCH_CHECK(part == 't' ? (*t)->scalar_type() == torch::kLong : (*t)->scalar_type() == dt,
                part == 't' ? "vla: steps0 must be int64 [N, H]"
                : dt == torch::kFloat ? "vla: the state must be float32" : "vla: the state must have the tokens' dtype");
  }
  return true;
}

// A buffer vla may read with 16-byte loads: contiguous, 16-byte aligned (a view off that alignment,
// a slice say, is copied), and for zero elements a real allocation (vla takes a null pointer for a
// caller's mistake, even with no tokens; it never reads this one).
Tensor buffer(const Tensor& t) {
  Tensor c = t.contiguous();
  if (reinterpret_cast<std::uintptr_t>(c.data_ptr()) % 16) c = c.clone();
  if (!c.numel()) c = torch::empty({16}, c.options());
  return c;
}
Tensor buffer(const OptTensor& t) { return t ? buffer(*t) : Tensor(); }

template <class T>
T* ptr(const Tensor& t) {
  return t.defined() ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

// cu_seqlens where the backend reads it, and a host copy for the CUDA backend's checks (no stream wait).
struct Seqlens {
  Tensor backend, host;
  Seqlens(const OptTensor& cu, const Dims& d, const torch::Device& dev) {
    if (!cu) return;
    host = cu->to(torch::kCPU).contiguous();
    backend = d.gpu ? cu->to(dev).contiguous() : host;
  }
  const int64_t* ptr() const { return backend.defined() ? backend.data_ptr<int64_t>() : nullptr; }
  const int64_t* host_ptr() const { return host.defined() ? host.data_ptr<int64_t>() : nullptr; }
};

// Calls fn(Types<In, St, Gpu>{}) for the tensors' dtype and device: CPU float/double (St = In),
// CUDA float/__half/__nv_bfloat16 (St = float).
template <class In_, class St_, bool Gpu_>
struct Types {
  using In = In_;
  using St = St_;
  static constexpr bool gpu = Gpu_;
};
template <class Fn>
void dispatch(const Dims& d, torch::ScalarType t, Fn&& fn) {
  if (!d.gpu) {
    if (t == torch::kDouble)
      fn(Types<double, double, false>{});
    else
      fn(Types<float, float, false>{});
    return;
  }
#ifdef VLA_TORCH_CUDA
  if (t == torch::kFloat)
    fn(Types<float, float, true>{});
  else if (t == torch::kHalf)
    fn(Types<__half, float, true>{});
  else
    fn(Types<__nv_bfloat16, float, true>{});
#endif
}

template <class St, class Op>
vla::StateBuffers<St> state_buffers(const Tensor& A, const Tensor& S, const Tensor& z, const Tensor& steps) {
  using Steps = typename vla::StateBuffers<St>::Steps;
  return {Op::uses_A ? ptr<St>(A) : nullptr, ptr<St>(S), Op::uses_z ? ptr<St>(z) : nullptr,
          Op::uses_steps ? ptr<Steps>(steps) : nullptr};
}

// The forward's buffers, as the forward and the backward both pass them (o: the forward's output,
// or a dummy the backward's shared checks require and nothing writes).
template <class Op, class In, class St>
vla::ForwardArgs<In, St> forward_args(const Dims& d, const Seqlens& seq, const Tensor& q, const Tensor& k,
                                      const Tensor& v, const Tensor& x, const Tensor& o, bool init,
                                      const StateParts& s0) {
  vla::ForwardArgs<In, St> a;
  a.batch = d.n_seq, a.seq_len = seq.backend.defined() ? 0 : d.seq_len, a.heads = d.heads, a.dk = d.dk, a.dv = d.dv;
  a.cu_seqlens = seq.ptr();
  a.q = ptr<In>(q), a.k = ptr<In>(k), a.v = ptr<In>(v), a.o = ptr<In>(o);
  (Op::uses_beta ? a.beta : a.u) = ptr<In>(x);
  if (init) {
    const auto b = state_buffers<St, Op>(*s0.A, *s0.S, *s0.z, *s0.steps);
    a.initial_state = {b.A, b.S, b.z, b.steps};
  }
  return a;
}

// The backend call, an exception with vla's message on refusal.
template <class Op, class T>
void run_forward(const vla::ForwardArgs<typename T::In, typename T::St>& a, const vla::Config& cfg, const Seqlens& seq) {
  if constexpr (T::gpu) {
#ifdef VLA_TORCH_CUDA
    const std::string error = vla_torch::forward_on_gpu<Op, typename T::In>(
        a, cfg, at::cuda::getCurrentCUDAStream().stream(), seq.host_ptr());
    TORCH_CHECK(error.empty(), error);
#endif
  } else {
    (void)seq;
    vla::CpuOptions opt;
    opt.threads = 0;  // all hardware threads over (sequence, head); results do not depend on it
    try {
      vla::forward<vla::backend::Cpu, Op>(a, cfg, opt);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK(false, e.what());
    }
  }
}

template <class Op, class T>
void run_backward(const vla::ForwardArgs<typename T::In, typename T::St>& a,
                  const vla::GradArgs<typename T::In, typename T::St>& g, const vla::Config& cfg, const Seqlens& seq) {
  if constexpr (T::gpu) {
#ifdef VLA_TORCH_CUDA
    const std::string error = vla_torch::backward_on_gpu<Op, typename T::In>(
        a, g, cfg, at::cuda::getCurrentCUDAStream().stream(), seq.host_ptr());
    TORCH_CHECK(error.empty(), error);
#endif
  } else {
    (void)seq;
    vla::CpuOptions opt;
    opt.threads = 0;
    try {
      vla::backward<vla::backend::Cpu, Op>(a, g, cfg, opt);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK(false, e.what());
    }
  }
}

struct DeviceGuard {
#ifdef VLA_TORCH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  explicit DeviceGuard(const Tensor& t) {
    if (t.device().is_cuda()) guard.emplace(t.device());
  }
#else
  explicit DeviceGuard(const Tensor&) {}
#endif
};

// Every op's forward: o and the final state (A, S, z, steps; the parts an op lacks are undefined).
template <class Op>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_impl(const Tensor& q_, const Tensor& k_, const Tensor& v_,
                                                                const OptTensor& x_, const OptTensor& cu,
                                                                const StateParts& s0, const vla::Config& cfg) {
  const Dims d = check_tokens<Op>(q_, k_, v_, x_, cu);
  const DeviceGuard guard(q_);
  const torch::ScalarType sdt = state_dtype(d, q_);
  const bool init = check_state<Op>(d, s0, sdt, q_.device());
  const Tensor q = buffer(q_), k = buffer(k_), v = buffer(v_), x = buffer(x_);
  const Seqlens seq(cu, d, q_.device());
  const auto so = q_.options().dtype(sdt);
  Tensor o = torch::empty({d.batch, d.seq_len, d.heads, d.dv}, q_.options());
  const Tensor o_buf = buffer(o);  // o itself unless it has no elements
  Tensor A, S = torch::empty(part_shape(d, 'S'), so), z, steps;
  if (Op::uses_A) A = torch::empty(part_shape(d, 'A'), so);
  if (Op::uses_z) z = torch::empty(part_shape(d, 'z'), so);
  if (Op::uses_steps) steps = torch::empty(part_shape(d, 't'), so.dtype(torch::kLong));
  const StateParts init_bufs{buffer(s0.A), buffer(s0.S), buffer(s0.z), buffer(s0.steps)};
  dispatch(d, q.scalar_type(), [&](auto types) {
    using T = decltype(types);
    using In = typename T::In;
    using St = typename T::St;
    vla::ForwardArgs<In, St> a = forward_args<Op, In, St>(d, seq, q, k, v, x, o_buf, init, init_bufs);
    if (d.n_seq * d.heads > 0) a.final_state = state_buffers<St, Op>(A, S, z, steps);
    run_forward<Op, T>(a, cfg, seq);
  });
  return {o, A, S, z, steps};
}

// Every op's decode step: one token per sequence (q, k, u [B, H, dk], v [B, H, dv], beta [B, H]),
// the whole state (the op's parts, [B, H, ...]) read and written in place; returns o [B, H, dv]. On
// the CPU it is vla::forward over T = 1 with the final state aliasing the initial one (vla's CPU
// backend allows it); on the GPU vla::cuda::decode_step (docs/cuda.md, the decode kernel). vla works
// on contiguous 16-byte-aligned buffers: the state tensors themselves where they are such, else
// copies, written back only after a successful step, so a rejected step changes nothing.
template <class Op>
Tensor decode_impl(const Tensor& q_, const Tensor& k_, const Tensor& v_, const OptTensor& x_, const StateParts& s,
                   const vla::Config& cfg) {
  TORCH_CHECK(q_.dim() == 3 && k_.dim() == 3 && v_.dim() == 3 && (!x_ || x_->dim() == (Op::uses_beta ? 2 : 3)),
              "vla: a decode step takes one token per sequence: q, k", Op::uses_u ? ", u" : "",
              " [B, H, dk], v [B, H, dv]", Op::uses_beta ? ", beta [B, H]" : "");
  const OptTensor x4 = x_ ? OptTensor(x_->unsqueeze(1)) : std::nullopt;
  const Dims d = check_tokens<Op>(q_.unsqueeze(1), k_.unsqueeze(1), v_.unsqueeze(1), x4, std::nullopt);
  const DeviceGuard guard(q_);
  TORCH_CHECK(check_state<Op>(d, s, state_dtype(d, q_), q_.device()), "vla: a decode step needs the state (",
              Op::uses_A ? "A, " : "", "S", Op::uses_z ? ", z" : "", Op::uses_steps ? ", steps" : "", ")");
  const Tensor q = buffer(q_), k = buffer(k_), v = buffer(v_), x = buffer(x_);
  Tensor o = torch::empty({d.batch, d.heads, d.dv}, q_.options());
  const Tensor o_buf = buffer(o);
  const StateParts w{buffer(s.A), buffer(s.S), buffer(s.z), buffer(s.steps)};
  if (d.batch * d.heads == 0) return o;
  dispatch(d, q.scalar_type(), [&](auto types) {
    using T = decltype(types);
    using In = typename T::In;
    using St = typename T::St;
    const vla::StateBuffers<St> st = state_buffers<St, Op>(*w.A, *w.S, *w.z, *w.steps);
    if constexpr (T::gpu) {
#ifdef VLA_TORCH_CUDA
      const std::string error = vla_torch::decode_on_gpu<Op, In>(
          d.batch, d.heads, d.dk, d.dv, ptr<In>(q), ptr<In>(k), ptr<In>(v), Op::uses_u ? ptr<In>(x) : nullptr,
          Op::uses_beta ? ptr<In>(x) : nullptr, ptr<In>(o_buf), st, cfg, at::cuda::getCurrentCUDAStream().stream());
      TORCH_CHECK(error.empty(), error);
#endif
    } else {  // the forward's own arguments over T = 1 (d has seq_len 1), the final state aliasing the initial
      const Seqlens none(std::nullopt, d, q_.device());
      vla::ForwardArgs<In, St> a = forward_args<Op, In, St>(d, none, q, k, v, x, o_buf, true, w);
      a.final_state = st;
      run_forward<Op, T>(a, cfg, none);
    }
  });
  const std::pair<const OptTensor*, const OptTensor*> parts[] = {{&s.A, &w.A}, {&s.S, &w.S}, {&s.z, &w.z},
                                                                 {&s.steps, &w.steps}};
  for (const auto& [given, work] : parts)
    if (*given && (*given)->data_ptr() != (*work)->data_ptr()) (*given)->copy_(**work);
  return o;
}

// Every op's backward: dq, dk, dv, dx (du or dbeta; undefined for linear attention), dA0, dS0, dz0.
template <class Op>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> backward_impl(
    const Tensor& q_, const Tensor& k_, const Tensor& v_, const OptTensor& x_, const OptTensor& cu,
    const StateParts& s0, const Tensor& d_o_, const StateParts& d_final, const vla::Config& cfg) {
  const Dims d = check_tokens<Op>(q_, k_, v_, x_, cu);
  const DeviceGuard guard(q_);
  const torch::ScalarType sdt = state_dtype(d, q_);
  const bool init = check_state<Op>(d, s0, sdt, q_.device());
  TORCH_CHECK(d_o_.sizes() == torch::IntArrayRef({d.batch, d.seq_len, d.heads, d.dv}) &&
                  d_o_.scalar_type() == q_.scalar_type() && d_o_.device() == q_.device(),
              "vla: d_o must be shaped like o, with the tokens' dtype and device");
  const Tensor q = buffer(q_), k = buffer(k_), v = buffer(v_), x = buffer(x_), d_o = buffer(d_o_);
  const Seqlens seq(cu, d, q_.device());
  const auto so = q_.options().dtype(sdt);
  // The final state's gradient: all of it or none (vla's rule); a missing part is zero.
  const bool has_dfinal = d_final.A || d_final.S || d_final.z;
  Tensor dA, dS, dz;
  if (has_dfinal) {
    const std::pair<const OptTensor*, char> parts[] = {{&d_final.A, 'A'}, {&d_final.S, 'S'}, {&d_final.z, 'z'}};
    for (const auto& [t, part] : parts)
      TORCH_CHECK(!*t || ((*t)->scalar_type() == sdt && (*t)->device() == q_.device() &&
                          (*t)->sizes() == torch::IntArrayRef(part_shape(d, part))),
                  "vla: the final state's gradients must be shaped like the state, with its dtype and device");
    if (Op::uses_A) dA = buffer(d_final.A ? *d_final.A : torch::zeros(part_shape(d, 'A'), so));
    dS = buffer(d_final.S ? *d_final.S : torch::zeros(part_shape(d, 'S'), so));
    if (Op::uses_z) dz = buffer(d_final.z ? *d_final.z : torch::zeros(part_shape(d, 'z'), so));
  }
  Tensor dq = torch::empty(q_.sizes(), q_.options()), dk = torch::empty(k_.sizes(), k_.options()),
         dv = torch::empty(v_.sizes(), v_.options()), dx;
  if (x_) dx = torch::empty(x_->sizes(), x_->options());
  const Tensor dq_b = buffer(dq), dk_b = buffer(dk), dv_b = buffer(dv), dx_b = dx.defined() ? buffer(dx) : Tensor();
  Tensor dA0, dS0 = torch::empty(part_shape(d, 'S'), so), dz0;
  if (Op::uses_A) dA0 = torch::empty(part_shape(d, 'A'), so);
  if (Op::uses_z) dz0 = torch::empty(part_shape(d, 'z'), so);
  const StateParts init_bufs{buffer(s0.A), buffer(s0.S), buffer(s0.z), buffer(s0.steps)};
  const Tensor o_unused = buffer(torch::empty({0}, q.options()));
  dispatch(d, q.scalar_type(), [&](auto types) {
    using T = decltype(types);
    using In = typename T::In;
    using St = typename T::St;
    const vla::ForwardArgs<In, St> a = forward_args<Op, In, St>(d, seq, q, k, v, x, o_unused, init, init_bufs);
    vla::GradArgs<In, St> g;
    g.d_o = ptr<In>(d_o);
    if (has_dfinal) {
      const auto b = state_buffers<St, Op>(dA, dS, dz, Tensor());
      g.d_final_state = {b.A, b.S, b.z, nullptr};
    }
    g.d_q = ptr<In>(dq_b), g.d_k = ptr<In>(dk_b), g.d_v = ptr<In>(dv_b);
    (Op::uses_beta ? g.d_beta : g.d_u) = ptr<In>(dx_b);
    if (d.n_seq * d.heads > 0) {
      const auto b = state_buffers<St, Op>(dA0, dS0, dz0, Tensor());
      g.d_initial_state = {b.A, b.S, b.z, nullptr};
    }
    run_backward<Op, T>(a, g, cfg, seq);
  });
  return {dq, dk, dv, dx, dA0, dS0, dz0};
}

// ---- the schemas' entry points: each op's own arguments ----------------------------------------
#define VLA_TORCH_CONFIG_PARAMS \
  double lambda0, double stab_eps, int64_t refresh_period, double refresh_eps, double denom_eps, bool normalize_output
#define VLA_TORCH_CONFIG make_config(lambda0, stab_eps, refresh_period, refresh_eps, denom_eps, normalize_output)

using vla::op::DeltaNet;
using vla::op::LinearAttention;
using vla::op::Vla;

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> vla_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                               const Tensor& u, const OptTensor& cu, const OptTensor& A0,
                                                               const OptTensor& S0, const OptTensor& z0,
                                                               const OptTensor& steps0, VLA_TORCH_CONFIG_PARAMS) {
  return forward_impl<Vla>(q, k, v, u, cu, {A0, S0, z0, steps0}, VLA_TORCH_CONFIG);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> vla_backward(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& u, const OptTensor& cu, const OptTensor& A0,
    const OptTensor& S0, const OptTensor& z0, const OptTensor& steps0, const Tensor& d_o, const OptTensor& dA,
    const OptTensor& dS, const OptTensor& dz, VLA_TORCH_CONFIG_PARAMS) {
  return backward_impl<Vla>(q, k, v, u, cu, {A0, S0, z0, steps0}, d_o, {dA, dS, dz, {}}, VLA_TORCH_CONFIG);
}

std::tuple<Tensor, Tensor, Tensor> linear_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                            const OptTensor& cu, const OptTensor& S0,
                                                            const OptTensor& z0, VLA_TORCH_CONFIG_PARAMS) {
  auto [o, A, S, z, steps] = forward_impl<LinearAttention>(q, k, v, {}, cu, {{}, S0, z0, {}}, VLA_TORCH_CONFIG);
  return {o, S, z};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> linear_attention_backward(
    const Tensor& q, const Tensor& k, const Tensor& v, const OptTensor& cu, const OptTensor& S0, const OptTensor& z0,
    const Tensor& d_o, const OptTensor& dS, const OptTensor& dz, VLA_TORCH_CONFIG_PARAMS) {
  auto [dq, dk, dv, dx, dA0, dS0, dz0] =
      backward_impl<LinearAttention>(q, k, v, {}, cu, {{}, S0, z0, {}}, d_o, {{}, dS, dz, {}}, VLA_TORCH_CONFIG);
  return {dq, dk, dv, dS0, dz0};
}

std::tuple<Tensor, Tensor> deltanet_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                                            const OptTensor& cu, const OptTensor& S0, VLA_TORCH_CONFIG_PARAMS) {
  auto [o, A, S, z, steps] = forward_impl<DeltaNet>(q, k, v, beta, cu, {{}, S0, {}, {}}, VLA_TORCH_CONFIG);
  return {o, S};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> deltanet_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                                     const Tensor& beta, const OptTensor& cu,
                                                                     const OptTensor& S0, const Tensor& d_o,
                                                                     const OptTensor& dS, VLA_TORCH_CONFIG_PARAMS) {
  auto [dq, dk, dv, dbeta, dA0, dS0, dz0] =
      backward_impl<DeltaNet>(q, k, v, beta, cu, {{}, S0, {}, {}}, d_o, {{}, dS, {}, {}}, VLA_TORCH_CONFIG);
  return {dq, dk, dv, dbeta, dS0};
}

Tensor vla_decode_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& u, const Tensor& A,
                       const Tensor& S, const Tensor& z, const Tensor& steps, VLA_TORCH_CONFIG_PARAMS) {
  return decode_impl<Vla>(q, k, v, u, {A, S, z, steps}, VLA_TORCH_CONFIG);
}

Tensor linear_attention_decode_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& S,
                                    const Tensor& z, VLA_TORCH_CONFIG_PARAMS) {
  return decode_impl<LinearAttention>(q, k, v, {}, {{}, S, z, {}}, VLA_TORCH_CONFIG);
}

Tensor deltanet_decode_step(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& S,
                            VLA_TORCH_CONFIG_PARAMS) {
  return decode_impl<DeltaNet>(q, k, v, beta, {{}, S, {}, {}}, VLA_TORCH_CONFIG);
}

}  // namespace

#define VLA_TORCH_CONFIG_SCHEMA \
  "float lambda0, float stab_eps, int refresh_period, float refresh_eps, float denom_eps, bool normalize_output"

TORCH_LIBRARY(vla, m) {
  m.def("vla_forward(Tensor q, Tensor k, Tensor v, Tensor u, Tensor? cu_seqlens, Tensor? A0, Tensor? S0, Tensor? z0, "
        "Tensor? steps0, " VLA_TORCH_CONFIG_SCHEMA ") -> (Tensor o, Tensor A, Tensor S, Tensor z, Tensor steps)");
  m.def("vla_backward(Tensor q, Tensor k, Tensor v, Tensor u, Tensor? cu_seqlens, Tensor? A0, Tensor? S0, Tensor? z0, "
        "Tensor? steps0, Tensor d_o, Tensor? dA, Tensor? dS, Tensor? dz, " VLA_TORCH_CONFIG_SCHEMA
        ") -> (Tensor dq, Tensor dk, Tensor dv, Tensor du, Tensor dA0, Tensor dS0, Tensor dz0)");
  m.def("linear_attention_forward(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens, Tensor? S0, Tensor? z0, "
        VLA_TORCH_CONFIG_SCHEMA ") -> (Tensor o, Tensor S, Tensor z)");
  m.def("linear_attention_backward(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens, Tensor? S0, Tensor? z0, "
        "Tensor d_o, Tensor? dS, Tensor? dz, " VLA_TORCH_CONFIG_SCHEMA
        ") -> (Tensor dq, Tensor dk, Tensor dv, Tensor dS0, Tensor dz0)");
  m.def("deltanet_forward(Tensor q, Tensor k, Tensor v, Tensor beta, Tensor? cu_seqlens, Tensor? S0, "
        VLA_TORCH_CONFIG_SCHEMA ") -> (Tensor o, Tensor S)");
  m.def("deltanet_backward(Tensor q, Tensor k, Tensor v, Tensor beta, Tensor? cu_seqlens, Tensor? S0, Tensor d_o, "
        "Tensor? dS, " VLA_TORCH_CONFIG_SCHEMA ") -> (Tensor dq, Tensor dk, Tensor dv, Tensor dbeta, Tensor dS0)");
  // decode steps: one token per sequence, the state updated in place (its tensors are mutated)
  m.def("vla_decode_step(Tensor q, Tensor k, Tensor v, Tensor u, Tensor(a!) A, Tensor(b!) S, Tensor(c!) z, "
        "Tensor(d!) steps, " VLA_TORCH_CONFIG_SCHEMA ") -> Tensor o");
  m.def("linear_attention_decode_step(Tensor q, Tensor k, Tensor v, Tensor(a!) S, Tensor(b!) z, "
        VLA_TORCH_CONFIG_SCHEMA ") -> Tensor o");
  m.def("deltanet_decode_step(Tensor q, Tensor k, Tensor v, Tensor beta, Tensor(a!) S, " VLA_TORCH_CONFIG_SCHEMA
        ") -> Tensor o");
}

#define VLA_TORCH_IMPLS(m)                                             \
  m.impl("vla_forward", &vla_forward);                                 \
  m.impl("vla_backward", &vla_backward);                               \
  m.impl("linear_attention_forward", &linear_attention_forward);       \
  m.impl("linear_attention_backward", &linear_attention_backward);     \
  m.impl("deltanet_forward", &deltanet_forward);                       \
  m.impl("deltanet_backward", &deltanet_backward);                     \
  m.impl("vla_decode_step", &vla_decode_step);                         \
  m.impl("linear_attention_decode_step", &linear_attention_decode_step); \
  m.impl("deltanet_decode_step", &deltanet_decode_step);

TORCH_LIBRARY_IMPL(vla, CPU, m) { VLA_TORCH_IMPLS(m) }
#ifdef VLA_TORCH_CUDA
TORCH_LIBRARY_IMPL(vla, CUDA, m) { VLA_TORCH_IMPLS(m) }
#endif

#ifdef VLA_TORCH_PYMODULE
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "vla's operators (torch.ops.vla)", -1, nullptr,
                               nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module);
}
#endif

"""vla_torch: vla's VLA recurrence (docs/maths.md §2) as a PyTorch operator with autograd.

    import vla_torch
    o, (A, S, z, steps) = vla_torch.vla(q, k, v, u)          # q, k, u [B, T, H, dk], v [B, T, H, dv]
    o.sum().backward()                                        # gradients through vla's backward (§9)

The operators are ``torch.ops.vla.vla_forward`` and ``torch.ops.vla.vla_backward`` (TORCH_LIBRARY
"vla", csrc/ops.cpp). CPU tensors (float32 or float64) run vla's Eigen backend; CUDA tensors
(float32, float16 or bfloat16 tokens, the state float32) run vla's CUDA kernels on the current
stream (docs/cuda.md: the chunked forward from 256 tokens, the recurrent one below; the recurrent
backward with checkpoints), where the extension was built with CUDA. Autograd and fake (meta)
kernels are registered here, so ``torch.library.opcheck`` passes and ``torch.compile`` traces them.
q, k and u are used as given: apply the feature map (ELU + 1 on q and k, as the paper's layer
does) before the call. The extension is the one ``pip install ./python`` built (vla_torch._C), or,
failing that, compiled on first import by ``torch.utils.cpp_extension.load`` (needs a C++17
compiler, ninja and Eigen's headers: ``VLA_EIGEN_INCLUDE``, default /usr/include/eigen3). The CUDA
operators are built when torch has CUDA and nvcc is found (``VLA_TORCH_CUDA=0`` turns them off);
the kernels are built for ``TORCH_CUDA_ARCH_LIST`` (vla's are tuned for 9.0, Hopper).
"""
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

_here = os.path.dirname(os.path.abspath(__file__))


def _load_extension():
    try:
        from . import _C  # noqa: F401  (built by setup.py; registers the operators on import)
        return
    except ImportError:
        pass
    from torch.utils.cpp_extension import load

    repo_include = os.environ.get("VLA_INCLUDE", os.path.join(_here, "..", "..", "include"))
    eigen = os.environ.get("VLA_EIGEN_INCLUDE", "/usr/include/eigen3")
    from ._build import build_options

    sources, defines, nvcc, with_cuda = build_options(os.path.join(_here, "csrc"))
    flags = [f"-D{d}" for d in defines]
    load(
        name="vla_torch_ops_cuda" if with_cuda else "vla_torch_ops",
        sources=sources,
        extra_include_paths=[os.path.abspath(repo_include), eigen],
        extra_cflags=["-O3"] + flags,  # the standard is torch's own (C++17 or C++20); vla builds with both
        extra_cuda_cflags=nvcc + flags,
        with_cuda=with_cuda,
        is_python_module=False,
        verbose=os.environ.get("VLA_TORCH_VERBOSE", "0") == "1",
    )


_load_extension()


@dataclass(frozen=True)
class Config:
    """vla::Config (include/vla/config.hpp): the paper's final configuration by default."""

    lambda0: float = 0.1
    stab_eps: float = 1e-4
    refresh_period: int = 20
    refresh_eps: float = 1e-3
    denom_eps: float = 1e-4
    normalize_output: bool = True

    def args(self):
        return (float(self.lambda0), float(self.stab_eps), int(self.refresh_period), float(self.refresh_eps),
                float(self.denom_eps), bool(self.normalize_output))


def _state_dtype(q):
    """The state's dtype: the tokens' on the CPU (float32, float64), float32 for float16/bfloat16."""
    return torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype


def _state_shapes(q, v, cu_seqlens):
    n = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    h, dk, dv = q.shape[2], q.shape[3], v.shape[3]
    return (n, h, dk, dk), (n, h, dv, dk), (n, h, dk), (n, h)


@torch.library.register_fake("vla::vla_forward")
def _forward_fake(q, k, v, u, cu_seqlens, A0, S0, z0, steps0, lambda0, stab_eps, refresh_period, refresh_eps,
                  denom_eps, normalize_output):
    a, s, z, st = _state_shapes(q, v, cu_seqlens)
    o = q.new_empty(q.shape[:3] + (v.shape[3],))
    sd = _state_dtype(q)
    return (o, q.new_empty(a, dtype=sd), q.new_empty(s, dtype=sd), q.new_empty(z, dtype=sd),
            q.new_empty(st, dtype=torch.int64))


@torch.library.register_fake("vla::vla_backward")
def _backward_fake(q, k, v, u, cu_seqlens, A0, S0, z0, steps0, d_o, dA, dS, dz, lambda0, stab_eps, refresh_period,
                   refresh_eps, denom_eps, normalize_output):
    a, s, z, _ = _state_shapes(q, v, cu_seqlens)
    sd = _state_dtype(q)
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(u),
            q.new_empty(a, dtype=sd), q.new_empty(s, dtype=sd), q.new_empty(z, dtype=sd))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*(x if isinstance(x, torch.Tensor) else None for x in inputs[:9]))
    ctx.config = inputs[9:]
    ctx.has_state = inputs[5] is not None


def _forward_backward(ctx, d_o, dA, dS, dz, d_steps):
    q, k, v, u, cu, A0, S0, z0, steps0 = ctx.saved_tensors
    dq, dk, dv, du, dA0, dS0, dz0 = torch.ops.vla.vla_backward(
        q, k, v, u, cu, A0, S0, z0, steps0, d_o.contiguous() if d_o is not None else torch.zeros_like(v),
        dA, dS, dz, *ctx.config)
    state_grads = (dA0, dS0, dz0) if ctx.has_state else (None, None, None)
    return (dq, dk, dv, du, None) + state_grads + (None,) + (None,) * 6


torch.library.register_autograd("vla::vla_forward", _forward_backward, setup_context=_setup_context)


def vla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, u: torch.Tensor,
        initial_state: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = None,
        cu_seqlens: Optional[torch.Tensor] = None, config: Config = Config()):
    """The VLA recurrence over q, k, u [B, T, H, dk] and v [B, T, H, dv] (with cu_seqlens: B = 1 and
    the sequences packed on T). Returns o [B, T, H, dv] and the final state (A, S, z, steps), each
    [N, H, …]; initial_state is the same tuple (None: fresh, A = I/λ0). Differentiable in q, k, v, u
    and the initial state's A, S, z (docs/maths.md §9: dA is the symmetric gradient)."""
    A0, S0, z0, steps0 = initial_state if initial_state is not None else (None, None, None, None)
    o, A, S, z, steps = torch.ops.vla.vla_forward(q, k, v, u, cu_seqlens, A0, S0, z0, steps0, *config.args())
    return o, (A, S, z, steps)


# ---- the baselines of docs/maths.md §7: linear attention (state S, z) and DeltaNet (state S) -------

def _out_shape(q, v):
    return q.shape[:3] + (v.shape[3],)


@torch.library.register_fake("vla::linear_attention_forward")
def _la_forward_fake(q, k, v, cu_seqlens, S0, z0, *config):
    _, s, z, _ = _state_shapes(q, v, cu_seqlens)
    sd = _state_dtype(q)
    return q.new_empty(_out_shape(q, v)), q.new_empty(s, dtype=sd), q.new_empty(z, dtype=sd)


@torch.library.register_fake("vla::linear_attention_backward")
def _la_backward_fake(q, k, v, cu_seqlens, S0, z0, d_o, dS, dz, *config):
    _, s, z, _ = _state_shapes(q, v, cu_seqlens)
    sd = _state_dtype(q)
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), q.new_empty(s, dtype=sd),
            q.new_empty(z, dtype=sd))


@torch.library.register_fake("vla::deltanet_forward")
def _dn_forward_fake(q, k, v, beta, cu_seqlens, S0, *config):
    _, s, _, _ = _state_shapes(q, v, cu_seqlens)
    return q.new_empty(_out_shape(q, v)), q.new_empty(s, dtype=_state_dtype(q))


@torch.library.register_fake("vla::deltanet_backward")
def _dn_backward_fake(q, k, v, beta, cu_seqlens, S0, d_o, dS, *config):
    _, s, _, _ = _state_shapes(q, v, cu_seqlens)
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(beta),
            q.new_empty(s, dtype=_state_dtype(q)))


def _saving(n_tensors, state_at):
    """setup_context for an op whose first n_tensors inputs are tensors (or None), the config after."""
    def setup(ctx, inputs, output):
        ctx.save_for_backward(*(x if isinstance(x, torch.Tensor) else None for x in inputs[:n_tensors]))
        ctx.config = inputs[n_tensors:]
        ctx.has_state = inputs[state_at] is not None
    return setup


def _la_backward(ctx, d_o, dS, dz):
    q, k, v, cu, S0, z0 = ctx.saved_tensors
    dq, dk, dv, dS0, dz0 = torch.ops.vla.linear_attention_backward(
        q, k, v, cu, S0, z0, d_o.contiguous() if d_o is not None else torch.zeros_like(v), dS, dz, *ctx.config)
    state_grads = (dS0, dz0) if ctx.has_state else (None, None)
    return (dq, dk, dv, None) + state_grads + (None,) * 6


def _dn_backward(ctx, d_o, dS):
    q, k, v, beta, cu, S0 = ctx.saved_tensors
    dq, dk, dv, dbeta, dS0 = torch.ops.vla.deltanet_backward(
        q, k, v, beta, cu, S0, d_o.contiguous() if d_o is not None else torch.zeros_like(v), dS, *ctx.config)
    return (dq, dk, dv, dbeta, None, dS0 if ctx.has_state else None) + (None,) * 6


torch.library.register_autograd("vla::linear_attention_forward", _la_backward, setup_context=_saving(6, 4))
torch.library.register_autograd("vla::deltanet_forward", _dn_backward, setup_context=_saving(6, 5))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     initial_state: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                     cu_seqlens: Optional[torch.Tensor] = None, config: Config = Config()):
    """Linear attention (docs/maths.md §7): S ← S + v kᵀ, z ← z + k, o = S q / max(zᵀq, denom_eps)
    (with normalize_output; o = S q without). q, k [B, T, H, dk], v [B, T, H, dv], as given (apply
    the feature map first). Returns o and the final state (S, z); initial_state the same (None:
    zeros). Differentiable in q, k, v, S0, z0. On CUDA tensors the backward is not built yet (an
    error says so; run it on CPU tensors)."""
    S0, z0 = initial_state if initial_state is not None else (None, None)
    o, S, z = torch.ops.vla.linear_attention_forward(q, k, v, cu_seqlens, S0, z0, *config.args())
    return o, (S, z)


def deltanet(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
             initial_state: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
             config: Config = Config()):
    """DeltaNet (docs/maths.md §7): k̂ = k/‖k‖, S ← S + β (v − S k̂) k̂ᵀ, o = S q; beta [B, T, H] in
    (0, 1]. Returns o and the final S; initial_state is S0 (None: zeros). Differentiable in q, k, v,
    beta, S0. On CUDA tensors the backward is not built yet (an error says so)."""
    o, S = torch.ops.vla.deltanet_forward(q, k, v, beta, cu_seqlens, initial_state, *config.args())
    return o, S


@torch.library.register_fake("vla::vla_decode_step")
def _vla_decode_fake(q, k, v, u, A, S, z, steps, *config):
    return v.new_empty(v.shape)


@torch.library.register_fake("vla::linear_attention_decode_step")
def _la_decode_fake(q, k, v, S, z, *config):
    return v.new_empty(v.shape)


@torch.library.register_fake("vla::deltanet_decode_step")
def _dn_decode_fake(q, k, v, beta, S, *config):
    return v.new_empty(v.shape)


def fresh_state(batch: int, heads: int, dk: int, dv: int, dtype=torch.float32, device="cpu", config: Config = Config()):
    """VLA's initial state (docs/maths.md §2): A = I/λ0, S = 0, z = 0, steps = 0, [B, H, …] (the state
    is float32 on CUDA whatever the tokens' dtype). Linear attention's is (S, z) = zeros, DeltaNet's S."""
    A = torch.eye(dk, dtype=dtype, device=device).expand(batch, heads, dk, dk) / config.lambda0
    return (A.contiguous(), torch.zeros(batch, heads, dv, dk, dtype=dtype, device=device),
            torch.zeros(batch, heads, dk, dtype=dtype, device=device),
            torch.zeros(batch, heads, dtype=torch.long, device=device))


def vla_decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, u: torch.Tensor, state,
                    config: Config = Config()) -> torch.Tensor:
    """One decode step, one token per sequence: q, k, u [B, H, dk], v [B, H, dv]; state = (A, S, z,
    steps) as vla() returns it or fresh_state() makes it, [B, H, …], **updated in place**. Returns o
    [B, H, dv]: the step of docs/maths.md §2, the same as the forward's (CPU: vla's CPU step; CUDA:
    its decode kernel). Bad input raises before the state changes. Not differentiable (decoding)."""
    A, S, z, steps = state
    return torch.ops.vla.vla_decode_step(q, k, v, u, A, S, z, steps, *config.args())


def linear_attention_decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state,
                                 config: Config = Config()) -> torch.Tensor:
    """Linear attention's decode step (docs/maths.md §7): state = (S, z), updated in place; o [B, H, dv]."""
    S, z = state
    return torch.ops.vla.linear_attention_decode_step(q, k, v, S, z, *config.args())


def deltanet_decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, S: torch.Tensor,
                         config: Config = Config()) -> torch.Tensor:
    """DeltaNet's decode step (docs/maths.md §7): beta [B, H]; S updated in place; o [B, H, dv]."""
    return torch.ops.vla.deltanet_decode_step(q, k, v, beta, S, *config.args())


class VLAAttention(torch.nn.Module):
    """The multi-head VLA layer as the authors' VLAv3Attn (notebooks/07) computes it and as vla's C++
    layer does (include/vla/layers/attention.hpp, docs/layers.md): q = ELU(Wq x) + 1, k_raw = Wk x,
    k = ELU(k_raw) + 1, v = Wv x, u = Wu k_raw (all heads' raw keys, no bias), split into heads; the
    op; heads merged; norm_o (LayerNorm); Wo. Parameter names are theirs, the names vla's C++ weight
    reader looks for (vla::io::AttentionNames::authors_multihead), so a state_dict loads either way
    (checked here: names and the composition; not yet a round trip through the C++ reader).

    forward(x [B, T, d_model], state=None) -> (y [B, T, d_model], state): `state` is the op's
    (A, S, z, steps), [B, H, …], to continue a stream."""

    def __init__(self, d_model: int, n_heads: int, config: Config = Config(), norm_eps: float = 1e-5):
        super().__init__()
        if d_model % n_heads:
            raise ValueError("vla_torch.VLAAttention: d_model must be a multiple of n_heads")
        self.d_model, self.n_heads, self.config = d_model, n_heads, config
        self.Wq = torch.nn.Linear(d_model, d_model)
        self.Wk = torch.nn.Linear(d_model, d_model)
        self.Wv = torch.nn.Linear(d_model, d_model)
        self.Wu = torch.nn.Linear(d_model, d_model, bias=False)
        self.norm_o = torch.nn.LayerNorm(d_model, eps=norm_eps)
        self.Wo = torch.nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, state=None):
        B, T, _ = x.shape
        heads = (B, T, self.n_heads, self.d_model // self.n_heads)
        k_raw = self.Wk(x)
        q = torch.nn.functional.elu(self.Wq(x)) + 1
        k = torch.nn.functional.elu(k_raw) + 1
        v = self.Wv(x)
        u = self.Wu(k_raw)
        o, state = vla(q.reshape(heads), k.reshape(heads), v.reshape(heads), u.reshape(heads),
                       initial_state=state, config=self.config)
        return self.Wo(self.norm_o(o.reshape(B, T, self.d_model))), state




class LinearAttention(torch.nn.Module):
    """The authors' LinearAttn layer (notebooks/07) over vla's linear attention, as vla's C++ layer
    computes it (docs/layers.md, kind linear_attention): q = ELU(Wq x) + 1, k = ELU(Wk x) + 1,
    v = Wv x, split into heads; o = S q / max(zᵀq, ε) with their ε = 1e-6; heads merged; Wo.
    Their parameter names (Wq, Wk, Wv, Wo). forward(x, state=None) -> (y, (S, z)).
    `op` replaces the operator (a function with linear_attention's signature; default: this
    package's), for an experiment that must run the same layer through another implementation."""

    def __init__(self, d_model: int, n_heads: int, eps: float = 1e-6, op=None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError("vla_torch.LinearAttention: d_model must be a multiple of n_heads")
        self.d_model, self.n_heads, self.config = d_model, n_heads, Config(denom_eps=eps)
        self.op = op if op is not None else linear_attention
        self.Wq = torch.nn.Linear(d_model, d_model)
        self.Wk = torch.nn.Linear(d_model, d_model)
        self.Wv = torch.nn.Linear(d_model, d_model)
        self.Wo = torch.nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, state=None):
        B, T, _ = x.shape
        heads = (B, T, self.n_heads, self.d_model // self.n_heads)
        q = (torch.nn.functional.elu(self.Wq(x)) + 1).reshape(heads)
        k = (torch.nn.functional.elu(self.Wk(x)) + 1).reshape(heads)
        o, state = self.op(q, k, self.Wv(x).reshape(heads), initial_state=state, config=self.config)
        return self.Wo(o.reshape(B, T, self.d_model)), state


class DeltaNetAttention(torch.nn.Module):
    """vla's DeltaNet layer (docs/layers.md, kind deltanet; docs/maths.md §7): q = ELU(Wq x) + 1,
    k = Wk x (the op uses k/‖k‖), v = Wv x, β = sigmoid(Wbeta x) one per head (Wbeta [H, d_model];
    a β that rounds to 0 becomes the smallest normal value, as in the C++ layer); the delta rule;
    heads merged; Wo. Names as vla::io::AttentionNames::authors_multihead. forward(x, state=None)
    -> (y, S). `op` replaces the operator (deltanet's signature), as in LinearAttention."""

    def __init__(self, d_model: int, n_heads: int, op=None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError("vla_torch.DeltaNetAttention: d_model must be a multiple of n_heads")
        self.d_model, self.n_heads = d_model, n_heads
        self.op = op if op is not None else deltanet
        self.Wq = torch.nn.Linear(d_model, d_model)
        self.Wk = torch.nn.Linear(d_model, d_model)
        self.Wv = torch.nn.Linear(d_model, d_model)
        self.Wbeta = torch.nn.Linear(d_model, n_heads)
        self.Wo = torch.nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, state=None):
        B, T, _ = x.shape
        heads = (B, T, self.n_heads, self.d_model // self.n_heads)
        q = (torch.nn.functional.elu(self.Wq(x)) + 1).reshape(heads)
        beta = torch.sigmoid(self.Wbeta(x)).clamp_min(torch.finfo(x.dtype).tiny)
        o, state = self.op(q, self.Wk(x).reshape(heads), self.Wv(x).reshape(heads), beta, initial_state=state)
        return self.Wo(o.reshape(B, T, self.d_model)), state


__all__ = ["Config", "DeltaNetAttention", "LinearAttention", "VLAAttention", "deltanet", "deltanet_decode_step",
           "fresh_state", "linear_attention", "linear_attention_decode_step", "vla", "vla_decode_step"]

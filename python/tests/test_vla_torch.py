"""Tests of vla_torch (python/vla_torch): the operator against a plain-PyTorch float64 loop of
docs/maths.md §2 written here (its forward, and its gradients through torch.autograd), gradcheck,
opcheck, varlen and bad input; and the CUDA operators against the CPU one in float64 (where a GPU
and a CUDA build are present; else those are reported skipped). They need torch; without it they
are reported skipped.

    python3 -m pytest python/tests -q        (from the repository root)
"""
import math
import os
import sys

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import vla_torch  # noqa: E402

CFG = vla_torch.Config()


def reference(q, k, v, u, state=None, cfg=CFG):
    """docs/maths.md §2, one step at a time, for every (sequence, head): differentiable torch ops."""
    B, T, H, dk = q.shape
    dv = v.shape[3]
    outs, finals = [], []
    for b in range(B):
        ob = []
        fin = []
        for h in range(H):
            if state is None:
                A = torch.eye(dk, dtype=q.dtype) / cfg.lambda0
                S = torch.zeros(dv, dk, dtype=q.dtype)
                z = torch.zeros(dk, dtype=q.dtype)
                t0 = 0
            else:
                A, S, z, steps = state[0][b, h], state[1][b, h], state[2][b, h], state[3][b, h]
                t0 = int(steps)
            oh = []
            for t in range(T):
                qt, kt, vt, ut = q[b, t, h], k[b, t, h], v[b, t, h], u[b, t, h]
                uh = ut / ut.norm() / math.sqrt(dk)                      # §2.1
                w = A @ uh                                               # §2.2
                delta = torch.clamp(1 + uh @ w, min=cfg.stab_eps)
                A = A - torch.outer(w, w) / delta
                if cfg.refresh_period > 0 and (t0 + t + 1) % cfg.refresh_period == 0:  # §2.3
                    A = A + cfg.refresh_eps * torch.eye(dk, dtype=q.dtype)
                kh = kt / kt.norm()                                      # §2.4
                alpha = A @ kh
                ah = alpha / alpha.norm()
                e = vt - S @ kh                                          # §2.5
                S = S + torch.outer(e, ah)
                z = z + kt                                               # §2.6
                oh.append(S @ qt / torch.clamp(z @ qt, min=cfg.denom_eps))
            ob.append(torch.stack(oh))
            fin.append((A, S, z))
        outs.append(torch.stack(ob, dim=1))
        finals.append(fin)
    o = torch.stack(outs)
    A = torch.stack([torch.stack([f[0] for f in fb]) for fb in finals])
    S = torch.stack([torch.stack([f[1] for f in fb]) for fb in finals])
    z = torch.stack([torch.stack([f[2] for f in fb]) for fb in finals])
    return o, A, S, z


def inputs(B=2, T=7, H=2, dk=4, dv=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.elu(torch.randn(B, T, H, dk, generator=g, dtype=dtype)) + 1
    k = torch.nn.functional.elu(torch.randn(B, T, H, dk, generator=g, dtype=dtype)) + 1
    v = torch.randn(B, T, H, dv, generator=g, dtype=dtype)
    u = torch.randn(B, T, H, dk, generator=g, dtype=dtype)
    return q, k, v, u


def some_state(B, H, dk, dv, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(B, H, dk, dk, generator=g, dtype=dtype)
    A = M @ M.transpose(-1, -2) / dk + torch.eye(dk, dtype=dtype)  # SPD
    S = torch.randn(B, H, dv, dk, generator=g, dtype=dtype)
    z = torch.rand(B, H, dk, generator=g, dtype=dtype) + 0.5
    steps = torch.full((B, H), 13, dtype=torch.int64)
    return A, S, z, steps


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_forward_matches_the_loop_of_section_2():
    q, k, v, u = inputs()
    o, (A, S, z, steps) = vla_torch.vla(q, k, v, u)
    ro, rA, rS, rz = reference(q, k, v, u)
    assert rel(o, ro) < 1e-13
    assert rel(A, rA) < 1e-13 and rel(S, rS) < 1e-13 and rel(z, rz) < 1e-13
    assert torch.equal(steps, torch.full((2, 2), 7, dtype=torch.int64))


def test_gradients_match_autograd_through_the_loop():
    q, k, v, u = (x.clone().requires_grad_() for x in inputs(T=9))
    st = [x.clone().requires_grad_() if x.dtype == torch.float64 else x for x in some_state(2, 2, 4, 3)]
    g = torch.Generator().manual_seed(5)
    wo = torch.randn(2, 9, 2, 3, generator=g, dtype=torch.float64)
    wA = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64)
    wS = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    o, (A, S, z, _) = vla_torch.vla(q, k, v, u, initial_state=tuple(st))
    ((o * wo).sum() + (A * wA).sum() + (S * wS).sum() + z.sum()).backward()
    ours = [x.grad.clone() for x in (q, k, v, u, st[0], st[1], st[2])]
    for x in (q, k, v, u, st[0], st[1], st[2]):
        x.grad = None
    ro, rA, rS, rz = reference(q, k, v, u, state=st)
    ((ro * wo).sum() + (rA * wA).sum() + (rS * wS).sum() + rz.sum()).backward()
    ref = [x.grad for x in (q, k, v, u, st[0], st[1], st[2])]
    for name, a, b in zip(["q", "k", "v", "u", "z0"], ours[:4] + [ours[6]], ref[:4] + [ref[6]]):
        assert rel(a, b) < 1e-10, name
    assert rel(ours[5], ref[5]) < 1e-10  # S0
    # A0: vla returns the symmetric gradient (docs/maths.md §9); autograd's is general.
    assert rel(ours[4], (ref[4] + ref[4].transpose(-1, -2)) / 2) < 1e-10


def test_gradcheck_double():
    q, k, v, u = (x.clone().requires_grad_() for x in inputs(B=1, T=5, H=1, dk=3, dv=2))

    def f(q, k, v, u):
        o, (A, S, z, _) = vla_torch.vla(q, k, v, u)
        return o, S, z

    assert torch.autograd.gradcheck(f, (q, k, v, u), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_opcheck():
    q, k, v, u = inputs(B=1, T=4, H=2, dk=3, dv=2)
    args = (q, k, v, u, None, None, None, None, None) + CFG.args()
    torch.library.opcheck(torch.ops.vla.vla_forward.default, args)


def test_varlen_is_the_sequences_one_by_one():
    q, k, v, u = inputs(B=1, T=10, H=2)
    cu = torch.tensor([0, 3, 3, 10], dtype=torch.int64)
    o, (A, S, z, steps) = vla_torch.vla(q, k, v, u, cu_seqlens=cu)
    for n in range(3):
        a, b = int(cu[n]), int(cu[n + 1])
        on, (An, Sn, zn, sn) = vla_torch.vla(q[:, a:b], k[:, a:b], v[:, a:b], u[:, a:b])
        assert torch.equal(o[:, a:b], on)
        assert torch.equal(A[n], An[0]) and torch.equal(S[n], Sn[0]) and torch.equal(z[n], zn[0])
        assert torch.equal(steps[n], sn[0])


def test_float32_against_float64():
    q, k, v, u = inputs(B=2, T=300, H=2, dk=16, dv=16)
    xs = [x.clone().requires_grad_() for x in (q, k, v, u)]
    xf = [x.float().clone().requires_grad_() for x in (q, k, v, u)]
    (o, _), (of, _) = vla_torch.vla(*xs), vla_torch.vla(*xf)
    o.sum().backward()
    of.sum().backward()
    assert rel(of.double(), o) < 1e-5
    for a, b in zip(xf, xs):
        assert rel(a.grad.double(), b.grad) < 1e-4


def test_bad_input_is_refused():
    q, k, v, u = inputs()
    with pytest.raises(RuntimeError, match="q, k and u must have the same shape"):
        vla_torch.vla(q, k[:, :, :, :3], v, u)
    bad = q.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        vla_torch.vla(bad, k, v, u)
    with pytest.raises(RuntimeError, match="lambda0"):
        vla_torch.vla(q, k, v, u, config=vla_torch.Config(lambda0=-1.0))


def test_torch_compile_traces_the_op():
    q, k, v, u = (x.clone().requires_grad_() for x in inputs(B=1, T=6, H=2, dk=4, dv=3))

    def f(q, k, v, u):
        o, (A, S, z, _) = vla_torch.vla(q, k, v, u)
        return (o * o).sum() + S.sum()

    eager = f(q, k, v, u)
    eager.backward()
    ge = [x.grad.clone() for x in (q, k, v, u)]
    for x in (q, k, v, u):
        x.grad = None
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)(q, k, v, u)
    compiled.backward()
    assert torch.equal(compiled, eager)
    for a, b in zip((q, k, v, u), ge):
        assert torch.equal(a.grad, b)


def test_layer_is_the_authors_composition_with_their_names():
    torch.manual_seed(3)
    layer = vla_torch.VLAAttention(d_model=8, n_heads=2).double()
    # vla::io::AttentionNames::authors_multihead: the names vla's C++ weight reader looks for.
    assert sorted(layer.state_dict()) == sorted(
        ["Wq.weight", "Wq.bias", "Wk.weight", "Wk.bias", "Wv.weight", "Wv.bias", "Wu.weight", "Wo.weight",
         "Wo.bias", "norm_o.weight", "norm_o.bias"])
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    y, (A, S, z, steps) = layer(x)
    heads = (2, 5, 2, 4)
    k_raw = layer.Wk(x)
    q = (torch.nn.functional.elu(layer.Wq(x)) + 1).reshape(heads)
    k = (torch.nn.functional.elu(k_raw) + 1).reshape(heads)
    o, *_ = reference(q, k, layer.Wv(x).reshape(heads), layer.Wu(k_raw).reshape(heads))
    want = layer.Wo(layer.norm_o(o.reshape(2, 5, 8)))
    assert rel(y, want) < 1e-12
    # Streaming: the state carries over (two halves give the whole).
    y1, st = layer(x[:, :3])
    y2, _ = layer(x[:, 3:], st)
    assert rel(torch.cat([y1, y2], dim=1), y) < 1e-13
    (y * y).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())



def _authors_notebook():
    """Their notebooks/07-vlav3-benchmark-fixed.ipynb, where a checkout of their repository (or a
    copy of the file) is pointed at by VLA_AUTHORS_NOTEBOOK; not part of this repository."""
    path = os.environ.get("VLA_AUTHORS_NOTEBOOK") or os.path.join(
        os.path.dirname(__file__), "..", "..", "_carry", "authors", "07-vlav3-benchmark-fixed.ipynb")
    return path if os.path.isfile(path) else None


@pytest.mark.skipif(_authors_notebook() is None, reason="the authors' notebook 07 is not here (VLA_AUTHORS_NOTEBOOK)")
def test_layer_matches_the_authors_module_under_autograd():
    """Their VLAv3Attn (run from their notebook, in float64) and VLAAttention with its weights: the
    output and the gradients of a loss with respect to the input and to every parameter. T = 45
    crosses two refresh steps."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools", "parity"))
    import authors

    ns = authors.load_notebook(_authors_notebook())
    torch.manual_seed(5)
    with authors.float64_run():
        theirs = ns.VLAv3Attn(d=32, H=4).double()
        ours = vla_torch.VLAAttention(d_model=32, n_heads=4).double()
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(2, 45, 32, dtype=torch.float64)
        w = torch.randn(2, 45, 32, dtype=torch.float64)
        names = sorted(n for n, _ in ours.named_parameters())
        assert names == sorted(n for n, _ in theirs.named_parameters())
        res = []
        for m in (theirs, ours):
            xi = x.clone().requires_grad_(True)
            params = dict(m.named_parameters())
            y = m(xi)
            y = y[0] if isinstance(y, tuple) else y
            g = torch.autograd.grad((y * w).sum(), [xi] + [params[n] for n in names])
            res.append((y.detach(), dict(zip(["x"] + names, g))))
    assert rel(res[1][0], res[0][0]) < 1e-12
    for name in ["x"] + names:
        assert rel(res[1][1][name], res[0][1][name]) < 1e-10, name

# ---- CUDA tensors: vla's CUDA backend against the CPU operator in float64 ---------------------------
# (The CPU operator is the reference here: it is checked above against the loop of §2.) Tolerances
# are relative RMS over a whole tensor, per token dtype: float32 tokens run float arithmetic
# (docs/cuda.md: ≤ 1e-6 on o against float64), float16/bfloat16 tokens are rounded on the way in
# and out (o rounds to 2^-11 / 2^-8 relative).

def _has_cuda_ops():
    return torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key("vla::vla_forward", "CUDA")


cuda_only = pytest.mark.skipif(not _has_cuda_ops(), reason="needs a GPU and vla_torch built with CUDA")
TOL_O = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}
TOL_GRAD = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def _gpu_inputs(dtype, B, T, H, dk, dv, seed):
    """Tokens rounded to `dtype` once; the float64 CPU copies hold the same values."""
    q, k, v, u = inputs(B=B, T=T, H=H, dk=dk, dv=dv, seed=seed)
    low = [x.to(dtype) for x in (q, k, v, u)]
    return [x.cuda() for x in low], [x.double() for x in low]


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("T", [77, 300])  # T = 300: the chunked path (from 256 tokens), 77: the recurrent
def test_cuda_forward_against_cpu_float64(dtype, T):
    dk = dv = 32
    gpu, cpu = _gpu_inputs(dtype, 2, T, 3, dk, dv, seed=11)
    st64 = some_state(2, 3, dk, dv)
    st_gpu = tuple(x.float().cuda() if x.is_floating_point() else x.cuda() for x in st64)
    o, (A, S, z, steps) = vla_torch.vla(*gpu, initial_state=st_gpu)
    ro, (rA, rS, rz, rsteps) = vla_torch.vla(*cpu, initial_state=st64)
    assert o.dtype == dtype and A.dtype == S.dtype == z.dtype == torch.float32 and o.is_cuda
    assert rel(o.double().cpu(), ro) < TOL_O[dtype]
    for a, b in ((A, rA), (S, rS), (z, rz)):
        assert rel(a.double().cpu(), b) < max(TOL_O[dtype], 1e-4)
    assert torch.equal(steps.cpu(), rsteps)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_gradients_against_cpu_float64(dtype):
    B, T, H, dk, dv = 2, 100, 2, 32, 64
    gpu, cpu = _gpu_inputs(dtype, B, T, H, dk, dv, seed=12)
    gpu = [x.requires_grad_() for x in gpu]
    cpu = [x.requires_grad_() for x in cpu]
    st64 = [x.clone().requires_grad_() if x.is_floating_point() else x for x in some_state(B, H, dk, dv)]
    st_gpu = [x.detach().float().cuda().requires_grad_() if x.is_floating_point() else x.cuda() for x in st64]
    g = torch.Generator().manual_seed(13)
    wo = torch.randn(B, T, H, dv, generator=g, dtype=torch.float64)
    wS = torch.randn(B, H, dv, dk, generator=g, dtype=torch.float64)
    o, (A, S, z, _) = vla_torch.vla(*gpu, initial_state=tuple(st_gpu))
    ((o.float() * wo.float().cuda()).sum() + (S * wS.float().cuda()).sum() + z.sum()).backward()
    ro, (rA, rS, rz, _) = vla_torch.vla(*cpu, initial_state=tuple(st64))
    ((ro * wo).sum() + (rS * wS).sum() + rz.sum()).backward()
    for name, a, b in zip("qkvu", gpu, cpu):
        assert a.grad.dtype == dtype
        assert rel(a.grad.double().cpu(), b.grad) < TOL_GRAD[dtype], name
    for name, a, b in zip(["A0", "S0", "z0"], st_gpu[:3], st64[:3]):
        assert a.grad.dtype == torch.float32
        assert rel(a.grad.double().cpu(), b.grad) < TOL_GRAD[dtype], name


@cuda_only
def test_cuda_varlen_against_cpu_and_cu_seqlens_on_either_device():
    dk = dv = 64
    gpu, cpu = _gpu_inputs(torch.float32, 1, 700, 2, dk, dv, seed=14)
    cu = torch.tensor([0, 5, 5, 400, 700], dtype=torch.int64)
    o, (A, S, z, steps) = vla_torch.vla(*gpu, cu_seqlens=cu)
    o2, (A2, S2, z2, steps2) = vla_torch.vla(*gpu, cu_seqlens=cu.cuda())
    assert torch.equal(o, o2) and torch.equal(A, A2) and torch.equal(S, S2) and torch.equal(steps, steps2)
    ro, (rA, rS, rz, rsteps) = vla_torch.vla(*cpu, cu_seqlens=cu)
    assert rel(o.double().cpu(), ro) < TOL_O[torch.float32]
    assert rel(S.double().cpu(), rS) < 1e-4 and torch.equal(steps.cpu(), rsteps)


@cuda_only
def test_cuda_unaligned_and_strided_views_are_accepted():
    dk = dv = 32
    gpu, cpu = _gpu_inputs(torch.float32, 1, 40, 2, dk + 1, dv + 1, seed=15)
    strided = [x[..., 1:] for x in gpu]  # not contiguous
    unaligned = []
    for x in strided:  # contiguous, but starting 4 bytes past a 16-byte boundary
        flat = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)
        flat[1:] = x.flatten()
        unaligned.append(flat[1:].view(x.shape))
    assert unaligned[0].is_contiguous() and unaligned[0].data_ptr() % 16
    ro, _ = vla_torch.vla(*[x[..., 1:].contiguous() for x in cpu])
    for xs in (strided, unaligned):
        o, _ = vla_torch.vla(*xs)
        assert rel(o.double().cpu(), ro) < TOL_O[torch.float32]


@cuda_only
def test_cuda_opcheck():
    gpu, _ = _gpu_inputs(torch.float32, 1, 9, 2, 32, 32, seed=16)
    torch.library.opcheck(torch.ops.vla.vla_forward.default, tuple(gpu) + (None,) * 5 + CFG.args())


@cuda_only
def test_cuda_bad_input_is_refused():
    gpu, _ = _gpu_inputs(torch.float32, 1, 8, 1, 32, 32, seed=17)
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
        vla_torch.vla(*[x.double() for x in gpu])
    with pytest.raises(RuntimeError, match="one device"):
        vla_torch.vla(gpu[0], gpu[1].cpu(), gpu[2], gpu[3])
    odd, _ = _gpu_inputs(torch.float32, 1, 8, 1, 48, 48, seed=18)
    with pytest.raises(RuntimeError, match="dk"):  # vla's CUDA backend: dk, dv ∈ {32, 64, 128}
        vla_torch.vla(*odd)
    with pytest.raises(RuntimeError, match="lambda0"):
        vla_torch.vla(*gpu, config=vla_torch.Config(lambda0=0.0))


# ---- the baselines (docs/maths.md §7) ------------------------------------------------------------

def reference_la(q, k, v, state=None, eps=CFG.denom_eps):
    """Linear attention of §7 by the token, batched over (B, H): S ← S + v kᵀ, z ← z + k, o = S q / max(zᵀq, ε)."""
    B, T, H, dk = q.shape
    S = q.new_zeros(B, H, v.shape[3], dk) if state is None else state[0]
    z = q.new_zeros(B, H, dk) if state is None else state[1]
    outs = []
    for t in range(T):
        S = S + v[:, t].unsqueeze(-1) * k[:, t].unsqueeze(-2)
        z = z + k[:, t]
        den = torch.clamp((z * q[:, t]).sum(-1), min=eps)
        outs.append((S @ q[:, t].unsqueeze(-1)).squeeze(-1) / den[..., None])
    return torch.stack(outs, dim=1), S, z


def reference_dn(q, k, v, beta, S=None):
    """DeltaNet of §7 by the token: k̂ = k/‖k‖, S ← S + β (v − S k̂) k̂ᵀ, o = S q."""
    B, T, H, dk = q.shape
    S = q.new_zeros(B, H, v.shape[3], dk) if S is None else S
    outs = []
    for t in range(T):
        kh = k[:, t] / k[:, t].norm(dim=-1, keepdim=True)
        e = v[:, t] - (S @ kh.unsqueeze(-1)).squeeze(-1)
        S = S + beta[:, t, :, None, None] * e.unsqueeze(-1) * kh.unsqueeze(-2)
        outs.append((S @ q[:, t].unsqueeze(-1)).squeeze(-1))
    return torch.stack(outs, dim=1), S


def some_beta(B, T, H, dtype=torch.float64, seed=7):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, H, generator=g, dtype=dtype) * 0.9 + 0.05


def test_linear_attention_forward_and_gradients_match_the_loop():
    q, k, v, _ = (x.clone().requires_grad_() for x in inputs(T=9))
    S0, z0 = (some_state(2, 2, 4, 3)[i].clone().requires_grad_() for i in (1, 2))
    g = torch.Generator().manual_seed(8)
    wo, wS = torch.randn(2, 9, 2, 3, generator=g, dtype=torch.float64), torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    o, (S, z) = vla_torch.linear_attention(q, k, v, initial_state=(S0, z0))
    ro, rS, rz = reference_la(q, k, v, state=(S0, z0))
    assert rel(o, ro) < 1e-13 and rel(S, rS) < 1e-13 and rel(z, rz) < 1e-13
    ((o * wo).sum() + (S * wS).sum() + z.sum()).backward()
    ours = [x.grad.clone() for x in (q, k, v, S0, z0)]
    for x in (q, k, v, S0, z0):
        x.grad = None
    ((ro * wo).sum() + (rS * wS).sum() + rz.sum()).backward()
    for name, a, x in zip(["q", "k", "v", "S0", "z0"], ours, (q, k, v, S0, z0)):
        assert rel(a, x.grad) < 1e-10, name


def test_deltanet_forward_and_gradients_match_the_loop():
    q, k, v, _ = (x.clone().requires_grad_() for x in inputs(T=9))
    beta = some_beta(2, 9, 2).requires_grad_()
    S0 = some_state(2, 2, 4, 3)[1].clone().requires_grad_()
    g = torch.Generator().manual_seed(9)
    wo, wS = torch.randn(2, 9, 2, 3, generator=g, dtype=torch.float64), torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    o, S = vla_torch.deltanet(q, k, v, beta, initial_state=S0)
    ro, rS = reference_dn(q, k, v, beta, S=S0)
    assert rel(o, ro) < 1e-13 and rel(S, rS) < 1e-13
    ((o * wo).sum() + (S * wS).sum()).backward()
    ours = [x.grad.clone() for x in (q, k, v, beta, S0)]
    for x in (q, k, v, beta, S0):
        x.grad = None
    ((ro * wo).sum() + (rS * wS).sum()).backward()
    for name, a, x in zip(["q", "k", "v", "beta", "S0"], ours, (q, k, v, beta, S0)):
        assert rel(a, x.grad) < 1e-10, name


def test_baselines_gradcheck_and_opcheck():
    q, k, v, _ = (x.clone().requires_grad_() for x in inputs(B=1, T=5, H=1, dk=3, dv=2))
    beta = some_beta(1, 5, 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda q, k, v: vla_torch.linear_attention(q, k, v)[0], (q, k, v), eps=1e-6,
                                    atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradcheck(lambda q, k, v, b: vla_torch.deltanet(q, k, v, b), (q, k, v, beta), eps=1e-6,
                                    atol=1e-7, rtol=1e-5)
    q, k, v, _ = inputs(B=1, T=4, H=2, dk=3, dv=2)
    torch.library.opcheck(torch.ops.vla.linear_attention_forward.default, (q, k, v, None, None, None) + CFG.args())
    torch.library.opcheck(torch.ops.vla.deltanet_forward.default, (q, k, v, some_beta(1, 4, 2), None, None) + CFG.args())


def test_baselines_varlen_is_the_sequences_one_by_one():
    q, k, v, _ = inputs(B=1, T=10, H=2)
    beta = some_beta(1, 10, 2)
    cu = torch.tensor([0, 4, 4, 10], dtype=torch.int64)
    o, (S, z) = vla_torch.linear_attention(q, k, v, cu_seqlens=cu)
    od, Sd = vla_torch.deltanet(q, k, v, beta, cu_seqlens=cu)
    for n in range(3):
        a, b = int(cu[n]), int(cu[n + 1])
        on, (Sn, zn) = vla_torch.linear_attention(q[:, a:b], k[:, a:b], v[:, a:b])
        odn, Sdn = vla_torch.deltanet(q[:, a:b], k[:, a:b], v[:, a:b], beta[:, a:b])
        assert torch.equal(o[:, a:b], on) and torch.equal(S[n], Sn[0]) and torch.equal(z[n], zn[0])
        assert torch.equal(od[:, a:b], odn) and torch.equal(Sd[n], Sdn[0])


def test_baselines_bad_input_is_refused():
    q, k, v, _ = inputs()
    with pytest.raises(RuntimeError, match="beta must be"):
        vla_torch.deltanet(q, k, v, some_beta(2, 7, 2) * 0)  # β = 0 is outside (0, 1]
    with pytest.raises(RuntimeError, match=r"beta must be \[B, T, H\]"):
        vla_torch.deltanet(q, k, v, some_beta(2, 6, 2))
    with pytest.raises(RuntimeError, match="initial state"):
        torch.ops.vla.linear_attention_forward(q, k, v, None, torch.zeros(2, 2, 3, 4, dtype=torch.float64), None,
                                               *CFG.args())


def test_baseline_layers_are_their_compositions():
    torch.manual_seed(4)
    la = vla_torch.LinearAttention(d_model=8, n_heads=2).double()
    dn = vla_torch.DeltaNetAttention(d_model=8, n_heads=2).double()
    assert sorted(la.state_dict()) == sorted(["Wq.weight", "Wq.bias", "Wk.weight", "Wk.bias", "Wv.weight", "Wv.bias",
                                              "Wo.weight", "Wo.bias"])
    assert "Wbeta.weight" in dn.state_dict()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    heads = (2, 5, 2, 4)
    y, _ = la(x)
    ro, _, _ = reference_la((torch.nn.functional.elu(la.Wq(x)) + 1).reshape(heads),
                            (torch.nn.functional.elu(la.Wk(x)) + 1).reshape(heads), la.Wv(x).reshape(heads), eps=1e-6)
    assert rel(y, la.Wo(ro.reshape(2, 5, 8))) < 1e-12
    y, _ = dn(x)
    ro, _ = reference_dn((torch.nn.functional.elu(dn.Wq(x)) + 1).reshape(heads), dn.Wk(x).reshape(heads),
                         dn.Wv(x).reshape(heads), torch.sigmoid(dn.Wbeta(x)))
    assert rel(y, dn.Wo(ro.reshape(2, 5, 8))) < 1e-12
    # A stream split in two continues from the state.
    y1, st = la(x[:, :2])
    y2, _ = la(x[:, 2:], state=st)
    assert rel(torch.cat([y1, y2], dim=1), la(x)[0]) < 1e-13


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_baselines_forward_against_cpu_float64(dtype):
    dk = dv = 64
    gpu, cpu = _gpu_inputs(dtype, 2, 300, 2, dk, dv, seed=19)
    beta64 = some_beta(2, 300, 2).to(dtype).double()
    o, (S, z) = vla_torch.linear_attention(*gpu[:3])
    ro, (rS, rz) = vla_torch.linear_attention(*cpu[:3])
    assert S.dtype == torch.float32 and rel(o.double().cpu(), ro) < TOL_O[dtype] and rel(S.double().cpu(), rS) < 1e-4
    o, S = vla_torch.deltanet(*gpu[:3], beta64.to(dtype).cuda())
    ro, rS = vla_torch.deltanet(*cpu[:3], beta64)
    assert rel(o.double().cpu(), ro) < TOL_O[dtype] and rel(S.double().cpu(), rS) < 1e-4


@cuda_only
def test_cuda_baselines_backward_says_it_is_not_built():
    gpu, _ = _gpu_inputs(torch.float32, 1, 8, 1, 32, 32, seed=20)
    q, k, v = (x.requires_grad_() for x in gpu[:3])
    o, _ = vla_torch.linear_attention(q, k, v)
    with pytest.raises(RuntimeError, match="CPU"):
        o.sum().backward()


# ---- decode steps: one token per sequence, the state updated in place --------------------------------

def _decode_cases(B, T, H, dk, dv, seed, dtype=torch.float64, device="cpu"):
    """(name, forward(tokens, state) -> (o, state'), step(tokens_t, state) -> o, tokens, state0) per op;
    the tokens [B, T, H, ·] and a random state in the op's parts."""
    q, k, v, u = (x.to(dtype) for x in inputs(B=B, T=T, H=H, dk=dk, dv=dv, seed=seed))
    beta = some_beta(B, T, H).to(dtype)
    A, S, z, steps = some_state(B, H, dk, dv)
    sd = torch.float32 if device == "cuda" else dtype
    A, S, z = (x.to(sd) for x in (A, S, z))
    mv = lambda *xs: [x.to(device) for x in xs]
    return [
        ("vla", lambda tok, st: vla_torch.vla(*tok, initial_state=st),
         lambda tok, st: vla_torch.vla_decode_step(*tok, st), mv(q, k, v, u), mv(A, S, z, steps)),
        ("linear", lambda tok, st: vla_torch.linear_attention(*tok, initial_state=st),
         lambda tok, st: vla_torch.linear_attention_decode_step(*tok, st), mv(q, k, v), mv(S, z)),
        ("deltanet", lambda tok, st: vla_torch.deltanet(*tok, initial_state=st[0]),
         lambda tok, st: vla_torch.deltanet_decode_step(*tok, st[0]), mv(q, k, v, beta), mv(S)),
    ]


def _as_tuple(state):
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def test_decode_steps_equal_the_forward_and_update_the_state_in_place():
    for name, fwd, step, tok, st0 in _decode_cases(B=2, T=23, H=3, dk=8, dv=4, seed=31):
        ro, rst = fwd(tok, tuple(x.clone() for x in st0))
        st = [x.clone() for x in st0]
        ptrs = [x.data_ptr() for x in st]
        outs = [step([x[:, t] for x in tok], st) for t in range(tok[0].shape[1])]
        assert [x.data_ptr() for x in st] == ptrs, name  # the caller's tensors, updated in place
        assert rel(torch.stack(outs, 1), ro) < 1e-14, name
        for a, b in zip(st, _as_tuple(rst)):
            assert (torch.equal(a, b) if not a.is_floating_point() else rel(a, b) < 1e-14), name


def test_decode_step_from_a_fresh_state_and_through_a_strided_state():
    q, k, v, u = inputs(B=2, T=5, H=3, dk=8, dv=4, seed=32)
    ro, (rA, rS, rz, rsteps) = vla_torch.vla(q, k, v, u)
    A, S, z, steps = vla_torch.fresh_state(2, 3, 8, 4, dtype=torch.float64)
    S = torch.zeros(2, 3, 8, 4, dtype=torch.float64).transpose(2, 3)  # a non-contiguous view: copied, written back
    outs = [vla_torch.vla_decode_step(q[:, t], k[:, t], v[:, t], u[:, t], (A, S, z, steps)) for t in range(5)]
    assert rel(torch.stack(outs, 1), ro) < 1e-14
    assert rel(A, rA) < 1e-14 and rel(S, rS) < 1e-14 and rel(z, rz) < 1e-14 and torch.equal(steps, rsteps)


def test_decode_step_bad_input_changes_nothing():
    q, k, v, u = (x[:, 0] for x in inputs(B=2, T=1, H=3, dk=8, dv=4, seed=33))
    state = [x.clone() for x in some_state(2, 3, 8, 4)]
    before = [x.clone() for x in state]
    bad_q = q.clone()
    bad_q[1, 2, 3] = float("nan")
    with pytest.raises(RuntimeError, match="finite|NaN|nan"):
        vla_torch.vla_decode_step(bad_q, k, v, u, state)
    with pytest.raises(RuntimeError, match="one token per sequence"):
        vla_torch.vla_decode_step(q[:, None], k[:, None], v[:, None], u[:, None], state)
    with pytest.raises(RuntimeError, match="S0 must be"):
        vla_torch.vla_decode_step(q, k, v, u, (state[0], state[1][:, :, :2], state[2], state[3]))
    for a, b in zip(state, before):
        assert torch.equal(a, b)


def test_decode_step_opcheck():
    q, k, v, u = (x[:, 0] for x in inputs(B=2, T=1, H=2, dk=8, dv=4, seed=34))
    A, S, z, steps = some_state(2, 2, 8, 4)
    torch.library.opcheck(torch.ops.vla.vla_decode_step.default,
                          (q, k, v, u, A.clone(), S.clone(), z.clone(), steps.clone(), *CFG.args()))


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_decode_steps_against_cpu_float64(dtype):
    """The CUDA decode kernel, step by step, against the CPU operator's forward in float64 (tokens
    rounded to dtype once, the state float32 on the GPU)."""
    for (name, fwd, _, tok64, st64), (_, _, step, tok, st) in zip(
            _decode_cases(B=3, T=40, H=2, dk=32, dv=64, seed=35),
            _decode_cases(B=3, T=40, H=2, dk=32, dv=64, seed=35, dtype=dtype, device="cuda")):
        tok64 = [x.to(dtype).double() for x in tok64]  # the values the GPU sees
        ro, rst = fwd(tok64, tuple(st64))
        st = [x.clone() for x in st]
        outs = [step([x[:, t] for x in tok], st) for t in range(40)]
        o = torch.stack(outs, 1)
        assert o.dtype == dtype and o.is_cuda, name
        assert rel(o.double().cpu(), ro) < TOL_O[dtype], name
        for a, b in zip(st, _as_tuple(rst)):
            if a.is_floating_point():
                assert rel(a.double().cpu(), b) < max(TOL_O[dtype], 1e-4), name
            else:
                assert torch.equal(a.cpu(), b), name

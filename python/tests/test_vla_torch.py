"""Tests of vla_torch (python/vla_torch): the operator against a plain-PyTorch float64 loop of
docs/maths.md §2 written here (its forward, and its gradients through torch.autograd), gradcheck,
opcheck, varlen and bad input. They need torch; without it they are reported skipped.

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

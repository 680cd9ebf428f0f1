#!/usr/bin/env python3
"""Parity fixture from the authors' own VLAv3 module, run in float64 with torch.autograd.

    python3 tools/parity/make_fixture.py AUTHORS_VLA_V3_PY OUT.bin [--d 16] [--T 96] [--seed 0]

AUTHORS_VLA_V3_PY is src/models/attention/vla_v3.py of github.com/Vishal-sys-code/
variational-linear-attention (the file is imported from where it lies, never copied into vla).
Their module casts to float32 inside forward (`.float()`, `dtype=torch.float32`); this script runs
it unchanged but with those two names pointing at float64, so the recurrence is evaluated in double.

It captures, through hooks on their code's own calls, the op's inputs — q = ELU(W_q x) + 1,
k = ELU(W_k x) + 1, v = W_v x, u = normalize(u_proj(W_k x)) — and the op's output (the input of
their LayerNorm), draws a random cotangent dO, and takes torch.autograd.grad of Σ out·dO with respect
to q, k, v, u. The fixture (little-endian, see tests/test_authors_parity.cpp) holds the config and
these nine T×d arrays; vla's CPU forward and backward are compared with it by the C++ test.
"""
import argparse
import importlib.util
import struct
import sys
import types

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("out")
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--T", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    spec = importlib.util.spec_from_file_location("authors_vla_v3", a.module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    captured = {}
    # Their forward names torch.float32 and Tensor.float(); point both at float64 for this run.
    fake_torch = types.SimpleNamespace(**{n: getattr(torch, n) for n in dir(torch) if not n.startswith("__")})
    fake_torch.float32 = torch.float64
    mod.torch = fake_torch

    elu_calls = []

    def elu(x, *args, **kw):
        y = F.elu(x, *args, **kw)
        elu_calls.append(y)
        return y

    def normalize(x, *args, **kw):
        y = F.normalize(x, *args, **kw)
        if "u" not in captured and x.dim() == 3:  # the first, whole-sequence call: u_dirs
            captured["u"] = y
        return y

    fake_F = types.SimpleNamespace(**{n: getattr(F, n) for n in dir(F) if not n.startswith("__")})
    fake_F.elu, fake_F.normalize = elu, normalize
    mod.F = fake_F

    torch.manual_seed(a.seed)
    layer = mod.VLAv3(a.d).double()  # their defaults: lambda_0 10, stab_eps 1e-4, per_eps 1e-3, period 20
    layer.W_v.register_forward_hook(lambda m, i, o: captured.__setitem__("v", o))
    layer.norm.register_forward_hook(lambda m, i, o: captured.__setitem__("o", i[0]))

    orig_float = torch.Tensor.float
    torch.Tensor.float = torch.Tensor.double
    try:
        x = torch.randn(1, a.T, a.d, dtype=torch.float64)
        layer(x)
    finally:
        torch.Tensor.float = orig_float
    # elu call 0 is k's feature map, call 1 q's (their forward's order).
    k, q = elu_calls[0], elu_calls[1]
    u, v, o = captured["u"], captured["v"], captured["o"]
    for name, t in (("q", q), ("k", k), ("v", v), ("u", u), ("o", o)):
        assert t.dtype == torch.float64, (name, t.dtype)
    d_o = torch.randn_like(o)
    dq, dk, dv, du = torch.autograd.grad((o * d_o).sum(), [q, k, v, u])

    arrays = [q + 1.0, k + 1.0, v, u, o, d_o, dq, dk, dv, du]  # q, k: ELU + 1 as the op sees them
    with open(a.out, "wb") as f:
        f.write(b"VLAFIX01")
        f.write(struct.pack("<qq", a.T, a.d))
        f.write(struct.pack("<dddqdd", layer.lambda_0, layer.stab_eps, layer.per_eps, layer.period, 1e-6, 0.0))
        for t in arrays:
            f.write(t.detach().reshape(a.T, a.d).contiguous().numpy().astype("<f8").tobytes())
    print(f"wrote {a.out}: T={a.T} d={a.d} seed={a.seed}, |o| {o.norm().item():.6g}, |dq| {dq.norm().item():.6g}, "
          f"|du| {du.norm().item():.6g}, torch {torch.__version__}")


if __name__ == "__main__":
    sys.exit(main())

"""Times vla_torch's CUDA operator (forward, and forward + backward through autograd) on one GPU,
beside, in the same process and on the same inputs' shapes: flash-linear-attention's
`chunk_delta_rule` (forward + backward, a simpler recurrence with no A chain; skipped if fla is not
importable) and a per-token PyTorch loop of docs/maths.md §2 batched over (B, H) — what a PyTorch
user of VLA without a fused op runs, as the authors' module does — at the shorter lengths only.

    python3 python/bench_vla_torch_gpu.py [--B 8] [--H 16] [--d 64] [--T 1024 4096] [--dtype bfloat16]

CUDA events, one warm-up, the median of --reps runs. Prints one line per (T, what).
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vla_torch  # noqa: E402


def cuda_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def loop_vla(q, k, v, u, cfg=vla_torch.Config()):
    """§2 token by token, batched over (B, H), float32 state (differentiable)."""
    B, T, H, dk = q.shape
    dv = v.shape[3]
    q, k, v, u = (x.float() for x in (q, k, v, u))
    A = torch.eye(dk, device=q.device).expand(B, H, dk, dk) / cfg.lambda0
    S = q.new_zeros(B, H, dv, dk)
    z = q.new_zeros(B, H, dk)
    eye = torch.eye(dk, device=q.device)
    outs = []
    for t in range(T):
        uh = u[:, t] / u[:, t].norm(dim=-1, keepdim=True) / math.sqrt(dk)
        w = (A @ uh.unsqueeze(-1)).squeeze(-1)
        delta = torch.clamp(1 + (uh * w).sum(-1), min=cfg.stab_eps)
        A = A - w.unsqueeze(-1) * w.unsqueeze(-2) / delta[..., None, None]
        if cfg.refresh_period > 0 and (t + 1) % cfg.refresh_period == 0:
            A = A + cfg.refresh_eps * eye
        kh = k[:, t] / k[:, t].norm(dim=-1, keepdim=True)
        al = (A @ kh.unsqueeze(-1)).squeeze(-1)
        ah = al / al.norm(dim=-1, keepdim=True)
        e = v[:, t] - (S @ kh.unsqueeze(-1)).squeeze(-1)
        S = S + e.unsqueeze(-1) * ah.unsqueeze(-2)
        z = z + k[:, t]
        outs.append((S @ q[:, t].unsqueeze(-1)).squeeze(-1) / torch.clamp((z * q[:, t]).sum(-1), min=cfg.denom_eps)[..., None])
    return torch.stack(outs, dim=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--B", type=int, default=8)
    p.add_argument("--H", type=int, default=16)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--loop-up-to", type=int, default=1024, help="time the per-token loop only up to this T")
    a = p.parse_args()
    dt = getattr(torch, a.dtype)
    try:
        from fla.ops.delta_rule import chunk_delta_rule
    except Exception as e:  # noqa: BLE001
        chunk_delta_rule = None
        print(f"fla not importable ({type(e).__name__}): its rows are skipped")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, B={a.B} H={a.H} d={a.d} {a.dtype}")
    for T in a.T:
        g = torch.Generator(device="cuda").manual_seed(T)
        shape = (a.B, T, a.H, a.d)
        rnd = lambda: torch.randn(shape, generator=g, device="cuda")  # noqa: E731
        q = (torch.nn.functional.elu(rnd()) + 1).to(dt).requires_grad_()
        k = (torch.nn.functional.elu(rnd()) + 1).to(dt).requires_grad_()
        v, u = rnd().to(dt).requires_grad_(), rnd().to(dt).requires_grad_()
        w = rnd().to(dt)

        def fwd():
            with torch.no_grad():
                vla_torch.vla(q, k, v, u)

        def fwd_bwd():
            o, _ = vla_torch.vla(q, k, v, u)
            (o * w).sum().backward()

        rows = [("vla_torch forward", cuda_ms(fwd, a.reps)), ("vla_torch forward+backward", cuda_ms(fwd_bwd, a.reps))]
        if chunk_delta_rule is not None:
            kn = torch.nn.functional.normalize(k.detach().float(), dim=-1).to(dt).requires_grad_()
            beta = torch.rand(a.B, T, a.H, generator=g, device="cuda").to(dt).requires_grad_()

            def fla_fwd_bwd():
                o, _ = chunk_delta_rule(q, kn, v, beta)
                (o * w).sum().backward()

            rows.append(("FLA chunk_delta_rule forward+backward", cuda_ms(fla_fwd_bwd, a.reps)))
        if T <= a.loop_up_to:
            def loop_fwd_bwd():
                (loop_vla(q, k, v, u) * w.float()).sum().backward()

            rows.append(("per-token PyTorch loop forward+backward", cuda_ms(loop_fwd_bwd, 1)))
        for name, ms in rows:
            print(f"T={T:6d}  {name:42s} {ms:10.3f} ms")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The backward's peers, timed in the same device call as vla's backward (bench_vla_gpu.cu
--only-backward): flash-linear-attention's fused_recurrent_delta_rule and chunk_delta_rule for
DeltaNet (a simpler recurrence than VLA: no A chain), bf16, d = 64, at the bench shapes.

Per peer and shape: the forward with autograd recording (ms_fwd) and forward + backward (ms_fb),
CUDA events, warm-up first, median of repeats; the backward's time is ms_fb − ms_fwd.
Writes CSV rows  backward,<peer>_{fwd,fwd_bwd,bwd},B,H,T,d,bf16,ms,tokens_per_s  to --csv.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from peers import time_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    out = open(args.csv, "w") if args.csv else None
    try:
        from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule
    except Exception as e:  # noqa: BLE001
        print(f"flash-linear-attention not available ({e}): no backward peers")
        return 0
    dev = torch.device("cuda")
    d = 64
    Ts = [1024, 4096] if args.quick else [1024, 4096, 16384, 65536]
    print(f"\n== backward peers (FLA DeltaNet), bf16, d = {d} (median ms: forward with autograd, forward + backward, difference)")
    torch.manual_seed(0)
    for B, H in [(8, 16), (4, 1)]:
        for T in Ts:
            q = torch.randn(B, T, H, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
            k = F.normalize(torch.randn(B, T, H, d, device=dev, dtype=torch.float32), p=2, dim=-1).to(torch.bfloat16).requires_grad_()
            v = torch.randn(B, T, H, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
            beta = torch.rand(B, T, H, device=dev, dtype=torch.bfloat16).sigmoid().requires_grad_()
            do = torch.randn(B, T, H, d, device=dev, dtype=torch.bfloat16)
            for name, fn in [("fla_fused_recurrent_delta_rule", fused_recurrent_delta_rule), ("fla_chunk_delta_rule", chunk_delta_rule)]:
                def fwd():
                    return fn(q, k, v, beta)[0]

                def fwd_bwd():
                    o = fwd()
                    o.backward(do)

                ms_f = time_ms(fwd)
                ms_fb = time_ms(fwd_bwd)
                print(f"{B:<3} {H:<3} {T:<6} {name:32s} fwd {ms_f:9.3f}  fwd+bwd {ms_fb:9.3f}  bwd {ms_fb - ms_f:9.3f}", flush=True)
                if out:
                    for tag, ms in [("fwd", ms_f), ("fwd_bwd", ms_fb), ("bwd", ms_fb - ms_f)]:
                        out.write(f"backward,{name}_{tag},{B},{H},{T},{d},bf16,{ms:.6f},{B * T / (ms * 1e-3):.1f}\n")
                    out.flush()
            del q, k, v, beta, do
            torch.cuda.empty_cache()
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

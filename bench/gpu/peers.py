#!/usr/bin/env python3
"""Peers timed in the same run as vla's kernels: PyTorch SDPA (causal, bf16) and
flash-linear-attention's fused_recurrent_delta_rule / chunk_delta_rule (bf16), at the bench shapes.

CUDA events, warm-up first (Triton compiles and autotunes there), median of repeats sized to ~0.3 s.
Writes CSV rows  forward,<peer>,B,H,T,d,bf16,ms,tokens_per_s  to --csv.
"""
import argparse
import statistics
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, budget_ms=300.0, max_reps=25):
    fn()  # warm-up (compilation, autotuning)
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record(); fn(); b.record(); b.synchronize()
    first = a.elapsed_time(b)
    reps = max(3, min(max_reps, int(budget_ms / max(first, 1e-3))))
    ts = []
    for _ in range(reps):
        a.record(); fn(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    out = open(args.csv, "w") if args.csv else None
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    try:
        import triton
        from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule
        import fla
        print(f"flash-linear-attention {getattr(fla, '__version__', '?')}, triton {triton.__version__}")
    except Exception as e:  # noqa: BLE001
        print(f"flash-linear-attention not available ({e}); its columns stay empty")
        chunk_delta_rule = fused_recurrent_delta_rule = None
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except Exception:  # noqa: BLE001
        chunk_gated_delta_rule = None

    # The bf16 tensor rate in this run: one 8192^3 product, median of repeats.
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn_like(a)
    gemm_ms = time_ms(lambda: a @ b)
    print(f"bf16 GEMM 8192^3: {gemm_ms:.3f} ms = {2 * 8192 ** 3 / gemm_ms / 1e9:.1f} TFLOP/s")
    if out:
        out.write(f"gemm,bf16_8192,0,0,0,0,bf16,{gemm_ms:.6f},{2 * 8192 ** 3 / (gemm_ms * 1e-3):.1f}\n")
    del a, b

    d = 64
    Ts = [1024, 4096] if args.quick else [1024, 4096, 16384, 65536]
    print(f"\n== peers, bf16, d = {d} (median ms; M tokens/s = B·T / time)")
    print(f"{'B':<3} {'H':<3} {'T':<6} | {'sdpa causal':>22} | {'fla fused_recurrent':>22} | {'fla chunk':>22}")
    torch.manual_seed(0)
    for B, H in [(8, 16), (4, 1)]:
        for T in Ts:
            row = {}
            # SDPA: [B, H, T, d]
            q = torch.randn(B, H, T, d, device=dev, dtype=torch.bfloat16)
            k = torch.randn_like(q)
            v = torch.randn_like(q)
            row["sdpa_causal_bf16"] = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
            del q, k, v
            if fused_recurrent_delta_rule is not None:
                # FLA: [B, T, H, d]; unit keys prepared outside the timed region (FLA's fastest path).
                q = torch.randn(B, T, H, d, device=dev, dtype=torch.bfloat16)
                k = F.normalize(torch.randn(B, T, H, d, device=dev, dtype=torch.float32), p=2, dim=-1).to(torch.bfloat16)
                v = torch.randn(B, T, H, d, device=dev, dtype=torch.bfloat16)
                beta = torch.rand(B, T, H, device=dev, dtype=torch.bfloat16).sigmoid()
                with torch.no_grad():
                    row["fla_fused_recurrent_delta_rule"] = time_ms(lambda: fused_recurrent_delta_rule(q, k, v, beta))
                    row["fla_chunk_delta_rule"] = time_ms(lambda: chunk_delta_rule(q, k, v, beta))
                    if chunk_gated_delta_rule is not None:
                        g = -torch.rand(B, T, H, device=dev, dtype=torch.float32) * 0.1
                        row["fla_chunk_gated_delta_rule"] = time_ms(lambda: chunk_gated_delta_rule(q, k, v, g, beta))
                        del g
                del q, k, v, beta
            torch.cuda.empty_cache()

            def cell(name):
                if name not in row:
                    return f"{'-':>22}"
                ms = row[name]
                return f"{ms:9.3f} ({B * T / ms / 1e3:9.2f})"

            print(f"{B:<3} {H:<3} {T:<6} | {cell('sdpa_causal_bf16')} | {cell('fla_fused_recurrent_delta_rule')} | "
                  f"{cell('fla_chunk_delta_rule')}", flush=True)
            if out:
                for name, ms in row.items():
                    out.write(f"forward,{name},{B},{H},{T},{d},bf16,{ms:.6f},{B * T / (ms * 1e-3):.1f}\n")
                out.flush()
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The authors' own TinyLM (notebooks/07, their classes loaded by tools/parity/authors.py) on the GPU:
prefill of B = 8 prompts of T = 4,096 tokens, float32, their ModelConfig, eval mode, no grad. Their
layers loop over tokens in Python, so a decode step costs a whole forward; only prefill is timed.

    python3 bench/gpu/tinylm_peer.py NOTEBOOK_07 [--B 8] [--T 4096] [--reps 2]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "parity"))
import authors  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("notebook")
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    nb = authors.load_notebook(a.notebook)
    cfg = nb.ModelConfig()
    for kind in ("vla", "linear"):
        torch.manual_seed(0)
        model = nb.TinyLM(cfg, kind).cuda().eval()
        x = torch.randint(0, cfg.vocab_size, (a.B, a.T), device="cuda")
        times = []
        with torch.no_grad():
            model(x[:, :64])  # warm-up
            for _ in range(a.reps):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        ms = sorted(times)[len(times) // 2] * 1e3
        print(f"tinylm_peer,{kind},prefill_B{a.B}_T{a.T}_ms,{ms:.1f},tokens_per_s,{a.B * a.T / (ms * 1e-3):.4g},torch {torch.__version__}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The paper's state-norm claim in its own setting, run with the authors' own classes (issue 10).

    python3 tools/parity/state_norm_authors.py NOTEBOOK_07 [--seeds 10] [--T 1000] [--device cuda]

Their notebook's experiment 2: a random-init TinyLM (ModelConfig defaults: d_model 128, 4 heads of 32,
2 layers, d_ff 256, vocab 128), T = 1,000 random tokens, need_state=True, and the last block's
‖S_T‖_F averaged over heads ("S_final"); the claim is S_final(linear) / S_final(vla) ≈ 109× (the
notebook prints 113× for its one seed). Printed: first the notebook's own sequence (seed 42, models
built in ATTN order softmax, linear, deltanet, vla, tokens drawn after each model), then one row per
seed s (torch.manual_seed(s) before each model; the same tokens for both), and mean ± sd of the ratio.
float32, as the notebook ran; the classes are loaded from the notebook file (tools/parity/authors.py).
"""
import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import authors  # noqa: E402


def s_final(nb, cfg, kind, tokens, seed, device):
    torch.manual_seed(seed)
    model = nb.TinyLM(cfg, kind).to(device).eval()
    with torch.no_grad():
        _, state = model(tokens.to(device), need_state=True)
    return state["S_norm"][-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("notebook")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    nb = authors.load_notebook(a.notebook)
    cfg = nb.ModelConfig()

    torch.manual_seed(42)  # the notebook's own order of draws
    finals = {}
    for name in nb.ATTN:
        model = nb.TinyLM(cfg, name).to(a.device).eval()
        x = torch.randint(0, cfg.vocab_size, (1, a.T), device=a.device)
        with torch.no_grad():
            _, state = model(x, need_state=True)
        finals[name] = state["S_norm"][-1] if state and state.get("S_norm") else None
    print(f"notebook order, seed 42: S_final linear {finals['linear']:.6g}, vla {finals['vla']:.6g}, "
          f"deltanet {finals['deltanet']:.6g}, ratio linear/vla {finals['linear'] / finals['vla']:.4g}")

    ratios, la_all, vla_all = [], [], []
    for s in range(a.seeds):
        g = torch.Generator().manual_seed(10_000 + s)
        tokens = torch.randint(0, cfg.vocab_size, (1, a.T), generator=g)
        la, vla = s_final(nb, cfg, "linear", tokens, s, a.device), s_final(nb, cfg, "vla", tokens, s, a.device)
        ratios.append(la / vla)
        la_all.append(la)
        vla_all.append(vla)
        print(f"seed {s}: S_final linear {la:.6g}, vla {vla:.6g}, ratio {la / vla:.4g}")
    sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    print(f"ratio linear/vla over {a.seeds} seeds: {statistics.mean(ratios):.4g} ± {sd:.3g} (sd); "
          f"min {min(ratios):.4g}, max {max(ratios):.4g}; S_final linear {statistics.mean(la_all):.5g}, "
          f"vla {statistics.mean(vla_all):.5g}; torch {torch.__version__}, {a.device}")


if __name__ == "__main__":
    sys.exit(main())

"""The MQAR figure and table of docs/experiments.md §7 from mqar.py's JSON lines.

    python3 python/experiments/plot_mqar.py bench/gpu/runs/mqar_20261207_h100/*.jsonl \
        --png docs/figures/mqar.png --csv docs/figures/mqar.csv

Left: accuracy against n_pairs (T = 3n + 1, 3,000 steps), mean over seeds with each seed's point;
right: accuracy against T at n_pairs = 8 (the long-context runs). Needs matplotlib for the PNG.
"""
import argparse
import csv
import json
import statistics

MODELS = [("vla", "VLA", "tab:red"), ("deltanet", "DeltaNet", "tab:blue"), ("linear", "linear attention", "tab:green"),
          ("softmax", "softmax (SDPA)", "tab:gray")]


def cells(rows, capacity):
    out = {}
    for r in rows:
        is_cap = r["T"] == 3 * r["n_pairs"] + 1
        if is_cap != capacity or (not capacity and r["n_pairs"] != 8):
            continue
        key = (r["model"], r["n_pairs"] if capacity else r["T"])
        out.setdefault(key, []).append(r["accuracy"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--png", default=None)
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    rows = [json.loads(l) for f in a.files for l in open(f) if l.strip()]
    rows = [r for r in rows if r["model"] != "authors_vla"]
    cap, lc = cells(rows, True), cells(rows, False)
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["experiment", "model", "n_pairs", "T", "seeds", "mean", "sd", "values"])
            for name, c in (("capacity", cap), ("long_context", lc)):
                for (m, x), v in sorted(c.items()):
                    n, T = (x, 3 * x + 1) if name == "capacity" else (8, x)
                    sd = statistics.stdev(v) if len(v) > 1 else 0.0
                    w.writerow([name, m, n, T, len(v), f"{statistics.mean(v):.4f}", f"{sd:.4f}", " ".join(f"{y:.4f}" for y in v)])
    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, c, xlabel in ((axes[0], cap, "n_pairs (T = 3n + 1)"), (axes[1], lc, "sequence length T (n_pairs = 8)")):
            for m, label, color in MODELS:
                xs = sorted(x for (mm, x) in c if mm == m)
                if not xs:
                    continue
                ax.plot(xs, [statistics.mean(c[(m, x)]) for x in xs], "-o", color=color, label=label, ms=4)
                for x in xs:
                    ax.plot([x] * len(c[(m, x)]), c[(m, x)], ".", color=color, alpha=0.5)
            ax.set_xscale("log", base=2)
            ax.set_ylim(0, 1.04)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("held-out query accuracy")
            ax.grid(alpha=0.3)
        xs = sorted({x for (_, x) in cap})
        axes[0].plot(xs, [1 / x for x in xs], ":", color="black", lw=1, label="1/n (a stored value at random)")
        axes[0].axvline(32, color="black", lw=0.6, ls="--")
        axes[0].text(33, 0.5, "n = d_h", fontsize=8)
        axes[0].legend(fontsize=8)
        axes[0].set_title("MQAR capacity (3,000 steps)")
        axes[1].set_title("MQAR long context (2,000 steps)")
        fig.tight_layout()
        fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()

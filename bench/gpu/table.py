#!/usr/bin/env python3
"""The short table run_gpu.sh prints last: ours beside the peers, from the CSVs of one run."""
import sys


def read(paths):
    rows = []
    for p in paths:
        try:
            with open(p) as f:
                rows += [line.strip().split(",") for line in f if line.strip()]
        except OSError:
            pass
    return rows


def main(paths):
    rows = read(paths)
    fwd = {}
    for r in rows:
        if r[0] == "forward":
            fwd[(r[1], int(r[2]), int(r[3]), int(r[4]))] = float(r[7])
    cols = [("ours_vla", "VLA"), ("ours_vla_chunked", "VLA chunked"), ("ours_linear_attention", "LinAttn"), ("ours_deltanet", "DeltaNet"),
            ("fla_fused_recurrent_delta_rule", "FLA fused_rec DN"), ("fla_chunk_delta_rule", "FLA chunk DN"),
            ("fla_chunk_gated_delta_rule", "FLA chunk gated DN"),
            ("sdpa_causal_bf16", "SDPA causal")]
    shapes = sorted({k[1:] for k in fwd}, key=lambda s: (-s[0] * s[1], s[2]))
    if shapes:
        print("\n## Forward, bf16 tokens, d = 64: median ms (M tokens/s); ratios are time(peer)/time(ours), > 1 = ours faster")
        print("| B | H | T | " + " | ".join(c[1] for c in cols) + " | VLA vs FLA fused | DeltaNet vs FLA fused | VLA vs SDPA | VLA µs/step | chunked vs recurrent | chunked vs FLA chunk DN | chunked vs SDPA |")
        print("|" + "---|" * (3 + len(cols) + 7))
        for B, H, T in shapes:
            cells = []
            for key, _ in cols:
                ms = fwd.get((key, B, H, T))
                cells.append("-" if ms is None else f"{ms:.3f} ({B * T / ms / 1e3:.2f})")

            def ratio(peer, ours):
                a, b = fwd.get((peer, B, H, T)), fwd.get((ours, B, H, T))
                return "-" if a is None or b is None else f"{a / b:.2f}×"

            vla = fwd.get(("ours_vla", B, H, T))
            step = "-" if vla is None else f"{vla * 1e3 / T:.3f}"
            print(f"| {B} | {H} | {T} | " + " | ".join(cells) + f" | {ratio('fla_fused_recurrent_delta_rule', 'ours_vla')} | "
                  f"{ratio('fla_fused_recurrent_delta_rule', 'ours_deltanet')} | {ratio('sdpa_causal_bf16', 'ours_vla')} | {step} | "
                  f"{ratio('ours_vla', 'ours_vla_chunked')} | {ratio('fla_chunk_delta_rule', 'ours_vla_chunked')} | "
                  f"{ratio('sdpa_causal_bf16', 'ours_vla_chunked')} |")
    split = sorted({k[1:] for k in fwd if k[0].startswith("ours_vla_split")}, key=lambda s: (s[0] * s[1], s[2]))
    if split:
        print("\n## Time split (docs/maths.md §4b): VLA with each sequence cut into R spans; median ms, best R")
        print("| B | H | T | every R (ms) | best | vs VLA chunked (unsplit) | vs FLA chunk DN | vs SDPA |")
        print("|---|---|---|---|---|---|---|---|")
        for B, H, T in split:
            rs = sorted((int(k[0][len("ours_vla_split"):]), ms) for k, ms in fwd.items() if k[1:] == (B, H, T) and k[0].startswith("ours_vla_split"))
            r_best, best = min(rs, key=lambda x: x[1])

            def vs(peer):
                a = fwd.get((peer, B, H, T))
                return "-" if a is None else f"{a / best:.2f}×"

            print(f"| {B} | {H} | {T} | " + ", ".join(f"R={r}: {ms:.3f}" for r, ms in rs) +
                  f" | {best:.3f} (R={r_best}) | {vs('ours_vla_chunked')} | {vs('fla_chunk_delta_rule')} | {vs('sdpa_causal_bf16')} |")
    variants = sorted({k[0].split("@", 1)[1] for k in fwd if "@" in k[0]})
    for tag in variants:
        print(f"\n## Variant '{tag}' vs default (same run): median ms, ratio default/variant (> 1 = variant faster)")
        print("| op | B | H | T | default | variant | ratio |")
        print("|---|---|---|---|---|---|---|")
        for (key, B, H, T), ms in sorted(fwd.items()):
            if key.endswith("@" + tag):
                base = fwd.get((key.split("@")[0], B, H, T))
                if base:
                    print(f"| {key.split('@')[0].replace('ours_', '')} | {B} | {H} | {T} | {base:.3f} | {ms:.3f} | {base / ms:.2f}× |")
    bwd = {(r[1], int(r[2]), int(r[3]), int(r[4])): float(r[7]) for r in rows if r[0] == "backward"}
    if bwd:
        print("\n## Backward, bf16 tokens, d = 64: median ms; FLA's backward = its forward + backward − its forward (DeltaNet)")
        print("| B | H | T | VLA fwd recurrent | VLA bwd (ckpt 64) | VLA bwd (ckpt 256) | bwd / fwd | FLA fused_rec DN bwd | FLA chunk DN bwd | VLA bwd vs FLA fused_rec DN bwd |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for B, H, T in sorted({k[1:] for k in bwd}, key=lambda s: (-s[0] * s[1], s[2])):
            def g(key):
                return bwd.get((key, B, H, T))

            def f(x):
                return "-" if x is None else f"{x:.3f}"

            fw, b64, b256 = g("ours_vla_forward_recurrent"), g("ours_vla_ckpt64"), g("ours_vla_ckpt256")
            best = min([x for x in (b64, b256) if x is not None], default=None)
            fr, ch = g("fla_fused_recurrent_delta_rule_bwd"), g("fla_chunk_delta_rule_bwd")
            print(f"| {B} | {H} | {T} | {f(fw)} | {f(b64)} | {f(b256)} | "
                  f"{'-' if best is None or fw is None else f'{best / fw:.2f}×'} | {f(fr)} | {f(ch)} | "
                  f"{'-' if best is None or fr is None else f'{fr / best:.2f}×'} |")
    for tag in sorted({k[0].split("@", 1)[1].split("_ckpt")[0] for k in bwd if "@" in k[0]}):
        print(f"\n## Backward, variant '{tag}' vs default (same run): median ms, best checkpoint, ratio default/variant (> 1 = variant faster)")
        print("| B | H | T | default | variant | ratio |")
        print("|---|---|---|---|---|---|")
        for B, H, T in sorted({k[1:] for k in bwd}, key=lambda s: (-s[0] * s[1], s[2])):
            d = [bwd.get((f"ours_vla_ckpt{c}", B, H, T)) for c in (64, 256)]
            v = [bwd.get((f"ours_vla@{tag}_ckpt{c}", B, H, T)) for c in (64, 256)]
            d, v = [x for x in d if x], [x for x in v if x]
            if d and v:
                print(f"| {B} | {H} | {T} | {min(d):.3f} | {min(v):.3f} | {min(d) / min(v):.2f}× |")
    dec = [r for r in rows if r[0] == "decode"]
    copy = [r for r in rows if r[0] == "copy"]
    if dec:
        cp = float(copy[0][9]) if copy else float("nan")
        print(f"\n## Decode step, d = 64, states in HBM; device-to-device copy measured in the same run: {cp:.0f} GB/s")
        print("| op | B·H | µs/step | G head-steps/s | GB/s (A,S read+write) | fraction of copy |")
        print("|---|---|---|---|---|---|")
        for r in dec:
            heads = int(r[2]) * int(r[3])
            ms, hs, gbps, frac = float(r[7]), float(r[8]), float(r[9]), float(r[10])
            print(f"| {r[1].replace('ours_', '')} | {heads} | {ms * 1e3:.2f} | {hs / 1e9:.3f} | {gbps:.0f} | {100 * frac:.1f} % |")


if __name__ == "__main__":
    main(sys.argv[1:])

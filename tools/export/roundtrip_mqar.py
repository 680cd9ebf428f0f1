#!/usr/bin/env python3
"""A TinyLM trained by python/experiments/mqar.py, exported and run by vla's C++ TinyLM: the round
trip of issue 12 (export_tinylm.py on a model trained with vla_torch).

    python3 tools/export/roundtrip_mqar.py MODEL.pt --tinylm build/examples/vla_tinylm
        [--n-pairs 32] [--sequences 32] [--backend cpu] [--out-dir DIR]

MODEL.pt is a state_dict that mqar.py --save-dir wrote ({kind}_n{n}_T{T}_s{seed}.pt). The script
exports it (export_tinylm.py, float32), draws held-out MQAR sequences as mqar.py's evaluation does,
runs vla_tinylm --logits-out on each, and prints: the relative difference of the C++ logits from
PyTorch's (the same model in float32 on the CPU), and the query accuracy of each.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "..", "python", "experiments"))
sys.path.insert(0, os.path.join(here, "..", "..", "python"))
import export_tinylm  # noqa: E402
import mqar  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tinylm", required=True, help="the vla_tinylm binary (examples/tinylm)")
    ap.add_argument("--n-pairs", type=int, default=None, help="default: from the file name")
    ap.add_argument("--T", type=int, default=None, help="default: from the file name")
    ap.add_argument("--sequences", type=int, default=32)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args()
    m = re.search(r"(vla|linear|deltanet)_n(\d+)_T(\d+)_s(\d+)\.pt$", a.model)
    if not m:
        raise SystemExit("roundtrip: name the file as mqar.py does: {kind}_n{n}_T{T}_s{seed}.pt")
    kind = m.group(1)
    n = a.n_pairs or int(m.group(2))
    T = a.T or int(m.group(3))
    sd = torch.load(a.model, map_location="cpu")
    model = mqar.TinyLM(kind, max_len=sd["pos.weight"].shape[0], baselines="op")
    model.load_state_dict(sd)
    model.eval()
    out_dir = a.out_dir or tempfile.mkdtemp(prefix="vla_roundtrip_")
    cfg = export_tinylm.infer_config(model.state_dict(), 4)
    export_tinylm.export(model.state_dict(), out_dir, cfg)
    gen = torch.Generator().manual_seed(20_000 + n)
    x, y = mqar.mqar_batch(a.sequences, n, gen, "cpu", T)
    with torch.no_grad():
        ref = model(x)
    hits_t = hits_c = total = 0
    num = den = 0.0
    for b in range(a.sequences):
        lf = os.path.join(out_dir, "logits.bin")
        subprocess.run([a.tinylm, "--model", out_dir, "--backend", a.backend, "--tokens",
                        " ".join(str(t) for t in x[b].tolist()), "--logits-out", lf],
                       check=True, stdout=subprocess.DEVNULL)
        got = torch.frombuffer(bytearray(open(lf, "rb").read()), dtype=torch.float32).view(T, -1)
        num += (got - ref[b]).pow(2).sum().item()
        den += ref[b].pow(2).sum().item()
        mask = y[b] != -100
        hits_t += (ref[b].argmax(-1)[mask] == y[b][mask]).sum().item()
        hits_c += (got.argmax(-1)[mask] == y[b][mask]).sum().item()
        total += mask.sum().item()
    print(f"{os.path.basename(a.model)}: {cfg['attention']}, n_pairs {n}, T {T}, {a.sequences} held-out sequences, "
          f"backend {a.backend}")
    print(f"  logits, C++ against PyTorch (float32): relative difference {(num / den) ** 0.5:.2e}")
    print(f"  query accuracy: PyTorch {hits_t / total:.4f}, C++ {hits_c / total:.4f} ({total} queries)")


if __name__ == "__main__":
    main()

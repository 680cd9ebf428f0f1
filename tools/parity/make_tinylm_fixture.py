#!/usr/bin/env python3
"""Model-level parity fixtures from the authors' code (issue 10), run in float64.

    python3 tools/parity/make_tinylm_fixture.py NOTEBOOK_07 VLA_V3_PY OUT_DIR [--seed 0]

NOTEBOOK_07 is notebooks/07-vlav3-benchmark-fixed.ipynb and VLA_V3_PY src/models/attention/vla_v3.py
of github.com/Vishal-sys-code/variational-linear-attention (read where they lie; tools/parity/authors.py).
Writes, under OUT_DIR:
  tinylm_vla/, tinylm_linear_attention/   their TinyLM (VLAv3Attn / LinearAttn), random init as theirs,
      d_model 64, 2 heads of 32, 2 layers, d_ff 128, vocab 64, max_seq_len 128; weights rounded to
      bfloat16 values and written as BF16 (exact, half the bytes), config.json + model.safetensors
      (tools/export/export_tinylm.py) and
      expected.safetensors: "tokens" [T] (ids as F32) and "logits" [T, vocab], their forward in float64
      on the float32 weights widened exactly.
  vlav3_single_head.safetensors   their single-head VLAv3 module (its own default init), its
      state_dict under its own names, "input.x" [T, d] and "output.y" [T, d] (float64 run, stored F32).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "export"))
import authors  # noqa: E402
import export_tinylm  # noqa: E402

# Heads of 32 (a head size the CUDA kernels have); small vocabulary and positions keep the files small.
SMALL = dict(d_model=64, n_heads=2, n_layers=2, d_ff=128, vocab_size=64, max_seq_len=128)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("notebook")
    ap.add_argument("vla_v3")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--T", type=int, default=100)
    a = ap.parse_args()
    nb = authors.load_notebook(a.notebook)

    for kind, attn, constants in (("vla", "vla", {}), ("linear_attention", "linear", {})):
        torch.manual_seed(a.seed)
        cfg = nb.ModelConfig(dropout=0.0, **SMALL)
        model = nb.TinyLM(cfg, attn).eval()  # float32, their init
        with torch.no_grad():  # weights rounded to bfloat16 values, so the BF16 file holds them exactly
            for prm in model.parameters():
                prm.copy_(prm.bfloat16().float())
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # Ties survive clone() only by name; keep the tie explicit for the exporter.
        sd["head.weight"] = sd["tok.weight"]
        out_dir = os.path.join(a.out, "tinylm_" + kind)
        vla_cfg = export_tinylm.infer_config(sd, cfg.n_heads, **constants)
        assert vla_cfg["attention"] == kind, vla_cfg
        export_tinylm.export(sd, out_dir, vla_cfg, dtype="bf16")
        tokens = torch.randint(0, cfg.vocab_size, (1, a.T))
        with authors.float64_run(), torch.no_grad():
            logits, _ = model.double()(tokens)
        assert logits.dtype == torch.float64
        export_tinylm.write_safetensors(os.path.join(out_dir, "expected.safetensors"),
                                        {"tokens": tokens[0].double(), "logits": logits[0]},
                                        metadata={"source": "authors' TinyLM, notebooks/07, float64", "seed": a.seed,
                                                  "torch": torch.__version__})
        print(f"{out_dir}: T={a.T}, |logits| {logits.norm().item():.6g}, config {vla_cfg}")

    mod = authors.load_module_file(a.vla_v3)
    torch.manual_seed(a.seed + 1)
    d, T = 32, a.T
    layer = mod.VLAv3(d)  # their defaults: lambda_0 10, stab_eps 1e-4, per_eps 1e-3, period 20; floor 1e-6
    sd = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    x = torch.randn(1, T, d)
    with authors.float64_run(), torch.no_grad():
        y = layer.double()(x.double())
    assert y.dtype == torch.float64
    sd.update({"input.x": x[0], "output.y": y[0]})
    path = os.path.join(a.out, "vlav3_single_head.safetensors")
    export_tinylm.write_safetensors(path, sd, metadata={
        "source": "authors' VLAv3 (src/models/attention/vla_v3.py), float64", "lambda0": layer.lambda_0,
        "stab_eps": layer.stab_eps, "refresh_eps": layer.per_eps, "refresh_period": layer.period, "denom_eps": 1e-6,
        "torch": torch.__version__})
    print(f"{path}: d={d} T={T}, |y| {y.norm().item():.6g}")


if __name__ == "__main__":
    sys.exit(main())

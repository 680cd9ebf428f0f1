#!/usr/bin/env python3
"""Exports a TinyLM trained in PyTorch to a vla model directory (config.json + model.safetensors).

    python3 tools/export/export_tinylm.py STATE_DICT.pt OUT_DIR --n-heads 4 [--lambda0 0.1 ...]

STATE_DICT.pt is `torch.save(model.state_dict(), path)` of the authors' TinyLM (notebooks/07 of
github.com/Vishal-sys-code/variational-linear-attention) or of a model with the same parameter names:
tok.weight, pos.weight, blocks.N.{ln1,ln2,attn.*,ff.0,ff.2}, ln_f, head.weight. The attention kind
is read from the names (attn.Wu: vla, attn.Wbeta: deltanet, neither: linear_attention); d_model,
vocab_size, max_seq_len, n_layers and d_ff from the shapes; n_heads cannot be, so it is required.
The recurrence's constants default to the authors' layers (VLAv3Attn: lambda_0 0.1, stab_eps 1e-4 for
both floors, per_eps 1e-3 every 20 steps; LinearAttn: eps 1e-6). docs/layers.md describes the files.

Tensors are written as float32 (or --dtype bf16 / f16) by a writer of the safetensors format here
(8-byte little-endian header length, JSON header, data), so nothing but torch is needed. A head tied
to the token embedding (same storage) is written once, as tok.weight; vla ties it back.
"""
import argparse
import json
import os
import re
import struct
import sys

DTYPES = {"f32": ("F32", "float32"), "f16": ("F16", "float16"), "bf16": ("BF16", "bfloat16")}


def write_safetensors(path, tensors, dtype="f32", metadata=None):
    """tensors: dict name -> torch.Tensor (any float dtype; converted). Written in sorted name order."""
    import torch

    code, tname = DTYPES[dtype]
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").to(getattr(torch, tname)).contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)  # the reference writer pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def untie(state_dict):
    """Drops a tensor that shares storage with an earlier one (the tied head), keeping the first name."""
    seen, out = {}, {}
    for name in sorted(state_dict, key=lambda n: (n != "tok.weight", n)):
        t = state_dict[name]
        key = (t.data_ptr(), tuple(t.shape), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = name
        out[name] = t
    return out


def infer_config(sd, n_heads, **constants):
    blocks = sorted({int(m.group(1)) for n in sd for m in [re.match(r"blocks\.(\d+)\.", n)] if m})
    if blocks != list(range(len(blocks))):
        raise SystemExit(f"export: blocks {blocks} are not 0..N-1")
    if "blocks.0.attn.Wu.weight" in sd:
        kind = "vla"
    elif "blocks.0.attn.Wbeta.weight" in sd:
        kind = "deltanet"
    else:
        kind = "linear_attention"
    vocab, d_model = sd["tok.weight"].shape
    cfg = {
        "attention": kind,
        "d_model": int(d_model),
        "n_heads": int(n_heads),
        "n_layers": len(blocks),
        "d_ff": int(sd["blocks.0.ff.0.weight"].shape[0]) if blocks else 1,
        "vocab_size": int(vocab),
        "max_seq_len": int(sd["pos.weight"].shape[0]),
        "norm_eps": 1e-5,
        "lambda0": 0.1,
        "stab_eps": 1e-4,
        "refresh_period": 20,
        "refresh_eps": 1e-3,
        "denom_eps": 1e-4 if kind == "vla" else 1e-6,
        "normalize_output": True,
    }
    cfg.update({k: v for k, v in constants.items() if v is not None})
    if d_model % n_heads:
        raise SystemExit(f"export: d_model {d_model} is not a multiple of n_heads {n_heads}")
    return cfg


def export(state_dict, out_dir, config, dtype="f32"):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out_dir, "model.safetensors"), untie(state_dict), dtype,
                      {"format": "pt", "exported_by": "vla tools/export/export_tinylm.py"})


def main():
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("state_dict")
    ap.add_argument("out_dir")
    ap.add_argument("--n-heads", type=int, required=True)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    for k in ("lambda0", "stab_eps", "refresh_eps", "denom_eps", "norm_eps"):
        ap.add_argument("--" + k.replace("_", "-"), type=float)
    ap.add_argument("--refresh-period", type=int)
    a = ap.parse_args()
    sd = torch.load(a.state_dict, map_location="cpu")
    cfg = infer_config(sd, a.n_heads, lambda0=a.lambda0, stab_eps=a.stab_eps, refresh_eps=a.refresh_eps,
                       denom_eps=a.denom_eps, norm_eps=a.norm_eps, refresh_period=a.refresh_period)
    export(sd, a.out_dir, cfg, a.dtype)
    print(f"wrote {a.out_dir}: {cfg}")


if __name__ == "__main__":
    sys.exit(main())

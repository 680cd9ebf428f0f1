"""Multi-query associative recall (MQAR) with trained models, issue 12's experiment: the authors'
setup (their notebook 07) with VLA, linear attention and DeltaNet through vla_torch's operators and
softmax attention through PyTorch's SDPA, so the paper's recall claims can be measured.

    python3 python/experiments/mqar.py [--models vla linear deltanet softmax] [--pairs 4 8 16 24 32 48 64]
                                       [--seeds 0 1 2] [--steps 3000] [--device cuda] [--out mqar.jsonl]

The setup, as issue 12 states it and as their notebook does it (written here from that description):
- Sequences [k1 v1 … kn vn SEP q1 … qn], T = 3n + 1, vocabulary 128, SEP = 127; the n keys are
  distinct tokens of 0..126, values uniform in 0..126, queries drawn from the keys with
  replacement; the loss (cross-entropy) and the accuracy count only the query positions, whose
  target is the queried key's value.
- TinyLM: token + learned position embeddings (d_model 128), 2 pre-norm blocks (LayerNorm →
  attention → residual, LayerNorm → Linear 256 → GELU → Linear → residual), final LayerNorm, the
  head tied to the token embedding; weights N(0, 0.02), biases 0.
- AdamW, lr 3e-4, weight decay 0.01, 300 linear warm-up steps then cosine to 0, gradient clip 1.0,
  batch 64, 3,000 steps; evaluation on 20 held-out batches of 32 (a generator seeded apart from
  training's).
- Attention (4 heads of 32): vla = vla_torch.VLAAttention (their VLAv3Attn), linear =
  vla_torch.LinearAttention (their LinearAttn), deltanet = vla_torch.DeltaNetAttention — the delta
  rule of docs/maths.md §7 with β per head, **not** their notebook's DeltaNetAttn (a gated
  recurrence of another kind) —, softmax = causal SDPA with one qkv projection, as their SoftmaxAttn.

On CUDA tensors the baselines' backward is not built yet (vla_torch raises an error saying so):
run linear and deltanet with --device cpu. Each run appends one JSON line to --out; the summary
prints mean ± sd over seeds per (model, n_pairs).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import vla_torch  # noqa: E402

VOCAB, SEP = 128, 127


def mqar_batch(B, n_pairs, gen, device):
    """x, y [B, 3n + 1]; y = -100 except at the query positions."""
    T = 3 * n_pairs + 1
    keys = torch.argsort(torch.rand(B, VOCAB - 1, generator=gen), dim=1)[:, :n_pairs]
    vals = torch.randint(0, VOCAB - 1, (B, n_pairs), generator=gen)
    pick = torch.randint(0, n_pairs, (B, n_pairs), generator=gen)
    x = torch.full((B, T), SEP, dtype=torch.long)
    y = torch.full((B, T), -100, dtype=torch.long)
    x[:, 0:2 * n_pairs:2], x[:, 1:2 * n_pairs:2] = keys, vals
    x[:, 2 * n_pairs + 1:] = torch.gather(keys, 1, pick)
    y[:, 2 * n_pairs + 1:] = torch.gather(vals, 1, pick)
    return x.to(device), y.to(device)


class SoftmaxAttention(torch.nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.h = n_heads
        self.qkv = torch.nn.Linear(d_model, 3 * d_model)
        self.o = torch.nn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.h, D // self.h).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(o.transpose(1, 2).reshape(B, T, D))


def make_attention(kind, d_model, n_heads):
    if kind == "softmax":
        return SoftmaxAttention(d_model, n_heads)
    layer = {"vla": vla_torch.VLAAttention, "linear": vla_torch.LinearAttention,
             "deltanet": vla_torch.DeltaNetAttention}[kind](d_model, n_heads)
    return _DropState(layer)


class _DropState(torch.nn.Module):
    """vla_torch's layers return (y, state); a training block wants y."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)[0]


class Block(torch.nn.Module):
    def __init__(self, kind, d_model, n_heads, d_ff):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(d_model), torch.nn.LayerNorm(d_model)
        self.attn = make_attention(kind, d_model, n_heads)
        self.ff = torch.nn.Sequential(torch.nn.Linear(d_model, d_ff), torch.nn.GELU(), torch.nn.Linear(d_ff, d_model))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ff(self.ln2(x))


class TinyLM(torch.nn.Module):
    def __init__(self, kind, d_model=128, n_heads=4, n_layers=2, d_ff=256, max_len=4096):
        super().__init__()
        self.tok = torch.nn.Embedding(VOCAB, d_model)
        self.pos = torch.nn.Embedding(max_len, d_model)
        self.blocks = torch.nn.ModuleList([Block(kind, d_model, n_heads, d_ff) for _ in range(n_layers)])
        self.ln_f = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, VOCAB, bias=False)
        self.head.weight = self.tok.weight
        for m in self.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    torch.nn.init.zeros_(m.bias)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


@torch.no_grad()
def evaluate(model, n_pairs, device, batches=20, B=32, seed=10_000):
    model.eval()
    gen = torch.Generator().manual_seed(seed + n_pairs)
    hits = total = 0
    for _ in range(batches):
        x, y = mqar_batch(B, n_pairs, gen, device)
        pred = model(x).argmax(-1)
        m = y != -100
        hits += (pred[m] == y[m]).sum().item()
        total += m.sum().item()
    model.train()
    return hits / total


def train(kind, n_pairs, seed, a):
    torch.manual_seed(seed)
    model = TinyLM(kind).to(a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    warm = min(a.warmup, a.steps)

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(a.steps - warm, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    loss = torch.tensor(float("nan"))
    for step in range(a.steps):
        x, y = mqar_batch(a.batch, n_pairs, gen, a.device)
        loss = F.cross_entropy(model(x).view(-1, VOCAB), y.view(-1), ignore_index=-100)
        if not torch.isfinite(loss):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return {"model": kind, "n_pairs": n_pairs, "seed": seed, "steps": a.steps, "batch": a.batch,
            "device": a.device, "final_loss": loss.item(), "accuracy": evaluate(model, n_pairs, a.device),
            "seconds": round(time.time() - t0, 1)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["vla", "linear", "deltanet", "softmax"])
    p.add_argument("--pairs", nargs="+", type=int, default=[4, 8, 16, 24, 32, 48, 64])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="mqar.jsonl")
    a = p.parse_args()
    rows = []
    for kind in a.models:
        for n in a.pairs:
            for seed in a.seeds:
                r = train(kind, n, seed, a)
                rows.append(r)
                print(json.dumps(r), flush=True)
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print("\nmodel     n_pairs  accuracy (mean ± sd over seeds)")
    for kind in a.models:
        for n in a.pairs:
            acc = [r["accuracy"] for r in rows if r["model"] == kind and r["n_pairs"] == n]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            print(f"{kind:9s} {n:7d}  {statistics.mean(acc):.3f} ± {sd:.3f}  (n = {len(acc)})")


if __name__ == "__main__":
    main()

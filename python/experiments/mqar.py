"""Multi-query associative recall (MQAR) with trained models, issue 12's experiment: the authors'
setup (their notebook 07) with VLA, linear attention and DeltaNet through vla_torch's operators and
softmax attention through PyTorch's SDPA, so the paper's recall claims can be measured.

    python3 python/experiments/mqar.py [--models vla linear deltanet softmax] [--pairs 4 8 16 24 32 48 64]
                                       [--seeds 0 1 2] [--steps 3000] [--device cuda] [--out mqar.jsonl]

The setup, as issue 12 states it and as their notebook does it (written here after reading their
make_mqar_batch and train_model, not copied; their warm-up factor starts at 0, ours at 1/300):
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

On CUDA tensors vla_torch has no backward for the baselines yet, so there (--baselines torch, the
default on CUDA) linear attention and DeltaNet run the same layers through torch_baselines.py's
differentiable chunked forms of the same recurrences, which every run first checks against the
operators (forward and gradients, float64 on the CPU; the errors go into each JSON line); on the CPU
(--baselines op) they run through vla_torch. authors_vla is the authors' own TinyLM with their
VLAv3Attn, executed from their notebook (--authors-notebook, via tools/parity/authors.py).

Long context: --seq-lens T... with one n_pairs trains at T = the given lengths, with
T − 2n − 1 queries (their notebook's make_mqar_batch; their loop used 2,000 steps, 200 warm-up, 15
evaluation batches). Each run appends one JSON line to --out; --worker i/P runs every P-th job
(seeds outermost, so partial sweeps cover every cell once first), --deadline-s stops starting jobs;
--summarize FILE... prints mean ± sd over seeds per (model, n_pairs, T).
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


def seq_len(n_pairs, T=None):
    """The sequence length of a run: T, or by default 3n + 1 (n queries)."""
    return 3 * n_pairs + 1 if T is None else T


def mqar_batch(B, n_pairs, gen, device, T=None):
    """x, y [B, T] (default T = 3n + 1: n queries); y = -100 except at the T − 2n − 1 query positions."""
    T = seq_len(n_pairs, T)
    n_q = T - 2 * n_pairs - 1
    if n_q < 1:
        raise ValueError(f"mqar: T = {T} leaves no query for {n_pairs} pairs")
    keys = torch.argsort(torch.rand(B, VOCAB - 1, generator=gen), dim=1)[:, :n_pairs]
    vals = torch.randint(0, VOCAB - 1, (B, n_pairs), generator=gen)
    pick = torch.randint(0, n_pairs, (B, n_q), generator=gen)
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


def make_attention(kind, d_model, n_heads, baselines="op"):
    if kind == "softmax":
        return SoftmaxAttention(d_model, n_heads)
    if kind == "vla":
        return vla_torch.VLAAttention(d_model, n_heads)
    import torch_baselines
    if kind == "linear":
        op = torch_baselines.linear_attention if baselines == "torch" else None
        return vla_torch.LinearAttention(d_model, n_heads, op=op)
    if kind == "deltanet":
        op = torch_baselines.deltanet if baselines == "torch" else None
        return vla_torch.DeltaNetAttention(d_model, n_heads, op=op)
    raise ValueError(f"mqar: unknown model {kind}")


class Block(torch.nn.Module):
    def __init__(self, kind, d_model, n_heads, d_ff, baselines):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(d_model), torch.nn.LayerNorm(d_model)
        self.attn = make_attention(kind, d_model, n_heads, baselines)
        self.ff = torch.nn.Sequential(torch.nn.Linear(d_model, d_ff), torch.nn.GELU(), torch.nn.Linear(d_ff, d_model))

    def forward(self, x):
        a = self.attn(self.ln1(x))
        x = x + (a[0] if isinstance(a, tuple) else a)  # vla_torch's layers return (y, state)
        return x + self.ff(self.ln2(x))


class TinyLM(torch.nn.Module):
    def __init__(self, kind, d_model=128, n_heads=4, n_layers=2, d_ff=256, max_len=4096, baselines="op"):
        super().__init__()
        self.tok = torch.nn.Embedding(VOCAB, d_model)
        self.pos = torch.nn.Embedding(max_len, d_model)
        self.blocks = torch.nn.ModuleList([Block(kind, d_model, n_heads, d_ff, baselines) for _ in range(n_layers)])
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


class _AuthorsLM(torch.nn.Module):
    """The authors' TinyLM (their ModelConfig defaults: d_model 128, 4 heads, 2 layers, FFN 256) with
    attention `attn` ('vla': their VLAv3Attn), run from their notebook; their forward returns (logits, state)."""

    def __init__(self, notebook, attn, max_len):
        super().__init__()
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "parity")
        sys.path.insert(0, root)
        import authors
        ns = authors.load_notebook(notebook)
        self.lm = ns.TinyLM(ns.ModelConfig(max_seq_len=max(max_len, 4096)), attn)

    def forward(self, idx):
        return self.lm(idx)[0]


def build_model(kind, a, T):
    if kind == "authors_vla":
        if not a.authors_notebook:
            raise ValueError("mqar: authors_vla needs --authors-notebook (their notebooks/07-vlav3-benchmark-fixed.ipynb)")
        return _AuthorsLM(a.authors_notebook, "vla", T)
    return TinyLM(kind, max_len=max(4096, T), baselines=a.baselines)


@torch.no_grad()
def evaluate(model, n_pairs, device, batches=20, B=32, seed=10_000, T=None):
    model.eval()
    gen = torch.Generator().manual_seed(seed + n_pairs + (0 if T is None else 7919 * T))
    hits = total = 0
    for _ in range(batches):
        x, y = mqar_batch(B, n_pairs, gen, device, T)
        pred = model(x).argmax(-1)
        m = y != -100
        hits += (pred[m] == y[m]).sum().item()
        total += m.sum().item()
    model.train()
    return hits / total


def train(kind, n_pairs, seed, a, T=None):
    torch.manual_seed(seed)
    T_run = seq_len(n_pairs, T)
    model = build_model(kind, a, T_run).to(a.device)
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
    trace = []  # (step, loss) every 300 steps: the authors_vla cross-check compares curves, not only ends
    t_warm = None
    for step in range(a.steps):
        if step == 2:  # steps 0-1 carry one-time costs (allocator, cuBLAS/cuDNN set-up)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t_warm = time.time()
        x, y = mqar_batch(a.batch, n_pairs, gen, a.device, T)
        loss = F.cross_entropy(model(x).view(-1, VOCAB), y.view(-1), ignore_index=-100)
        if step % 300 == 0:
            trace.append([step, round(loss.item(), 4)])
        if not torch.isfinite(loss):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    done = step + 1 if torch.isfinite(loss) else step
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    secs = time.time() - t0
    warm_ms = round(1e3 * (time.time() - t_warm) / (done - 2), 2) if t_warm is not None and done > 2 else None
    impl = {"vla": "vla_torch", "softmax": "sdpa", "authors_vla": "authors"}.get(
        kind, "torch_baselines" if a.baselines == "torch" else "vla_torch")
    if a.save_dir and kind != "authors_vla" and seed in a.save_seeds:
        os.makedirs(a.save_dir, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(a.save_dir, f"{kind}_n{n_pairs}_T{T_run}_s{seed}.pt"))
    return {"model": kind, "impl": impl, "n_pairs": n_pairs, "T": T_run, "seed": seed, "steps": a.steps,
            "steps_done": done, "warmup": a.warmup, "batch": a.batch, "device": a.device,
            "final_loss": loss.item(), "accuracy": evaluate(model, n_pairs, a.device, a.eval_batches, T=T),
            "eval_batches": a.eval_batches, "seconds": round(secs, 1), "ms_per_step": round(1e3 * secs / max(done, 1), 2),
            "ms_per_step_warm": warm_ms,
            "loss_trace": trace}


def summarize(rows):
    print("model        impl             n_pairs      T  accuracy (mean ± sd over seeds)  seeds")
    keys = sorted({(r["model"], r["impl"], r["n_pairs"], r["T"]) for r in rows}, key=lambda k: (k[0], k[2], k[3]))
    for kind, impl, n, T in keys:
        acc = [r["accuracy"] for r in rows if (r["model"], r["impl"], r["n_pairs"], r["T"]) == (kind, impl, n, T)]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"{kind:12s} {impl:16s} {n:7d} {T:6d}  {statistics.mean(acc):.3f} ± {sd:.3f}"
              f"{'':22s}{len(acc)}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["vla", "linear", "deltanet", "softmax"])
    p.add_argument("--pairs", nargs="+", type=int, default=[4, 8, 16, 24, 32, 48, 64])
    p.add_argument("--seq-lens", nargs="+", type=int, default=None, help="long context: these T (default 3n + 1)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--baselines", choices=["op", "torch"], default=None,
                   help="linear/deltanet through vla_torch (op) or torch_baselines (torch); default: op on CPU, torch on CUDA")
    p.add_argument("--authors-notebook", default=os.environ.get("VLA_AUTHORS_NOTEBOOK"))
    p.add_argument("--worker", default="0/1", help="i/P: run every P-th job starting at i")
    p.add_argument("--deadline-s", type=float, default=None, help="start no job after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default="mqar.jsonl")
    p.add_argument("--save-dir", default=None, help="torch.save each trained model's state_dict here "
                   "(names as tools/export/export_tinylm.py reads them)")
    p.add_argument("--save-seeds", nargs="+", type=int, default=[0], help="the seeds whose models --save-dir keeps")
    p.add_argument("--summarize", nargs="+", default=None, help="print the table of these JSON-lines files and exit")
    a = p.parse_args()
    if a.summarize:
        rows = [json.loads(l) for f in a.summarize for l in open(f) if l.strip()]
        summarize(rows)
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.baselines is None:
        a.baselines = "torch" if a.device.startswith("cuda") else "op"
    t_start = time.time()
    check = None
    if a.baselines == "torch" and any(m in ("linear", "deltanet") for m in a.models):
        import torch_baselines
        check = torch_baselines.check_against_operator()
        print("torch_baselines against vla_torch (float64, CPU, max rel error of o and gradients):", check, flush=True)
        if max(check.values()) > 1e-10:
            raise SystemExit("mqar: torch_baselines disagree with the operators; not training on them")
    lens = a.seq_lens or [None]
    jobs = [(seed, kind, n, T) for seed in a.seeds for kind in a.models for n in a.pairs for T in lens
            if T is None or T >= 2 * n + 2]
    wi, wp = (int(x) for x in a.worker.split("/"))
    rows = []
    for seed, kind, n, T in jobs[wi::wp]:
        if a.deadline_s is not None and time.time() - t_start > a.deadline_s:
            print(f"deadline: not starting {kind} n={n} T={T} seed={seed}", flush=True)
            continue
        r = train(kind, n, seed, a, T)
        if check is not None and kind in check:
            r["check_rel_err"] = check[kind]
        rows.append(r)
        print(json.dumps(r), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(r) + "\n")
    if rows:
        summarize(rows)


if __name__ == "__main__":
    main()

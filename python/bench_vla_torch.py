"""Times vla_torch's operator (forward + backward) beside a per-token PyTorch loop of docs/maths.md
§2 (tests/test_vla_torch.py's `reference`, under autograd), same process, same inputs: what a
PyTorch user of VLA without a fused op pays. (The authors' own module is a per-token loop of the
same kind; it is timed on the device machine, bench/gpu/RESULTS.md.)

    python3 python/bench_vla_torch.py [--T 256] [--H 4] [--d 32] [--dtype float32]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))
import vla_torch  # noqa: E402
from test_vla_torch import reference  # noqa: E402


def median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--T", type=int, default=256)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    dt = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(0)
    shape = (a.B, a.T, a.H, a.d)
    q = (torch.nn.functional.elu(torch.randn(shape, generator=g)) + 1).to(dt).requires_grad_()
    k = (torch.nn.functional.elu(torch.randn(shape, generator=g)) + 1).to(dt).requires_grad_()
    v = torch.randn(shape, generator=g).to(dt).requires_grad_()
    u = torch.randn(shape, generator=g).to(dt).requires_grad_()
    w = torch.randn(shape, generator=g).to(dt)

    def ours():
        o, _ = vla_torch.vla(q, k, v, u)
        (o * w).sum().backward()

    def loop():
        o, _, _, _ = reference(q, k, v, u)
        (o * w).sum().backward()

    ours()  # warm-up (and the extension's first load)
    t_ours = median_time(ours, a.reps)
    t_loop = median_time(loop, max(1, a.reps // 2))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={a.B} T={a.T} H={a.H} d={a.d} {a.dtype}")
    print(f"vla_torch forward+backward: {t_ours * 1e3:.2f} ms")
    print(f"per-token PyTorch loop (autograd): {t_loop * 1e3:.1f} ms")
    print(f"ratio: {t_loop / t_ours:.0f}x")


if __name__ == "__main__":
    main()

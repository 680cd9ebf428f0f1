#!/usr/bin/env python3
"""Turns vla_bench_cpu's JSON (--benchmark_format=json) into the markdown table of bench/RESULTS.md.

Usage: vla_bench_cpu --benchmark_format=json --benchmark_out=cpu.json ...; python3 bench/cpu_table.py cpu.json
"""
import json
import re
import sys


def main(path):
    data = json.load(open(path))
    rows = {}
    gemm = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b["name"]
        if name.startswith("BM_EigenGemm"):
            gemm[name.split("/")[1]] = b["GFLOP/s"]
            continue
        m = re.match(r"BM_Forward<vla::op::(\w+)>/dk:(\d+)/BH:(\d+)/T:(\d+)/threads:(\d+)(?:/path:(\d+))?", name)
        if not m or (m.group(6) or "0") != "0":  # this table is the recurrent path's (path:0)
            continue
        op, dk, bh, t, th = m.group(1), *map(int, m.groups()[1:5])
        rows.setdefault((dk, bh, t, th), {})[op] = b
    print("Eigen float GEMM, one thread: " + ", ".join(f"n={n}: {g:.1f} GFLOP/s" for n, g in sorted(gemm.items())))
    print()
    print("| dk | B·H | T | threads | VLA tokens/s | VLA GFLOP/s | VLA / GEMM peak | DeltaNet tokens/s | linear attn tokens/s | VLA / DeltaNet time |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(rows):
        r = rows[key]
        if "Vla" not in r:
            continue
        v = r["Vla"]
        d = r.get("DeltaNet")
        la = r.get("LinearAttention")
        tok = lambda b: f"{b['items_per_second'] / 1e6:.3f} M" if b else "–"
        ratio = f"{d['items_per_second'] / v['items_per_second']:.2f}×" if d else "–"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {tok(v)} | {v['GFLOP/s']:.1f} | "
              f"{100 * v['frac_gemm_peak']:.0f} % | {tok(d)} | {tok(la)} | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1])

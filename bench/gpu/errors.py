#!/usr/bin/env python3
"""Summarises the GPU tests' printed errors: the worst relative RMS per (op, token type)."""
import re
import sys

pat = re.compile(r"(vla|linear_attention|deltanet)\s+(float|half|bf16)\s+(.*?)\s+o (\S+)\s+S (\S+)\s+A (\S+)\s+z (\S+)")
worst = {}
n = 0
for path in sys.argv[1:]:
    for line in open(path, errors="replace"):
        m = pat.search(line)
        if not m:
            continue
        n += 1
        op, ty, label = m.group(1), m.group(2), m.group(3)
        errs = [float(m.group(i)) for i in range(4, 8)]
        w = worst.setdefault((op, ty), [0.0] * 4 + [""] * 4)
        for i in range(4):
            if errs[i] >= w[i]:
                w[i], w[4 + i] = errs[i], label
print(f"   {n} compared runs; worst relative RMS vs float64 per (op, token type):")
print(f"   {'op':<17}{'type':<6}{'o':>10}{'S_final':>10}{'A_final':>10}{'z_final':>10}   (case of the worst o)")
for (op, ty), w in sorted(worst.items()):
    print(f"   {op:<17}{ty:<6}{w[0]:>10.2e}{w[1]:>10.2e}{w[2]:>10.2e}{w[3]:>10.2e}   ({w[4]})")

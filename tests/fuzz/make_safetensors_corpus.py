#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors (tests/fuzz/corpus/safetensors/): small valid files laid
out as the reference writer does (header padded with spaces to 8 bytes) and a few broken ones, each
one mistake away from valid, so the fuzzer starts next to the checks. Usage: make_safetensors_corpus.py"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")


def raw(header: str, data: bytes = b"", n=None) -> bytes:
    h = header.encode()
    return struct.pack("<Q", len(h) if n is None else n) + h + data


def file(entries, metadata=None) -> bytes:
    """entries: (name, dtype, shape, data bytes), laid out one after another."""
    h, data = {}, b""
    if metadata is not None:
        h["__metadata__"] = metadata
    for name, dtype, shape, b in entries:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    text = json.dumps(h, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    return raw(text, data)


f32 = struct.pack("<4f", 1.0, -2.5, float("inf"), float("nan"))
f16 = struct.pack("<4H", 0x3C00, 0x0001, 0x7BFF, 0x7E00)
bf16 = struct.pack("<2H", 0x3F80, 0x7F80)
seeds = {
    "valid_f32": file([("w", "F32", [2, 2], f32)]),
    "valid_mixed": file([("a", "F16", [4], f16), ("b", "BF16", [2], bf16), ("c", "F32", [4], f32)],
                        {"format": "pt"}),
    "valid_zero_elements": file([("e", "F32", [0, 3], b""), ("s", "BF16", [], bf16[:2])]),
    "valid_empty": raw("{}      "),
    "bad_dtype": file([("w", "I32", [4], f32)]),
    "bad_count": raw('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}', f32),
    "bad_overlap": raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                       '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', f32[:12]),
    "bad_hole": raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                    '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', f32[:12]),
    "bad_truncated": file([("w", "F32", [2, 2], f32)])[:-3],
    "bad_json": raw('{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]', f32),
    "bad_duplicate": raw('{"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
                         '"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'),
    "bad_header_length": raw("{}", b"", n=1 << 40),
}
os.makedirs(OUT, exist_ok=True)
for name, b in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b)
print(f"{len(seeds)} seeds in {OUT}")

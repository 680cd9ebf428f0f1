"""Loads the authors' PyTorch classes from their repository, where it lies, and runs them in float64.

Their notebooks/07-vlav3-benchmark-fixed.ipynb defines the multi-head layers (VLAv3Attn, LinearAttn,
DeltaNetAttn, SoftmaxAttn), Block, TinyLM and ModelConfig among plotting and training code; only
the class and function definitions (and the ATTN table) of its code cells are executed, from the
notebook file itself. Nothing of theirs is copied into vla.

Their forwards cast to float32 (`.float()`, `dtype=torch.float32`, zeros of the default dtype);
`float64_run()` points those at float64 for the duration of a run, so the recurrence is evaluated in
double and a float32 model widened with `.double()` is computed exactly as written, in double.
"""
import ast
import contextlib
import dataclasses
import json
import math
import types
import typing

import torch
import torch.nn as nn
import torch.nn.functional as F

_fake_torch = types.SimpleNamespace(**{n: getattr(torch, n) for n in dir(torch) if not n.startswith("__")})


def load_notebook(path):
    with open(path) as f:
        nb = json.load(f)
    ns = {"torch": _fake_torch, "nn": nn, "F": F, "math": math, "dataclass": dataclasses.dataclass,
          "field": dataclasses.field, "asdict": dataclasses.asdict, "Optional": typing.Optional,
          "Dict": typing.Dict, "List": typing.List, "Tuple": typing.Tuple, "DEVICE": "cpu"}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        if not any(w in src for w in ("class ModelConfig", "class VLAv3Attn", "class TinyLM")):
            continue
        tree = ast.parse(src)
        keep = [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) or
                (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "ATTN" for t in n.targets))]
        exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), ns)
    for name in ("ModelConfig", "VLAv3Attn", "LinearAttn", "TinyLM", "ATTN"):
        assert name in ns, f"{path}: {name} not found"
    return types.SimpleNamespace(**ns)


def load_module_file(path, name="authors_vla_v3"):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.torch = _fake_torch
    return mod


@contextlib.contextmanager
def float64_run():
    orig_float, orig_default, orig_f32 = torch.Tensor.float, torch.get_default_dtype(), _fake_torch.float32
    torch.Tensor.float = torch.Tensor.double
    _fake_torch.float32 = torch.float64
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.Tensor.float = orig_float
        _fake_torch.float32 = orig_f32
        torch.set_default_dtype(orig_default)

"""Tests of what python/experiments trains on: torch_baselines.py's chunked PyTorch forms of linear
attention and DeltaNet (the MQAR experiment's baselines on CUDA tensors, where vla_torch has no
backward for them yet) against vla_torch's operators, forward and gradients in float64; and the
MQAR data format. Skipped without torch.

    python3 -m pytest python/tests -q        (from the repository root)
"""
import os
import sys

import pytest

torch = pytest.importorskip("torch")
here = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(here, ".."))
sys.path.insert(0, os.path.join(here, "..", "experiments"))
import mqar  # noqa: E402
import torch_baselines  # noqa: E402


@pytest.mark.parametrize("T", [1, 63, 64, 150])
def test_torch_baselines_match_the_operators_in_float64(T):
    err = torch_baselines.check_against_operator(B=2, T=T, H=2, d=8, seed=T)
    assert err["linear"] < 1e-12 and err["deltanet"] < 1e-12, err


def test_mqar_batches_follow_the_authors_format():
    g = torch.Generator().manual_seed(0)
    for n, T in ((8, None), (8, 64), (64, None)):
        x, y = mqar.mqar_batch(16, n, g, "cpu", T)
        T = 3 * n + 1 if T is None else T
        assert x.shape == y.shape == (16, T)
        keys, vals = x[:, 0:2 * n:2], x[:, 1:2 * n:2]
        assert (x[:, 2 * n] == mqar.SEP).all() and (y[:, :2 * n + 1] == -100).all()
        for b in range(16):
            assert len(set(keys[b].tolist())) == n and keys[b].max() < mqar.SEP and vals[b].max() < mqar.SEP
            table = dict(zip(keys[b].tolist(), vals[b].tolist()))
            for t in range(2 * n + 1, T):  # every query is a stored key, its target that key's value
                assert table[x[b, t].item()] == y[b, t].item()

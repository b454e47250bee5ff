"""resolve_input_ids (kernels/gfx906/input_ids.py): the decode graph's input ids, each either the
host's id or a row of the previous step's samples, against the torch form and a plain loop.
Triton interpreter on the CPU, the same on a GPU."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from gfx906_llm.kernels.gfx906.step_io import resolve_input_ids  # noqa: E402

from tests.kernels.test_w4a16 import DEV  # noqa: E402


@pytest.mark.parametrize("n", [1, 5, 37])
def test_resolve_input_ids(n):
    g = torch.Generator().manual_seed(n)
    tok = torch.randint(0, 50000, (n,), generator=g)
    prev = torch.randint(0, 50000, (n + 3,), generator=g)
    prev_rows = torch.randint(-1, n + 3, (n,), generator=g)
    prev_rows[0] = -1  # at least one host id and one gathered row
    prev_rows[-1] = n + 2
    want = torch.tensor([prev[r] if r >= 0 else t for t, r in zip(tok.tolist(), prev_rows.tolist())])
    for use_triton in (True, False):
        got = resolve_input_ids(tok.to(DEV), prev_rows.to(DEV), prev.to(DEV), use_triton=use_triton)
        assert got.dtype == torch.int64 and torch.equal(got.cpu(), want)


@pytest.mark.parametrize("S,V,chunk", [(1, 1000, 256), (3, 4096, 1024), (2, 5000, 4096)])
def test_argmax_rows_triton(S, V, chunk):
    from gfx906_llm.kernels.gfx906.step_io import argmax_rows_triton

    g = torch.Generator().manual_seed(V)
    x = torch.randn(S, V, generator=g)
    x[0, 7] = x[0, V - 3] = x[0].max() + 1  # a tie across chunks: the first index wins
    if S > 1:
        x[1, :] = -float("inf")  # the maximum in the last, partial chunk
        x[1, V - 1] = 0.0
    if S > 2:
        x[2, :] = -float("inf")  # a row of -inf only: index 0, as torch
    for dtype in (torch.float32, torch.float16):
        xd = x.to(DEV, dtype)
        assert torch.equal(argmax_rows_triton(xd, chunk=chunk).cpu(), xd.float().argmax(-1).cpu())

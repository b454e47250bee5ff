"""Adjacent GGUF shards of one type merge into one launch (q+k, gate+up) and compute the same."""

from __future__ import annotations

import torch

from gfx906_llm.quant import gguf_torch as gt
from gfx906_llm.quant.gguf import QT, _Shard, merge_shard_runs
from tests.kernels.test_gguf_kernels import DEV, random_raw


def test_merge_rules():
    a = _Shard(int(QT.Q4_K), 32, 256, 0, 100)
    b = _Shard(int(QT.Q4_K), 16, 256, 100, 50)
    c = _Shard(int(QT.Q6_K), 16, 256, 150, 60)
    d = _Shard(int(QT.Q6_K), 16, 256, 400, 60)  # not contiguous with c
    merged = merge_shard_runs([a, b, c, d])
    assert [(s.qtype, s.n, s.offset, s.nbytes) for s in merged] == [
        (int(QT.Q4_K), 48, 0, 150), (int(QT.Q6_K), 16, 150, 60), (int(QT.Q6_K), 16, 400, 60)]
    assert merge_shard_runs([c]) == [c]


def test_merged_shard_computes_the_stacked_weight():
    """q (Q4_K) + k (Q4_K) + v (Q6_K) as stored: the merged Q4_K shard's fused GEMV equals the two
    tensors' rows stacked (interpreter on the CPU, the GPU kernels elsewhere)."""
    from gfx906_llm.kernels.gfx906.gguf_gemv import gguf_gemv

    k = 256
    parts = [(QT.Q4_K, 32), (QT.Q4_K, 16), (QT.Q6_K, 16)]
    raws = [random_raw(int(qt), n, k) for qt, n in parts]
    flat = torch.cat([r.reshape(-1) for r in raws])
    shards, off = [], 0
    for (qt, n), r in zip(parts, raws):
        shards.append(_Shard(int(qt), n, k, off, r.numel()))
        off += r.numel()
    merged = merge_shard_runs(shards)
    assert len(merged) == 2 and merged[0].n == 48
    x = torch.randn(1, k, device=DEV).half()
    for s, rows in ((merged[0], raws[:2]), (merged[1], raws[2:])):
        raw = flat[s.offset:s.offset + s.nbytes].view(s.n, -1)
        planes = gt.pack_planes(raw, s.qtype, k)
        out = torch.empty(1, s.n, dtype=torch.float16, device=DEV)
        gguf_gemv(x, planes, out)
        ref = x.float() @ torch.cat([gt.dequantize(r, s.qtype) for r in rows]).t()
        torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())

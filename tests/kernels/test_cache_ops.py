"""Triton reshape_and_cache vs the torch reference (interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch

from gfx906_llm.kernels import reference

cache_ops = pytest.importorskip("gfx906_llm.kernels.gfx906.cache_ops")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("T,hkv,d,bs,slot_dtype,src_dtype", [
    (5, 2, 64, 16, torch.int64, torch.float16),
    (33, 3, 80, 32, torch.int32, torch.float16),
    (7, 1, 256, 16, torch.int64, torch.float32),  # cast to the fp16 cache
    (12, 16, 64, 16, torch.int32, torch.float16),  # more heads than one BLOCK_H step
])
def test_matches_reference(T, hkv, d, bs, slot_dtype, src_dtype):
    nb = T // bs + 3
    key = torch.randn(T, hkv, d, dtype=src_dtype, device=DEV)
    value = torch.randn_like(key)
    slots = torch.randperm(nb * bs, device=DEV)[:T].to(slot_dtype)
    slots[torch.rand(T, device=DEV) < 0.3] = -1  # padding tokens are skipped
    caches = [torch.randn(nb, bs, hkv, d, dtype=torch.float16, device=DEV) for _ in range(2)]
    ref = [c.clone() for c in caches]
    reference.reshape_and_cache(key, value, ref[0], ref[1], slots)
    cache_ops.reshape_and_cache(key, value, caches[0], caches[1], slots)
    assert torch.equal(caches[0], ref[0]) and torch.equal(caches[1], ref[1])


def test_strided_key_from_qkv_split():
    """key/value as views into a fused qkv projection (row stride > Hkv * D)."""
    T, hq, hkv, d, bs = 6, 4, 2, 64, 16
    qkv = torch.randn(T, (hq + 2 * hkv) * d, dtype=torch.float16, device=DEV)
    key = qkv[:, hq * d:(hq + hkv) * d].view(T, hkv, d)
    value = qkv[:, (hq + hkv) * d:].view(T, hkv, d)
    slots = torch.tensor([3, 17, -1, 40, 0, 63], device=DEV)
    caches = [torch.zeros(4, bs, hkv, d, dtype=torch.float16, device=DEV) for _ in range(2)]
    ref = [c.clone() for c in caches]
    reference.reshape_and_cache(key, value, ref[0], ref[1], slots)
    cache_ops.reshape_and_cache(key, value, caches[0], caches[1], slots)
    assert torch.equal(caches[0], ref[0]) and torch.equal(caches[1], ref[1])


def test_invalid_shapes():
    key = torch.randn(3, 2, 64, dtype=torch.float16)
    cache = torch.zeros(2, 16, 2, 32, dtype=torch.float16)
    with pytest.raises(ValueError):
        cache_ops.reshape_and_cache(key, key, cache, cache, torch.zeros(3, dtype=torch.int64))

"""Bit layouts of quant/packing.py against plain-numpy unpackers written from each format's
published description, and against the compressed-tensors package's own pack/unpack functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gfx906_llm.quant.packing import (AWQ_ORDER, INTERLEAVE, act_order_perm, dequantize_internal, pack_int32,
                                      pack_internal, unpack_int32, unpack_internal)


def _u32(w: torch.Tensor) -> np.ndarray:
    return w.numpy().view(np.uint32).astype(np.int64)


def np_unpack_gptq_qweight(qweight: torch.Tensor, bits: int) -> np.ndarray:
    """GPTQ: q[k, n] = (qweight[k // pack, n] >> (bits * (k % pack))) & mask."""
    w, pack = _u32(qweight), 32 // bits
    k = np.arange(w.shape[0] * pack)
    return (w[k // pack, :] >> (bits * (k % pack))[:, None]) & (2**bits - 1)


def np_unpack_along_n(qzeros: torch.Tensor, bits: int, order=None) -> np.ndarray:
    """GPTQ qzeros (sequential) / AWQ (field t holds column 8c + order[t]) packed along N."""
    w, pack = _u32(qzeros), 32 // bits
    n = np.arange(w.shape[1] * pack)
    field = n % pack if order is None else np.array([list(order).index(c) for c in range(pack)])[n % pack]
    return (w[:, n // pack] >> (bits * field)[None, :]) & (2**bits - 1)


def np_unpack_internal(qweight: torch.Tensor, bits: int) -> np.ndarray:
    """Internal: row k = b*KB + j*P + p lives in word-row b*P + p at bit field j."""
    w, pack = _u32(qweight), 32 // bits
    kb = pack * INTERLEAVE
    k = np.arange(w.shape[0] * pack)
    b, j, p = k // kb, (k % kb) // INTERLEAVE, k % INTERLEAVE
    return (w[b * INTERLEAVE + p, :] >> (bits * j)[:, None]) & (2**bits - 1)


@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_style_packing_matches_numpy(bits):
    K, N = 64, 48
    q = torch.randint(0, 2**bits, (K, N))
    qw = pack_int32(q, bits, dim=0)
    assert qw.dtype == torch.int32 and qw.shape == (K * bits // 32, N)
    np.testing.assert_array_equal(np_unpack_gptq_qweight(qw, bits), q.numpy())
    qz = pack_int32(q, bits, dim=1)
    np.testing.assert_array_equal(np_unpack_along_n(qz, bits), q.numpy())
    assert torch.equal(unpack_int32(qw, bits, 0), q.to(torch.int32))
    assert torch.equal(unpack_int32(qz, bits, 1), q.to(torch.int32))


def test_awq_order_matches_numpy_and_compressed_tensors_converter():
    K, N = 32, 64
    q = torch.randint(0, 16, (K, N))
    qw = pack_int32(q, 4, dim=1, order=AWQ_ORDER)
    np.testing.assert_array_equal(np_unpack_along_n(qw, 4, AWQ_ORDER), q.numpy())
    assert torch.equal(unpack_int32(qw, 4, 1, order=AWQ_ORDER), q.to(torch.int32))
    # AutoAWQ's own packing loop (WQLinear_GEMM.from_linear), transcribed
    ref = np.zeros((K, N // 8), dtype=np.int64)
    for col in range(N // 8):
        for i in range(8):
            ref[:, col] |= q[:, col * 8 + AWQ_ORDER[i]].numpy().astype(np.int64) << (i * 4)
    np.testing.assert_array_equal(_u32(qw), ref)
    conv = pytest.importorskip("compressed_tensors.entrypoints.convert.converters.autoawq")
    iw, _ = conv.AutoAWQConverter.unpack_awq(qw, None, 4)
    iw, _ = conv.AutoAWQConverter.reverse_awq_order(iw, None, 4)
    assert torch.equal(torch.bitwise_and(iw, 15).to(torch.int64), q)


@pytest.mark.parametrize("bits", [4, 8])
def test_compressed_tensors_pack_to_int32_agrees(bits):
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    N, K = 24, 64
    off = 2 ** (bits - 1)
    q = torch.randint(-off, off, (N, K), dtype=torch.int8)
    ours = pack_int32(q.to(torch.int64) + off, bits, dim=1)  # weight_packed: along K
    assert torch.equal(helpers.pack_to_int32(q, bits), ours)
    assert torch.equal(helpers.unpack_from_int32(ours, bits, torch.Size([N, K])), q)
    zp = torch.randint(-off, off, (N, 4), dtype=torch.int8)  # weight_zero_point: along N
    ours_zp = pack_int32(zp.to(torch.int64) + off, bits, dim=0)
    assert torch.equal(helpers.pack_to_int32(zp, bits, packed_dim=0), ours_zp)
    assert torch.equal(unpack_int32(ours_zp, bits, 0) - off, zp.to(torch.int32))


@pytest.mark.parametrize("bits,group,K", [(4, 32, 160), (4, 128, 384), (4, -1, 72), (8, 64, 192), (8, -1, 96)])
def test_internal_layout(bits, group, K):
    """K = 160, 72, 96 need padding to a whole K block."""
    N = 40
    q = torch.randint(0, 2**bits, (K, N))
    ng = 1 if group == -1 else K // group
    scales = torch.rand(ng, N) + 0.1
    zeros = torch.randint(0, 2**bits, (ng, N))
    pw = pack_internal(q, scales, zeros, bits, group)
    assert pw.qweight.shape[0] * (32 // bits) % ((32 // bits) * INTERLEAVE) == 0
    np.testing.assert_array_equal(np_unpack_internal(pw.qweight, bits)[:K], q.numpy())
    assert bool((unpack_internal(pw)[K:] == 0).all())
    g = K if group == -1 else group
    rows = np.arange(K) // g
    ref = (q.numpy() - zeros.numpy()[rows]) * scales.numpy()[rows]
    np.testing.assert_allclose(dequantize_internal(pw).numpy(), ref.T, rtol=1e-6, atol=1e-6)


def test_act_order_perm_makes_groups_contiguous():
    K, N, g, bits = 128, 16, 32, 4
    g_idx = torch.randperm(K) // g  # every group holds g scattered rows
    q = torch.randint(0, 16, (K, N))
    scales = torch.rand(K // g, N) + 0.1
    perm = act_order_perm(g_idx, g, K)
    assert perm is not None and torch.equal(g_idx[perm.long()], torch.arange(K) // g)
    pw = pack_internal(q, scales, None, bits, g, perm)
    ref = (q.numpy() - 8) * scales.numpy()[g_idx.numpy()]
    np.testing.assert_allclose(dequantize_internal(pw).numpy(), ref.T, rtol=1e-6)
    assert act_order_perm(torch.arange(K) // g, g, K) is None
    with pytest.raises(ValueError, match="exactly"):
        act_order_perm(torch.zeros(K, dtype=torch.int32).index_fill_(0, torch.tensor([0]), 3), g, K)


def test_symmetric_zeros_are_dropped_and_errors():
    q = torch.randint(0, 16, (128, 8))
    pw = pack_internal(q, torch.ones(1, 8), torch.full((1, 8), 8), 4, -1)
    assert pw.zeros is None
    with pytest.raises(ValueError, match="bits"):
        pack_int32(q, 3, dim=0)
    with pytest.raises(ValueError, match="values"):
        pack_int32(q + 16, 4, dim=0)
    with pytest.raises(ValueError, match="group_size"):
        pack_internal(q, torch.ones(128 // 24, 8), None, 4, 24)

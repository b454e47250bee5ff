"""Triton fused small ops vs the torch reference (interpreter on CPU, tiny shapes; fp16 and fp32)."""

from __future__ import annotations

import pytest
import torch

from gfx906_llm.kernels import reference

fused = pytest.importorskip("gfx906_llm.kernels.gfx906.fused_ops")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float16, torch.float32]


def _tol(dtype):
    return {"atol": 2e-3, "rtol": 2e-3} if dtype == torch.float16 else {"atol": 2e-5, "rtol": 2e-5}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,N,offset", [(3, 64, 0.0), (5, 96, 1.0), (1, 576, 0.0)])
def test_rms_norm(dtype, T, N, offset):
    x = torch.randn(T, N, dtype=dtype, device=DEV) * 3
    w = torch.randn(N, dtype=dtype, device=DEV)
    torch.testing.assert_close(fused.rms_norm(x, w, 1e-6, offset), reference.rms_norm(x, w, 1e-6, offset),
                               **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,N,offset", [(4, 128, 0.0), (2, 80, 1.0)])
def test_fused_add_rms_norm(dtype, T, N, offset):
    x = torch.randn(T, N, dtype=dtype, device=DEV)
    res = torch.randn(T, N, dtype=dtype, device=DEV)
    w = torch.rand(N, dtype=torch.float32, device=DEV)  # fp32 weight with a narrower x: cast in the kernel
    x0, r0 = x.clone(), res.clone()
    out, new_res = fused.fused_add_rms_norm(x, res, w, 1e-5, offset)
    ref_out, ref_res = reference.fused_add_rms_norm(x, res, w, 1e-5, offset)
    torch.testing.assert_close(new_res, ref_res, atol=0, rtol=0)  # the sum is rounded exactly like torch's
    torch.testing.assert_close(out, ref_out, **_tol(dtype))
    assert torch.equal(x, x0) and torch.equal(res, r0), "inputs must be left untouched"


def test_rms_norm_on_strided_head_view():
    """q-norm over [T, H, D] heads that live inside a fused qkv row (Qwen3 / Gemma-3)."""
    T, hq, hkv, d = 3, 4, 2, 32
    qkv = torch.randn(T, (hq + 2 * hkv) * d, dtype=torch.float16, device=DEV)
    q = qkv[:, : hq * d].reshape(T, hq, d)  # a view: row stride (hq + 2 hkv) * d
    assert not q.is_contiguous()
    w = torch.randn(d, dtype=torch.float16, device=DEV)
    torch.testing.assert_close(fused.rms_norm(q, w, 1e-6), reference.rms_norm(q, w, 1e-6), **_tol(torch.float16))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["silu_and_mul", "gelu_tanh_and_mul"])
@pytest.mark.parametrize("T,inter", [(3, 64), (2, 200)])
def test_act_and_mul(dtype, name, T, inter):
    x = torch.randn(T, 2 * inter, dtype=dtype, device=DEV) * 4
    torch.testing.assert_close(getattr(fused, name)(x), getattr(reference, name)(x), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["silu_and_mul", "gelu_tanh_and_mul"])
@pytest.mark.parametrize("S,T,inter,bias", [(3, 1, 64, False), (5, 2, 200, True), (1, 3, 40, True)])
def test_act_and_mul_on_splitk_partials(dtype, name, S, T, inter, bias):
    """Split-K partials [S, T, 2I] fp32 (+ bias) summed inside the kernel: the same as the op on the
    summed tensor rounded to the dtype (the reference rounds the same way)."""
    from gfx906_llm.layers.splitk import SplitKPartials

    ws = torch.randn(S, T, 2 * inter, device=DEV) * 2
    b = torch.randn(2 * inter, dtype=dtype, device=DEV) if bias else None
    part = SplitKPartials(ws, b, dtype)
    value = (ws.sum(0) + (b.float() if bias else 0)).to(dtype)
    expect = getattr(reference, name)(value)
    torch.testing.assert_close(getattr(fused, name)(part), expect, **_tol(dtype))
    torch.testing.assert_close(getattr(reference, name)(part), expect, **_tol(dtype))


def test_act_and_mul_rejects_odd_width():
    with pytest.raises(ValueError):
        fused.silu_and_mul(torch.randn(2, 7))


def _cache(max_pos, d):
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    f = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)
    return torch.cat([f.cos(), f.sin()], -1).float().to(DEV)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,hq,hkv,d", [(4, 4, 2, 64), (3, 9, 3, 32), (2, 2, 1, 80)])
def test_rotary_in_place_on_qkv_views(dtype, T, hq, hkv, d):
    cache = _cache(64, d)
    pos = torch.randint(0, 64, (T,), device=DEV)
    qkv = torch.randn(T, (hq + 2 * hkv) * d, dtype=dtype, device=DEV)
    q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)  # [T, H*D] strided views
    v0 = v.clone()
    ref_q, ref_k = reference.rotary_embedding(pos, q.reshape(T, hq, d), k.reshape(T, hkv, d), cache)
    out_q, out_k = fused.rotary_embedding(pos, q, k, cache)
    assert out_q.data_ptr() == q.data_ptr() and out_k.data_ptr() == k.data_ptr()
    torch.testing.assert_close(q.reshape(T, hq, d), ref_q, **_tol(dtype))  # rotated in place
    torch.testing.assert_close(k.reshape(T, hkv, d), ref_k, **_tol(dtype))
    assert torch.equal(v, v0), "v must be untouched"


def test_rotary_3d_int32_positions():
    T, hq, hkv, d = 5, 3, 1, 64
    cache = _cache(32, d)
    pos = torch.randint(0, 32, (T,), device=DEV, dtype=torch.int32)
    q = torch.randn(T, hq, d, dtype=torch.float16, device=DEV)
    k = torch.randn(T, hkv, d, dtype=torch.float16, device=DEV)
    ref_q, ref_k = reference.rotary_embedding(pos.long(), q, k, cache)
    fused.rotary_embedding(pos, q, k, cache)
    torch.testing.assert_close(q, ref_q, **_tol(torch.float16))
    torch.testing.assert_close(k, ref_k, **_tol(torch.float16))


def test_rotary_rejects_mismatched_head_dim():
    with pytest.raises(ValueError):
        fused.rotary_embedding(torch.zeros(2, dtype=torch.long), torch.randn(2, 3, 32), torch.randn(2, 1, 32),
                               _cache(8, 64))


def test_kernel_table_routes_gpus_to_triton_and_cpu_tensors_to_reference(monkeypatch):
    from gfx906_llm import platform as plat
    from gfx906_llm.platform import get_device_op

    monkeypatch.delenv("GFX906_LLM_KERNELS", raising=False)
    gfx906 = plat.Platform("rocm", "gfx906", "gfx906", "cuda", "test", False, False, 64)
    cpu = plat.Platform("cpu", "cpu", "default", "cpu", "test", False, True, 1)
    for op in ("rms_norm", "fused_add_rms_norm", "silu_and_mul", "gelu_tanh_and_mul", "rotary_embedding"):
        assert plat.get_op(op, gfx906) is getattr(fused, op)
        assert plat.get_op(op, cpu) is getattr(reference, op)
        assert get_device_op(op, torch.device("cpu")) is getattr(reference, op)

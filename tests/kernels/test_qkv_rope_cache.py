"""Fused qkv -> (q/k norm) -> rotary -> KV-cache write: Triton kernel vs the torch reference
(interpreter on CPU), the reference on split-K partials vs on the materialised tensor, and the
ValueError cases of both."""

from __future__ import annotations

import math

import pytest
import torch

from gfx906_llm.kernels import reference
from gfx906_llm.layers.splitk import SplitKPartials

fused = pytest.importorskip("gfx906_llm.kernels.gfx906.qkv_rope_cache")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}


def _cos_sin(max_pos: int, d: int, device=DEV) -> torch.Tensor:
    """A real rotary table: ``[max_pos, d]`` fp32 (cos | sin) with base 10000."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    f = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)
    return torch.cat([f.cos(), f.sin()], -1).float().to(device)


def _inputs(T, hq, hkv, d, bs, dtype, S, bias, norm, n_slots, cache_dtype=None, device=DEV):
    n = (hq + 2 * hkv) * d
    if S:
        b = torch.randn(n, dtype=dtype, device=device) if bias else None
        qkv = SplitKPartials(torch.randn(S, T, n, device=device) / math.sqrt(S), b, dtype)
    else:  # a strided view, as a fused projection with padded rows would give
        qkv = torch.randn(T, n + 8, dtype=dtype, device=device)[:, :n]
    nb = max(2, -(-T // bs) + 2)
    positions = torch.randint(0, 4096, (T,), device=device)
    slots = torch.randperm(nb * bs, device=device)[:n_slots]
    slots[torch.rand(n_slots, device=device) < 0.3] = -1
    cache_dtype = cache_dtype or (dtype if dtype != torch.float32 else torch.float16)
    kc = torch.randn(nb, bs, hkv, d, dtype=cache_dtype, device=device)
    vc = torch.randn_like(kc)
    w = [torch.randn(d, dtype=dtype, device=device) if norm else None for _ in range(2)]
    return qkv, positions, _cos_sin(4096, d, device), kc, vc, slots, w


def _check(T, hq, hkv, d, bs, dtype, S=0, bias=False, norm=False, n_slots=None, offset=0.0, use_out=False,
           cache_dtype=None, device=DEV):
    n_slots = T if n_slots is None else n_slots
    qkv, pos, cs, kc, vc, slots, (qw, kw) = _inputs(T, hq, hkv, d, bs, dtype, S, bias, norm, n_slots, cache_dtype,
                                                    device)
    x_before = (qkv.ws if S else qkv).clone()
    rk, rv, k2, v2 = kc.clone(), vc.clone(), kc.clone(), vc.clone()
    kw_args = dict(q_norm_weight=qw, k_norm_weight=kw, norm_eps=1e-5, norm_offset=offset)
    ref_q = reference.qkv_rope_cache(qkv, pos, cs, rk, rv, slots, hq, hkv, d, **kw_args)
    out = torch.empty(T, hq + 1, d, dtype=dtype, device=device)[:, 1:] if use_out else None  # strided rows
    q = fused.qkv_rope_cache(qkv, pos, cs, k2, v2, slots, hq, hkv, d, out=out, **kw_args)
    assert torch.equal(qkv.ws if S else qkv, x_before), "the input was modified"
    assert q.shape == (T, hq, d) and q.dtype == dtype
    assert q.is_contiguous() or use_out
    if use_out:
        assert q.data_ptr() == out.data_ptr()
    tol = TOL[dtype]
    torch.testing.assert_close(q.float(), ref_q.float(), atol=tol, rtol=tol)
    # slots nobody writes (unused, padding, rows past slot_mapping) keep their old values exactly
    written = torch.zeros(kc.shape[0] * bs, dtype=torch.bool, device=device)
    written[slots[slots >= 0].long()] = True
    for got, ref, orig in ((k2, rk, kc), (v2, rv, vc)):
        g, o = got.view(-1, hkv, d), orig.view(-1, hkv, d)
        assert torch.equal(g[~written], o[~written]), "the kernel wrote into slots it does not own"
        ctol = max(tol, TOL[got.dtype])
        torch.testing.assert_close(got.float(), ref.float(), atol=ctol, rtol=ctol)
    assert not torch.equal(rk, kc) or not bool((slots >= 0).any()), "the reference wrote nothing"


@pytest.fixture(params=[(2, 1), (4, 2)], ids=["bh2_p1", "bh4_p2"])
def block_cfg(request, monkeypatch):
    """Run each case with two head-block sizes (tensor path, partials path)."""
    bh, bp = request.param
    cfg = dict(fused.CONFIGS["default"], block_h=bh, block_h_partials=bp)
    monkeypatch.setattr(fused, "_config", lambda: cfg)


@pytest.mark.parametrize("T,hq,hkv,d,bs,dtype,S,bias,norm", [
    (1, 4, 2, 16, 4, torch.float16, 0, False, False),
    (5, 4, 2, 32, 16, torch.bfloat16, 0, False, True),
    (3, 3, 1, 48, 4, torch.float16, 3, True, True),  # odd head count, non-power-of-2 head_dim
    (4, 2, 2, 64, 16, torch.bfloat16, 5, False, False),
    (2, 3, 1, 32, 4, torch.bfloat16, 1, True, True),
    (5, 4, 2, 16, 4, torch.float16, 2, False, True),
])
def test_matches_reference(block_cfg, T, hq, hkv, d, bs, dtype, S, bias, norm):
    _check(T, hq, hkv, d, bs, dtype, S, bias, norm)


@pytest.mark.parametrize("S", [0, 4])
def test_gemma_offset_short_slot_mapping_and_out(S):
    """Gemma's ``1 + weight`` q/k norm; slot_mapping shorter than T; q written into ``out``."""
    _check(4, 4, 1, 32, 4, torch.float16, S, bias=S > 0, norm=True, n_slots=2, offset=1.0, use_out=True)


def test_fp32_qkv_into_fp16_cache():
    _check(3, 2, 1, 16, 4, torch.float32, 0, cache_dtype=torch.float16)


def test_empty_step():
    qkv, pos, cs, kc, vc, slots, _ = _inputs(0, 2, 1, 16, 4, torch.float16, 0, False, False, 0)
    k2 = kc.clone()
    assert fused.qkv_rope_cache(qkv, pos, cs, k2, vc.clone(), slots, 2, 1, 16).shape == (0, 2, 16)
    assert torch.equal(k2, kc)


def test_reference_partials_equal_materialised():
    T, hq, hkv, d = 3, 4, 2, 32
    qkv, pos, cs, kc, vc, slots, (qw, kw) = _inputs(T, hq, hkv, d, 4, torch.bfloat16, 6, True, True, T)
    dense = (qkv.ws.sum(0) + qkv.bias.float()).to(torch.bfloat16)  # SplitKPartials' definition
    caches = [c.clone() for c in (kc, vc, kc, vc)]
    a = reference.qkv_rope_cache(qkv, pos, cs, caches[0], caches[1], slots, hq, hkv, d, q_norm_weight=qw,
                                 k_norm_weight=kw)
    b = reference.qkv_rope_cache(dense, pos, cs, caches[2], caches[3], slots, hq, hkv, d, q_norm_weight=qw,
                                 k_norm_weight=kw)
    assert torch.equal(a, b) and torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])


def test_reference_semantics_at_position_zero():
    """Position 0 rotates by nothing: q is qkv's q part, the cache holds k and v as they came."""
    T, hq, hkv, d = 2, 2, 1, 16
    qkv = torch.randn(T, (hq + 2 * hkv) * d, dtype=torch.float16, device=DEV)
    kc = torch.zeros(2, 4, hkv, d, dtype=torch.float16, device=DEV)
    vc = torch.zeros_like(kc)
    slots = torch.tensor([5, 2], device=DEV)
    pos = torch.zeros(T, dtype=torch.int32, device=DEV)
    for fn in (reference.qkv_rope_cache, fused.qkv_rope_cache):
        kc.zero_(), vc.zero_()
        q = fn(qkv, pos, _cos_sin(8, d), kc, vc, slots, hq, hkv, d)
        assert torch.equal(q, qkv[:, :hq * d].view(T, hq, d))
        assert torch.equal(kc.view(-1, hkv * d)[slots], qkv[:, hq * d:(hq + hkv) * d])
        assert torch.equal(vc.view(-1, hkv * d)[slots], qkv[:, (hq + hkv) * d:])
        assert int(kc.view(-1, hkv * d).abs().sum(1).ne(0).sum()) == T


def _bad_cases():
    T, hq, hkv, d = 2, 4, 2, 16
    n = (hq + 2 * hkv) * d
    good = dict(qkv=torch.randn(T, n, dtype=torch.float16), positions=torch.zeros(T, dtype=torch.int64),
                cos_sin_cache=_cos_sin(8, d, "cpu"), k_cache=torch.zeros(2, 4, hkv, d, dtype=torch.float16),
                v_cache=torch.zeros(2, 4, hkv, d, dtype=torch.float16), slot_mapping=torch.arange(T),
                num_heads=hq, num_kv_heads=hkv, head_dim=d)
    return good, [
        dict(qkv=torch.randn(T, n + 2, dtype=torch.float16)),  # width does not match the heads
        dict(qkv=torch.randn(T, 2 * n, dtype=torch.float16)[:, ::2]),  # strided head dim
        dict(qkv=torch.randn(T, n).to(torch.int32)),  # not a float dtype
        dict(num_heads=3),  # not a multiple of num_kv_heads
        dict(num_kv_heads=0),
        dict(qkv=torch.randn(T, (hq + 2 * hkv) * 15, dtype=torch.float16), head_dim=15,
             k_cache=torch.zeros(2, 4, hkv, 15, dtype=torch.float16),
             v_cache=torch.zeros(2, 4, hkv, 15, dtype=torch.float16)),  # odd head_dim
        dict(qkv=torch.randn(T, (hq + 2 * hkv) * 258, dtype=torch.float16), head_dim=258),  # D > 256
        dict(positions=torch.zeros(T + 1, dtype=torch.int64)),
        dict(positions=torch.zeros(T)),  # float positions
        dict(cos_sin_cache=_cos_sin(8, 2 * d, "cpu")),
        dict(k_cache=torch.zeros(2, 4, hkv + 1, d, dtype=torch.float16)),  # caches disagree
        dict(k_cache=torch.zeros(2, 4, hkv, 2 * d, dtype=torch.float16)[..., ::2],
             v_cache=torch.zeros(2, 4, hkv, 2 * d, dtype=torch.float16)[..., ::2]),  # strided cache head dim
        dict(slot_mapping=torch.arange(T + 1)),  # more slots than tokens
        dict(q_norm_weight=torch.ones(d + 1)),
        dict(out=torch.empty(T, hq, d, dtype=torch.float32)),  # wrong dtype
        dict(out=torch.empty(T, hq + 1, d, dtype=torch.float16)),  # wrong shape
        dict(qkv=SplitKPartials(torch.randn(3, T, n + 16), None, torch.float16)),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases()[1])))
def test_value_errors(case):
    good, bad = _bad_cases()
    args = dict(good, **bad[case])
    for fn in (reference.qkv_rope_cache, fused.qkv_rope_cache):
        with pytest.raises(ValueError):
            fn(**args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("T", [1, 8, 64])
@pytest.mark.parametrize("S,bias,norm", [(0, False, False), (22, False, False), (22, True, False), (22, False, True)])
def test_llama3_8b_on_gpu(T, S, bias, norm):
    """Llama-3-8B attention shapes (32/8 heads x 128, block size 16), S=22 split-K partials."""
    _check(T, 32, 8, 128, 16, torch.float16, S, bias, norm, device="cuda")

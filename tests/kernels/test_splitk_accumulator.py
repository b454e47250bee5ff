"""The split-K accumulator (gfx906_llm/layers/splitk.py): the GEMV's ``ATOMIC`` epilogue adds its
fp32 partials into the device's zeroed accumulator; every consumer (the reduce launch, SiLU/GELU-
and-mul, the residual RMSNorm, qkv_rope_cache) returns the same values as on the dense tensor and
leaves the accumulator zeroed. Also the RMSNorm on ordinary split-K partials. Triton interpreter on
the CPU (tiny shapes), real sizes on a GPU."""

from __future__ import annotations

import math

import pytest
import torch

from gfx906_llm.kernels import reference
from gfx906_llm.layers.splitk import SplitKPartials, accumulator_buffer

triton = pytest.importorskip("triton")
from gfx906_llm.kernels.gfx906 import fused_ops, qkv_rope_cache, w4a16_gemv  # noqa: E402

from tests.kernels.test_w4a16 import DEV, make_weight, run  # noqa: E402

TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}


def _acc_clean(device=DEV) -> bool:
    return not bool(accumulator_buffer(torch.device(device), 1 << 12).any())


def _accumulated(value: torch.Tensor, bias, dtype) -> SplitKPartials:
    """``value [M, N]`` fp32 added into the zeroed accumulator in 3 parts, as the GEMV's programs do."""
    M, N = value.shape
    acc = accumulator_buffer(value.device, M * N).view(1, M, N)
    assert not bool(acc.any())
    for part in (0.5 * value, 0.25 * value, 0.25 * value):
        acc[0] += part
    return SplitKPartials(acc, bias, dtype, accumulator=True)


@pytest.mark.parametrize("M,ov", [(1, dict(HALF2=True)), (1, dict(HALF2=False)), (5, dict(USE_DOT=True))])
def test_gemv_atomic_epilogue(M, ov):
    """ATOMIC: summed output matches the oracle (bias included) and leaves the accumulator zero;
    deferred, the value is ``ws[0] + bias`` in one partial, and the reduce launch zeroes it."""
    t, gs, w = make_weight(512, 48, 4, 32, True, False)
    bias = torch.randn(48, device=DEV).half()
    x = torch.randn(M, 512, device=DEV).half()
    ref = x.float() @ w.t() + bias.float()
    o = dict(ov, ATOMIC=True, programs_per_cu=64, BLOCK_N=16)
    assert w4a16_gemv.gemv_launch_params(M, 48, 4, 4, override=o)["SPLIT_K"] == 4
    y = run(x, t, 4, gs, bias, force="gemv", override=o)
    tol = 2e-3 * ref.abs().max().item()
    torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=tol)
    assert _acc_clean()
    part = run(x, t, 4, gs, bias, force="gemv", override=o, defer_reduce=True)
    assert isinstance(part, SplitKPartials) and part.accumulator and part.num_splits == 1
    torch.testing.assert_close(part.ws[0] + bias.float(), ref, rtol=2e-3, atol=tol)
    torch.testing.assert_close(part.materialize().float(), ref, rtol=2e-3, atol=tol)
    assert _acc_clean()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("form", ["acc", "s3", "s8"])
def test_rms_norm_on_partials(dtype, residual, form):
    """RMSNorm (with and without the residual add) of split-K partials: the accumulator (zeroed
    after), 3 partials with a bias (left untouched), 8 partials (more than MAX_NORM_SPLITS: summed
    by the reduce launch first) -- all equal to the reference on the dense value."""
    M, N = 3, 96
    bias = torch.randn(N, device=DEV).to(dtype) if form != "acc" else None
    value = torch.randn(M, N, device=DEV) * 2
    if form == "acc":
        x = _accumulated(value, bias, dtype)
    else:
        S = 3 if form == "s3" else 8
        x = SplitKPartials(torch.randn(S, M, N, device=DEV) / math.sqrt(S), bias, dtype)
        value = x.ws.sum(0)
    ws_before = x.ws.clone()
    dense = (value + (bias.float() if bias is not None else 0)).to(dtype)
    w = torch.randn(N, device=DEV).to(dtype)
    r = torch.randn(M, N, device=DEV).to(dtype) if residual else None
    if residual:
        got, got_r = fused_ops.fused_add_rms_norm(x, r, w, 1e-6)
        ref, ref_r = reference.fused_add_rms_norm(dense, r, w, 1e-6)
        torch.testing.assert_close(got_r, ref_r, atol=TOL[dtype], rtol=TOL[dtype])
    else:
        got, ref = fused_ops.rms_norm(x, w, 1e-6, 1.0), reference.rms_norm(dense, w, 1e-6, 1.0)
    torch.testing.assert_close(got, ref, atol=TOL[dtype], rtol=TOL[dtype])
    if form == "acc":
        assert _acc_clean()
    else:
        assert torch.equal(x.ws, ws_before)


@pytest.mark.parametrize("name", ["silu", "gelu_tanh"])
def test_act_and_mul_on_accumulator(name):
    M, inter = 2, 40
    value = torch.randn(M, 2 * inter, device=DEV)
    bias = torch.randn(2 * inter, device=DEV).half()
    x = _accumulated(value, bias, torch.float16)
    dense = (value + bias.float()).half()
    got = fused_ops.silu_and_mul(x) if name == "silu" else fused_ops.gelu_tanh_and_mul(x)
    ref = reference.silu_and_mul(dense) if name == "silu" else reference.gelu_tanh_and_mul(dense)
    torch.testing.assert_close(got, ref, atol=2e-3, rtol=2e-3)
    assert _acc_clean()


def test_qkv_rope_cache_on_accumulator_zeroes_padding_rows():
    """Rows whose slot is -1 (graph padding) or past slot_mapping write no K/V, yet their k and v
    columns of the accumulator are zeroed too."""
    T, hq, hkv, d, bs = 5, 4, 2, 16, 4
    n = (hq + 2 * hkv) * d
    value = torch.randn(T, n, device=DEV)
    x = _accumulated(value, None, torch.float16)
    dense = value.half()
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    f = torch.outer(torch.arange(64, dtype=torch.float64), inv)
    cs = torch.cat([f.cos(), f.sin()], -1).float().to(DEV)
    pos = torch.randint(0, 64, (T,), device=DEV)
    slots = torch.tensor([3, -1, 7, 0], device=DEV)  # row 4: past slot_mapping
    kc = torch.randn(4, bs, hkv, d, device=DEV).half()
    vc = torch.randn_like(kc)
    rk, rv = kc.clone(), vc.clone()
    ref_q = reference.qkv_rope_cache(dense, pos, cs, rk, rv, slots, hq, hkv, d)
    q = qkv_rope_cache.qkv_rope_cache(x, pos, cs, kc, vc, slots, hq, hkv, d)
    torch.testing.assert_close(q, ref_q, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(kc, rk, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(vc, rv, atol=2e-3, rtol=2e-3)
    assert _acc_clean()


def test_reference_consumers_zero_the_accumulator():
    """The torch paths (CPU) read an accumulator through ``materialize`` and zero it as well."""
    value = torch.randn(2, 32)
    x = _accumulated(value, None, torch.float32)
    y, _ = reference.fused_add_rms_norm(x, torch.zeros(2, 32), torch.ones(32), 1e-6)
    torch.testing.assert_close(y, reference.rms_norm(value, torch.ones(32), 1e-6))
    assert _acc_clean("cpu")


def test_accumulator_buffer_grows_zeroed():
    dev = torch.device(DEV)
    a = accumulator_buffer(dev, 16)
    big = accumulator_buffer(dev, a.untyped_storage().nbytes() // 4 + 1)
    assert big.numel() > a.untyped_storage().nbytes() // 4 and not bool(big.any())
    with pytest.raises(ValueError, match="one partial"):
        SplitKPartials(torch.zeros(2, 1, 4, device=dev), None, torch.float16, accumulator=True)


def test_pdl_only_on_hopper_cuda_unless_disabled(monkeypatch):
    """PDL: never on the CPU (interpreter) or with GFX906_LLM_PDL=0; no L2 prefetch by default."""
    from gfx906_llm.kernels.gfx906 import pdl

    monkeypatch.delenv("GFX906_LLM_PDL", raising=False)
    monkeypatch.delenv("GFX906_LLM_PDL_PREFETCH", raising=False)
    pdl._enabled.cache_clear()
    assert not pdl.pdl_enabled(torch.device("cpu")) and pdl.launch_kwargs(False) == {}
    assert pdl.launch_kwargs(True) == {"launch_pdl": True} and pdl.prefetch_blocks() == 0
    if torch.cuda.is_available():
        assert pdl.pdl_enabled(torch.device("cuda", 0)) == (torch.cuda.get_device_capability()[0] >= 9)
    monkeypatch.setenv("GFX906_LLM_PDL", "0")
    pdl._enabled.cache_clear()
    assert not pdl.pdl_enabled(torch.device(DEV))
    pdl._enabled.cache_clear()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs an sm_90+ GPU")
def test_pdl_chain_in_a_graph_matches_plain_launches(monkeypatch):
    """GEMV -> accumulator -> residual RMSNorm, four times, captured in a CUDA graph with PDL
    (pdl.py) and without (off, on, on with the GEMV's L2 prefetch): the same values (the chain
    reads each kernel's output in the next)."""
    from tests.helpers import pdl_graph_outputs

    t, gs, _ = make_weight(4096, 4096, 4, 128, False, False)
    x = torch.randn(1, 4096, device="cuda").half()
    r = torch.randn(1, 4096, device="cuda").half()
    wn = torch.rand(4096, device="cuda").half() + 0.5

    def chain():
        h, res = x, r
        for _ in range(4):
            h, res = fused_ops.fused_add_rms_norm(run(h, t, 4, gs, defer_reduce=True), res, wn, 1e-6)
        return h

    got = pdl_graph_outputs(monkeypatch, chain, {on + pf: {"GFX906_LLM_PDL": on, "GFX906_LLM_PDL_PREFETCH": pf}
                                                 for on, pf in (("0", "0"), ("1", "0"), ("1", "2"))}, replays=3)
    torch.testing.assert_close(got["10"], got["00"], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got["12"], got["00"], atol=2e-2, rtol=2e-2)
    assert _acc_clean("cuda")


def test_reset_after_a_failed_step():
    """An accumulator output nobody consumed (a step that raised in between) is zeroed by
    ``reset_accumulators``, which ``LLMEngine.recover_from_failed_step`` calls."""
    from gfx906_llm.layers.splitk import reset_accumulators

    _accumulated(torch.randn(2, 16, device=DEV), None, torch.float16)  # produced, never read
    assert not _acc_clean()
    reset_accumulators()
    assert _acc_clean()

"""Fused GGUF dequantise+GEMV / +GEMM Triton kernels vs fp32 "dequantise then matmul".

The integer-dot GEMV (``gguf_mmvq``, q8_1 activations) is checked tightly against the same
product with the activations quantised by the plain-torch ``quantize_q8_1_reference`` and
loosely against the fp32 product.

CPU CI runs them in the Triton interpreter (tests/conftest.py) at tiny shapes; the ``gpu`` tests
run real sizes. Random GGUF blocks are built with numpy (no ``gguf`` package needed); the
dequantiser they are checked against is itself checked bit-exact against gguf-py in
tests/quant/test_gguf_dequant.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gfx906_llm.quant import gguf_torch as gt
from gfx906_llm.quant.gguf import GGML_QUANT_SIZES, QT

HALF_POS = {QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
            QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
            QT.IQ4_NL: [0], QT.IQ4_XS: [0]}


# CPU: the Triton interpreter (tests/conftest.py); with a GPU the same tests run the real kernels there
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _default_device():
    with torch.device(DEV):
        yield


def random_raw(qt: int, n: int, k: int, device=DEV) -> torch.Tensor:
    rng = np.random.default_rng()
    elems, nbytes = GGML_QUANT_SIZES[qt]
    nb = n * k // elems
    b = rng.integers(0, 256, size=(nb, nbytes), dtype=np.uint8)
    for p in HALF_POS[qt]:
        b[:, p:p + 2] = (rng.standard_normal(nb) * 0.05).astype(np.float16).view(np.uint8).reshape(nb, 2)
    return torch.from_numpy(b).reshape(n, -1).to(device)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max() / ref.double().abs().max())


def _case(qt, n, k, m, dtype, device, bias=True):
    raw = random_raw(qt, n, k, device)
    w = gt.dequantize(raw, qt)  # fp32 [n, k]
    planes = gt.pack_planes(raw, qt, k)
    x = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(n, device=device).to(dtype) if bias else None
    ref = x.double() @ w.double().T + (0 if b is None else b.double())
    return planes, x, b, ref


@pytest.mark.parametrize("qt", gt.BLOCK_TYPES, ids=lambda t: QT(t).name)
def test_gemv_matches_dequant_matmul(qt):
    from gfx906_llm.kernels.gfx906.gguf_gemv import _config, gguf_gemv

    elems, _ = GGML_QUANT_SIZES[qt]
    k = 256 if elems == 256 else 96  # 96: 3 groups, not a power of two -> masked tail
    cfg = dict(_config(), MMVQ=False)  # the float kernel for every type
    for m in (1, 3, 6):  # 3: a 4-row program with one masked row; 6: two launches
        planes, x, b, ref = _case(qt, 5, k, m, torch.float32, DEV)
        # write into a column slice of a wider output, as merged layers do
        wide = torch.full((m, 9), float("nan"))
        gguf_gemv(x, planes, wide[:, 2:7], b, config=cfg)
        assert rel_err(wide[:, 2:7], ref) < 1e-5
        assert wide[:, :2].isnan().all() and wide[:, 7:].isnan().all()


def test_q8_1_quantiser_matches_reference():
    from gfx906_llm.kernels.gfx906.gguf_q8_1 import (dequantize_q8_1_reference, quantize_q8_1,
                                                     quantize_q8_1_reference)

    x = (torch.randn(3, 32 * 37) * torch.rand(3, 1) * 10).half()  # 37 groups: masked tail block
    x[1, 64:96] = 0  # an all-zero group: d = 0, codes 0
    x[2, 5] = 65504.0  # fp16 max: code 127 exactly
    got, ref = quantize_q8_1(x), quantize_q8_1_reference(x)
    for name, a, r in zip(("xq", "meta"), got, ref):
        assert a.dtype == r.dtype and torch.equal(a, r), name
    xq, meta = ref
    d = meta[..., 0].view(torch.float32)  # [3, 37]
    assert int(xq[2, 5]) == 127 and float(d[1, 2]) == 0.0 and not xq[1, 32:48].any()
    codes = torch.stack([xq[:, :32 * 37 // 2], xq[:, 32 * 37 // 2:]], 1).reshape(3, 2, 37, 16).int()
    assert torch.equal(meta[..., 1], codes[:, 0].sum(-1)) and torch.equal(meta[..., 2], codes[:, 1].sum(-1))
    assert torch.equal(meta[..., 3], meta[..., 1] + meta[..., 2])
    # x ~= code * d within half a step per element
    back = dequantize_q8_1_reference(xq, meta).reshape(3, -1, 32)
    assert ((back - x.double().reshape(3, -1, 32)).abs() <= d.double()[..., None] * 0.5001).all()


def mmvq_reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """float64 ``dequant(q8_1(x)) @ w.T + b``: what the integer-dot GEMV computes exactly."""
    from gfx906_llm.kernels.gfx906.gguf_q8_1 import dequantize_q8_1_reference, quantize_q8_1_reference

    xh = dequantize_q8_1_reference(*quantize_q8_1_reference(x))
    return xh @ w.double().T + (0 if b is None else b.double())


@pytest.mark.parametrize("x_bcast", [0, 1], ids=["x_tile", "x_bcast"])
@pytest.mark.parametrize("qt", [QT.Q4_0, QT.Q4_K, QT.Q6_K, QT.Q8_0], ids=lambda t: QT(t).name)
def test_mmvq_matches_q8_1_oracle(qt, x_bcast):
    from gfx906_llm.kernels.gfx906 import gguf_mmvq
    from gfx906_llm.kernels.gfx906.gguf_gemv import _config, gguf_gemv

    elems, _ = GGML_QUANT_SIZES[qt]
    k = 512 if elems == 256 else 96  # 96: 3 groups -> masked tail of the K loop
    cfg = dict(_config(), MMVQ=True)  # through gguf_gemv's dispatch
    mcfg = dict(gguf_mmvq.config(), X_BCAST=x_bcast)
    for m in (1, 3, 8):  # 3: a 4-row program with a clamped row; 8: the 8-row program
        raw = random_raw(qt, 5, k)
        w = gt.dequantize(raw, qt)  # fp32 [5, k]
        planes = gt.pack_planes(raw, qt, k)
        x = (torch.randn(m, k) * torch.rand(m, 1) * 4).half()
        b = torch.randn(5)
        ref32 = x.double() @ w.double().T + b.double()
        ref = mmvq_reference(x, w, b)
        wide = torch.full((m, 9), float("nan"))
        if x_bcast:
            gguf_gemv(x, planes, wide[:, 2:7], b, config=cfg, xq=gguf_mmvq.quantize_q8_1(x) if m == 3 else None)
        else:
            gguf_mmvq.gguf_mmvq(x, planes, wide[:, 2:7], b, config_override=mcfg)
        assert rel_err(wide[:, 2:7], ref) < 1e-5
        assert rel_err(wide[:, 2:7], ref32) < 5e-2
        assert wide[:, :2].isnan().all() and wide[:, 7:].isnan().all()


@pytest.mark.parametrize("decode_3d", [False, True], ids=["2d", "3d"])
@pytest.mark.parametrize("qt", gt.BLOCK_TYPES, ids=lambda t: QT(t).name)
def test_gemm_matches_dequant_matmul(qt, decode_3d):
    from gfx906_llm.kernels.gfx906.gguf_gemm import gguf_gemm, launch_config

    elems, _ = GGML_QUANT_SIZES[qt]
    k = 256 if elems == 256 else 96
    planes, x, b, ref = _case(qt, 40, k, 19, torch.float32, DEV)
    out = torch.empty(19, 40)
    cfg = dict(launch_config(19), DECODE_3D=(int(qt),) if decode_3d else ())
    gguf_gemm(x, planes, out, b, config=cfg)
    assert rel_err(out, ref) < 1e-5


def test_kernels_reject_bad_shapes():
    from gfx906_llm.kernels.gfx906.gguf_gemm import gguf_gemm
    from gfx906_llm.kernels.gfx906.gguf_gemv import gguf_gemv, launch_params

    planes, x, _, _ = _case(QT.Q8_0, 4, 64, 1, torch.float32, DEV)
    with pytest.raises(ValueError, match="gguf_gemv"):
        gguf_gemv(x, planes, torch.empty(1, 5))
    with pytest.raises(ValueError, match="M <= 8"):
        gguf_gemv(torch.randn(9, 64), planes, torch.empty(9, 4))
    with pytest.raises(ValueError, match="gguf_gemm"):
        gguf_gemm(x[:, :32], planes, torch.empty(1, 4))
    # launch heuristic: tile = LANES * POS positions, no tail mask when K/32 has a 2^n factor
    cfg = {"LANES": 256, "POS": 1, "MIN_PROGRAMS": 240}
    p = launch_params(4096, 14336, cfg)
    assert p["BLOCK_N"] * p["BLOCK_G"] == 256 and p["EVEN_G"] and 448 % p["BLOCK_G"] == 0
    p = launch_params(1024, 4096, cfg)
    assert 1024 // p["BLOCK_N"] >= 240 or p["BLOCK_N"] == 1


def test_mmvq_launch_rule():
    from gfx906_llm.kernels.gfx906.gguf_mmvq import CONFIGS, launch

    cuda = CONFIGS["cuda"]
    p = launch(4096, 4096, 1, cuda)  # BLOCK_G 128 = LANES: one row per lane, x tile loads
    assert (p["POS"], p["X_BCAST"], p["BLOCK_G"]) == (1, 0, 128)
    p = launch(4096, 14336, 1, cuda)  # 448 groups: BLOCK_G 64 < LANES -> rows over warps
    assert p["POS"] == cuda["POS_WIDE"] and p["X_BCAST"] == 1 and p["EVEN_G"]
    assert launch(4096, 4096, 8, cuda)["POS"] == cuda["POS_WIDE"]
    for cfg in CONFIGS.values():  # X_BCAST is forced wherever a program's rows span warps
        for k in (4096, 14336, 96):
            p = launch(1024, k, 1, cfg)
            assert p["X_BCAST"] == 1 or p["BLOCK_G"] >= cfg["LANES"]


def test_dequant_matmul_path(monkeypatch):
    from gfx906_llm.kernels.gfx906 import gguf_gemm

    planes, x, b, ref = _case(QT.Q4_K, 300, 256, 3, torch.float32, DEV)
    monkeypatch.setattr(gguf_gemm, "DEQUANT_CHUNK_BYTES", 256 * 256 * 4)  # 2 chunks: 256 + 44 rows
    out = torch.full((3, 300), float("nan"))
    gguf_gemm.gguf_dequant_matmul(x, planes, out, b)
    assert rel_err(out, ref) < 1e-5


def test_isa_specs_are_well_formed():
    from gfx906_llm.kernels.gfx906 import gguf_dequant, gguf_gemm, gguf_gemv, gguf_mmvq, gguf_q8_1

    for mod in (gguf_dequant, gguf_gemv, gguf_gemm, gguf_mmvq, gguf_q8_1):
        specs = mod.isa_specs()
        assert {s["arch"] for s in specs} >= {"gfx906", "gfx90a", "gfx942", "gfx1100", "cuda"}
        for s in specs:
            params = s["fn"].arg_names
            assert set(s["signature"]) == set(params), (s["name"], set(params) ^ set(s["signature"]))
            assert all(s["signature"][c] == "constexpr" for c in s["constexprs"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("qt", gt.BLOCK_TYPES, ids=lambda t: QT(t).name)
def test_gpu_real_sizes(qt):
    from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize
    from gfx906_llm.kernels.gfx906.gguf_gemm import gguf_gemm
    from gfx906_llm.kernels.gfx906.gguf_gemv import gguf_gemv

    n, k = 1024, 4096
    raw = random_raw(qt, n, k, "cuda")
    w = gt.dequantize(raw, qt)
    planes = gt.pack_planes(raw, qt, k)
    assert torch.equal(gguf_dequantize(planes).view(torch.int32), w.view(torch.int32))
    for m, fn in ((1, gguf_gemv), (4, gguf_gemv), (8, gguf_gemv), (16, gguf_gemm), (300, gguf_gemm)):
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float32)
        fn(x, planes, out)
        assert rel_err(out, x.double() @ w.double().T) < 2e-2
        if fn is gguf_gemv and qt in (QT.Q4_0, QT.Q4_K, QT.Q6_K, QT.Q8_0):  # integer-dot path
            assert rel_err(out, mmvq_reference(x, w, None)) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs an sm_90+ GPU")
def test_gpu_pdl_quantiser_chain_in_a_graph(monkeypatch):
    """q8_1 quantiser (PDL) -> integer-dot GEMV -> rescale, each output the next input, four times
    in a CUDA graph: the same values with PDL on and off (the quantiser reads the output of the
    kernel before it, after its wait)."""
    from gfx906_llm.kernels.gfx906 import gguf_gemv
    from tests.helpers import pdl_graph_outputs

    planes = gt.pack_planes(random_raw(QT.Q4_K, 4096, 4096, "cuda"), QT.Q4_K, 4096)
    x = torch.randn(1, 4096, device="cuda").half()

    def chain():
        h = x
        for _ in range(4):
            out = torch.empty(1, 4096, device="cuda", dtype=torch.float16)
            h = gguf_gemv.gguf_gemv(h, planes, out)
            h = h / h.abs().amax()  # keep the values in range
        return h

    got = pdl_graph_outputs(monkeypatch, chain, {on: {"GFX906_LLM_PDL": on} for on in ("0", "1")})
    assert torch.equal(got["1"], got["0"])

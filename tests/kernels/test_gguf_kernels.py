"""Fused GGUF dequantise+GEMV / +GEMM Triton kernels vs fp32 "dequantise then matmul".

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


def random_raw(qt: int, n: int, k: int, device="cpu") -> torch.Tensor:
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
    from gfx906_llm.kernels.gfx906.gguf_gemv import gguf_gemv

    elems, _ = GGML_QUANT_SIZES[qt]
    k = 256 if elems == 256 else 96  # 96: 3 groups, not a power of two -> masked tail
    for m in (1, 3):  # 3: a 4-row program with one masked row
        planes, x, b, ref = _case(qt, 5, k, m, torch.float32, "cpu")
        # write into a column slice of a wider output, as merged layers do
        wide = torch.full((m, 9), float("nan"))
        gguf_gemv(x, planes, wide[:, 2:7], b)
        assert rel_err(wide[:, 2:7], ref) < 1e-5
        assert wide[:, :2].isnan().all() and wide[:, 7:].isnan().all()


@pytest.mark.parametrize("decode_3d", [False, True], ids=["2d", "3d"])
@pytest.mark.parametrize("qt", gt.BLOCK_TYPES, ids=lambda t: QT(t).name)
def test_gemm_matches_dequant_matmul(qt, decode_3d):
    from gfx906_llm.kernels.gfx906.gguf_gemm import gguf_gemm, launch_config

    elems, _ = GGML_QUANT_SIZES[qt]
    k = 256 if elems == 256 else 96
    planes, x, b, ref = _case(qt, 40, k, 19, torch.float32, "cpu")
    out = torch.empty(19, 40)
    cfg = dict(launch_config(19), DECODE_3D=(int(qt),) if decode_3d else ())
    gguf_gemm(x, planes, out, b, config=cfg)
    assert rel_err(out, ref) < 1e-5


def test_kernels_reject_bad_shapes():
    from gfx906_llm.kernels.gfx906.gguf_gemm import gguf_gemm
    from gfx906_llm.kernels.gfx906.gguf_gemv import gguf_gemv, launch_params

    planes, x, _, _ = _case(QT.Q8_0, 4, 64, 1, torch.float32, "cpu")
    with pytest.raises(ValueError, match="gguf_gemv"):
        gguf_gemv(x, planes, torch.empty(1, 5))
    with pytest.raises(ValueError, match="M <= 4"):
        gguf_gemv(torch.randn(5, 64), planes, torch.empty(5, 4))
    with pytest.raises(ValueError, match="gguf_gemm"):
        gguf_gemm(x[:, :32], planes, torch.empty(1, 4))
    # launch heuristic: tile = LANES * POS positions, no tail mask when K/32 has a 2^n factor
    cfg = {"LANES": 256, "POS": 1, "MIN_PROGRAMS": 240}
    p = launch_params(4096, 14336, cfg)
    assert p["BLOCK_N"] * p["BLOCK_G"] == 256 and p["EVEN_G"] and 448 % p["BLOCK_G"] == 0
    p = launch_params(1024, 4096, cfg)
    assert 1024 // p["BLOCK_N"] >= 240 or p["BLOCK_N"] == 1


def test_isa_specs_are_well_formed():
    from gfx906_llm.kernels.gfx906 import gguf_dequant, gguf_gemm, gguf_gemv

    for mod in (gguf_dequant, gguf_gemv, gguf_gemm):
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
    for m, fn in ((1, gguf_gemv), (4, gguf_gemv), (8, gguf_gemm), (300, gguf_gemm)):
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        out = torch.empty(m, n, device="cuda", dtype=torch.float16)
        fn(x, planes, out)
        assert rel_err(out, x.double() @ w.double().T) < 2e-2

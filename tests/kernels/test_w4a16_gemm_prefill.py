"""The fused W4A16 GEMM's SWAP path (kernels/gfx906/w4a16_gemm.py: weight as the dot's A operand,
``KD`` K rows per dot, split-K) against ``x @ dequant(W).T`` in fp32 on fresh random data (Triton
interpreter on the CPU, tiny shapes), and the CUDA dispatch rules (pure Python)."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
from gfx906_llm.kernels.gfx906 import w4a16_gemm as w4  # noqa: E402
from tests.kernels.test_w4a16 import make_weight, run  # noqa: E402  (random packed weights, the launcher call)

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"  # CPU: the interpreter (tests/conftest.py sets TRITON_INTERPRET=1)


def swap(bm, bn, kd, **kw):
    return dict(SWAP=True, BLOCK_M=bm, BLOCK_N=bn, KD=kd, GROUP_M=2, num_warps=4, num_stages=1, **kw)


def check(y, x, w, bias=None, tol=2e-3):
    ref = x.float() @ w.t() + (bias.float() if bias is not None else 0)
    assert y.shape == ref.shape and y.dtype == x.dtype
    # fp16: the dequantised weight and the output are rounded to fp16 (2**-11 relative each)
    torch.testing.assert_close(y.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("bits,group,asym,act_order,K,N,kd", [
    (4, 128, False, False, 256, 64, 128),  # one group per K block, the whole block in one dot
    (4, 32, True, True, 128, 48, 64),      # 4 groups per block, act-order gather, N % BLOCK_N != 0
    (4, 64, True, False, 320, 32, 32),     # K not a multiple of the 128-row block (masked K)
    (4, -1, False, False, 136, 32, 16),    # per channel, one dot per chunk
    (8, 32, False, True, 128, 40, 64),     # 8-bit: KD capped at the 64-row block
    (8, -1, True, False, 96, 64, 128),     # 8-bit, KD 128 asked for: capped to 64
])
def test_swap_gemm_fp16(bits, group, asym, act_order, K, N, kd):
    t, gs, w = make_weight(K, N, bits, group, asym, act_order)
    x = torch.randn(24, K, device=DEV).half()
    bias = torch.randn(N, device=DEV).half()
    check(run(x, t, bits, gs, bias, force="gemm", override=swap(16, 32, kd)), x, w, bias)


@pytest.mark.parametrize("kd", [16, 128])
def test_swap_gemm_fp32_activations(kd):
    """fp32 x: the weight is dequantised in fp32 and the dot runs in IEEE fp32."""
    t, gs, w = make_weight(256, 48, 4, 32, True, False)
    x = torch.randn(20, 256, device=DEV)
    check(run(x, t, 4, gs, force="gemm", override=swap(16, 32, kd)), x, w, tol=1e-5)


def test_swap_split_k_and_deferred_partials():
    """Split-K (fp32 partials + splitk_reduce), with bias, and the partials handed out unsummed."""
    from gfx906_llm.layers.splitk import SplitKPartials

    K, N = 512, 32
    t, gs, w = make_weight(K, N, 4, 128, True, True)
    x = torch.randn(18, K, device=DEV).half()
    bias = torch.randn(N, device=DEV).half()
    ov = swap(16, 16, 128, split_ctas=8, min_split_blocks=1, EVEN_N=True)
    p = w4.gemm_launch_params(18, N, K // 128, 4, override=ov)
    assert p["splits"] == 4 and p["blocks_per_split"] == 1
    check(run(x, t, 4, gs, bias, force="gemm", override=ov), x, w, bias)
    part = run(x, t, 4, gs, bias, force="gemm", override=ov, defer_reduce=True)
    assert isinstance(part, SplitKPartials) and part.num_splits == 4
    check(part.materialize(), x, w, bias)
    # min_split_blocks bounds the split: 4 blocks, at least 2 per split
    assert w4.gemm_launch_params(18, N, 4, 4, override=dict(ov, min_split_blocks=2))["splits"] == 2


def test_cuda_dispatch_rules():
    """CONFIGS["cuda"]: GEMV up to 16 rows, the SWAP GEMM, dequantise + cuBLAS from 512 (K*N <= 2**24)
    or 768 rows; tiles picked by M and the number of output tiles."""
    cp = w4.choose_path
    assert [cp(m, 4096, 14336, "cuda") for m in (16, 17, 64, 767, 768)] == ["gemv", "gemm", "gemm", "gemm", "dequant"]
    assert [cp(m, 4096, 4096, "cuda") for m in (511, 512)] == ["gemm", "dequant"]
    assert cp(4096, 4096, 4096, "gfx906") == "gemm" and cp(16, 4096, 4096, "gfx906") == "gemv"

    def tile(M, N, K=4096):
        p = w4.gemm_launch_params(M, N, K // 128, 132, "cuda")
        assert p["SWAP"] and p["EVEN_N"] and p["splits"] * p["blocks_per_split"] >= K // 128
        return p["BLOCK_M"], p["BLOCK_N"], p["KD"], p["splits"]

    assert tile(64, 4096) == (64, 64, 128, 2)      # 64 tiles: two K splits for 132 SMs
    assert tile(64, 1024) == (64, 64, 128, 8)      # 16 tiles: capped at 32 K blocks / 4
    assert tile(128, 14336)[:3] == (128, 128, 64)  # 112 tiles >= 96
    assert tile(128, 4096)[:3] == (128, 64, 128)
    assert tile(256, 28672)[:3] == (256, 128, 64)  # 224 tiles >= 64
    assert tile(256, 4096, 14336)[:3] == (128, 128, 64)
    assert tile(512, 4096, 14336)[:3] == (256, 128, 64)


@pytest.mark.parametrize("arch", ["gfx906", "gfx90a", "gfx942", "gfx1100"])
def test_amd_gemm_rows_keep_the_chunk_dot_form(arch):
    p = w4.gemm_launch_params(1000, 4096, 32, 60, arch)
    assert not p["SWAP"] and p["splits"] == 1 and p["KD"] == 16 and not p["EVEN_N"]
    specs = [s for s in w4.isa_specs() if s["arch"] == arch]
    assert specs and all(not s["constexprs"]["SWAP"] and not s["constexprs"]["SPLIT_K"] for s in specs)

"""Fused dequantise + GEMV/GEMM (kernels/gfx906/w4a16_gemv.py, w4a16_gemm.py) against ``x @ dequant(W).T`` in fp32 on
fresh random data (Triton interpreter on the CPU, tiny shapes; real sizes on a GPU)."""

from __future__ import annotations

import pytest
import torch

from gfx906_llm.quant.packing import act_order_perm, pack_internal

triton = pytest.importorskip("triton")
from gfx906_llm.kernels.gfx906 import w4a16_gemm as w4  # noqa: E402
from gfx906_llm.kernels.gfx906 import w4a16_gemv  # noqa: E402

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"  # CPU: the interpreter (tests/conftest.py sets TRITON_INTERPRET=1)


def make_weight(K, N, bits, group, asym, act_order, device=DEV):
    """Random packed weight and its fp32 dequantisation ``W [N, K]`` (from the unpacked values)."""
    g = K if group == -1 else group
    q = torch.randint(0, 2**bits, (K, N))
    s = (torch.rand(K // g, N) * 0.02 + 0.001).half()
    z = torch.randint(0, 2**bits, (K // g, N)) if asym else None
    g_idx = torch.randperm(K) // g if act_order else torch.arange(K) // g
    perm = act_order_perm(g_idx, g, K) if act_order else None
    zz = z[g_idx].float() if asym else 2.0 ** (bits - 1)
    w = ((q.float() - zz) * s.float()[g_idx]).t().contiguous()
    pw = pack_internal(q, s, z, bits, group, perm)
    t = {k: (v.to(device) if v is not None else None) for k, v in
         dict(qweight=pw.qweight, scales=pw.scales, zeros=pw.zeros, perm=pw.perm).items()}
    return t, pw.group_size, w.to(device)


def run(x, t, bits, group_size, bias=None, **kw):
    return w4.w4a16_linear(x, t["qweight"], t["scales"], t["zeros"], t["perm"], bias, bits, group_size, x.shape[1], **kw)


CASES = [  # bits, group, asym, act_order, K, N
    (4, 128, False, False, 256, 64), (4, 32, True, True, 128, 48), (4, 64, True, False, 320, 32),
    (8, 32, False, True, 128, 40), (8, -1, True, False, 96, 64), (4, -1, False, False, 136, 32)]


@pytest.mark.parametrize("bits,group,asym,act_order,K,N", CASES)
@pytest.mark.parametrize("M", [1, 5, 16, 24])
def test_gemv(bits, group, asym, act_order, K, N, M):
    t, gs, w = make_weight(K, N, bits, group, asym, act_order)
    x = torch.randn(M, K, device=DEV).half()
    bias = torch.randn(N, device=DEV).half() if M == 5 else None
    y = run(x, t, bits, gs, bias, force="gemv")
    ref = x.float() @ w.t() + (bias.float() if bias is not None else 0)
    assert y.dtype == torch.float16 and y.shape == (M, N)
    # fp16 output rounding (2**-11 relative) of values up to max|ref|
    torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=1e-3 * ref.abs().max().item())


@pytest.mark.parametrize("bits,group,asym,act_order,K,N", [c for c in CASES if c[0] == 4 and c[1] != -1] + [CASES[5]])
def test_gemv_half2_rows(bits, group, asym, act_order, K, N):
    """The HALF2 path (half2 pairs of nibbles i / i + 4, zero folded into the fp16 offset) at 1..4
    rows, against the FMA path at one row; the CPU runs its portable form (the PTX needs a GPU)."""
    t, gs, w = make_weight(K, N, bits, group, asym, act_order)
    for M in (1, 2, 3, 4):
        x = torch.randn(M, K, device=DEV).half()
        p = w4a16_gemv.gemv_launch_params(M, N, t["qweight"].shape[0] // 16, 4, override=dict(HALF2=True))
        assert p["HALF2"] and not p["USE_DOT"] and p["BLOCK_M"] == triton.next_power_of_2(M)
        y = run(x, t, bits, gs, force="gemv", override=dict(HALF2=True, BLOCK_N=32))
        ref = x.float() @ w.t()
        torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())
    y1 = run(x[:1], t, bits, gs, force="gemv", override=dict(HALF2=False))
    torch.testing.assert_close(y1.float(), ref[:1], rtol=2e-3, atol=2e-3 * ref.abs().max().item())


@pytest.mark.parametrize("bits,group,asym,act_order,K,N", [CASES[0], CASES[1], CASES[2]])
def test_gemv_half2_tile_scales(bits, group, asym, act_order, K, N):
    """CUDA's HALF2 settings on the interpreter: scales/zeros loaded as [P, BLOCK_N] tiles (TILE_S),
    no column masks (EVEN_N, N % BLOCK_N == 0), a barrier after the block's loads (PIN), evict_first;
    and EVEN_N asked for where N % BLOCK_N != 0, which must fall back to masked loads."""
    t, gs, w = make_weight(K, N, bits, group, asym, act_order)
    cuda_h2 = dict(w4a16_gemv._CUDA_H2, HALF2=True)
    for M, bn in ((1, 32), (2, 16), (4, 32), (1, 64 if N % 64 else 128)):
        x = torch.randn(M, K, device=DEV).half()
        ref = x.float() @ w.t()
        y = run(x, t, bits, gs, force="gemv", override=dict(cuda_h2, BLOCK_N=bn))
        torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())


@pytest.mark.parametrize("M,ov", [(1, dict(HALF2=True)), (1, dict(HALF2=False)), (3, dict(HALF2=True)),
                                  (5, dict(USE_DOT=True)), (17, dict(USE_DOT=True))])
def test_gemv_split_k_reduce_launch(M, ov):
    """Split-K partials summed by the separate splitk_reduce launch (no ticket epilogue): the same
    result as the oracle, bias included, with 1 to all K blocks per split; and bit-identical to
    itself on a rerun (a fixed summation order)."""
    t, gs, w = make_weight(512, 48, 4, 32, True, False)
    bias = torch.randn(48, device=DEV).half()
    x = torch.randn(M, 512, device=DEV).half()
    ref = x.float() @ w.t() + bias.float()
    for ppc in (1, 4, 64):
        o = dict(ov, REDUCE_LAUNCH=True, ATOMIC=False, programs_per_cu=ppc, BLOCK_N=16)
        p = w4a16_gemv.gemv_launch_params(M, 48, 4, 4, override=o)
        assert p["SPLIT_K"] == (1 if ppc == 1 else 4)
        y = run(x, t, 4, gs, bias, force="gemv", override=o)
        torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())
        assert torch.equal(y, run(x, t, 4, gs, bias, force="gemv", override=o)), p["SPLIT_K"]


@pytest.mark.parametrize("M,ov", [(1, dict(HALF2=True)), (5, dict(USE_DOT=True))])
def test_gemv_defer_reduce_returns_partials(M, ov):
    """``defer_reduce``: where the reduce launch would sum, the GEMV hands back its fp32 partials
    (value = their sum + bias, the same as the summed output); without split-K it returns the tensor."""
    from gfx906_llm.layers.splitk import SplitKPartials

    t, gs, w = make_weight(512, 48, 4, 32, True, False)
    bias = torch.randn(48, device=DEV).half()
    x = torch.randn(M, 512, device=DEV).half()
    o = dict(ov, REDUCE_LAUNCH=True, ATOMIC=False, programs_per_cu=64, BLOCK_N=16)  # ATOMIC: its own test
    part = run(x, t, 4, gs, bias, force="gemv", override=o, defer_reduce=True)
    assert isinstance(part, SplitKPartials) and part.num_splits == 4 and tuple(part.shape) == (M, 48)
    summed = run(x, t, 4, gs, bias, force="gemv", override=o)
    torch.testing.assert_close(part.materialize(), summed, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close((part.ws.sum(0) + bias.float()), x.float() @ w.t() + bias.float(), rtol=2e-3,
                               atol=2e-3 * summed.float().abs().max().item())
    t1, gs1, _ = make_weight(128, 48, 4, 32, True, False)  # one K block: never split
    single = run(x[:, :128].contiguous(), t1, 4, gs1, bias, force="gemv", override=o, defer_reduce=True)
    assert isinstance(single, torch.Tensor)


def test_splitk_reduce_kernel():
    """splitk_reduce sums [S, M, N] partials over S (S not a power of 2, N not a multiple of the tile)."""
    from gfx906_llm.kernels.gfx906.splitk_reduce import splitk_reduce
    for S, M, N in ((3, 2, 40), (1, 1, 7), (5, 1, 33)):
        ws = torch.randn(S, M, N, device=DEV)
        bias = torch.randn(N, device=DEV).half()
        out = torch.empty(M, N, device=DEV, dtype=torch.float16)
        splitk_reduce(ws, bias, out, "default")
        torch.testing.assert_close(out.float(), ws.sum(0) + bias.float(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("M,ov", [(1, dict(HALF2=True)), (1, dict(HALF2=False)), (2, dict(HALF2=True)),
                                  (3, dict(HALF2=False, USE_DOT=True))])
def test_gemv_prefetch(M, ov):
    """The register double buffer: several K blocks per split, a shorter last split (5 = 2 + 2 + 1)."""
    t, gs, w = make_weight(640, 32, 4, 64, True, False)
    ov = dict(ov, PREFETCH=True, programs_per_cu=1, BLOCK_N=32)
    p = w4a16_gemv.gemv_launch_params(M, 32, 5, 4, override=ov)
    assert (p["blocks_per_split"], p["SPLIT_K"], p["PREFETCH"]) == (2, 3, True)
    x = torch.randn(M, 640, device=DEV).half()
    ref = x.float() @ w.t()
    y = run(x, t, 4, gs, force="gemv", override=ov)
    torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())


@pytest.mark.parametrize("bits,group,asym,act_order,K,N", [CASES[0], CASES[1], CASES[2]])
@pytest.mark.parametrize("ppc", [1, 2, 16])
def test_gemv_preload(bits, group, asym, act_order, K, N, ppc):
    """PRELOAD (HALF2, one row): each split's first K block loaded and unpacked before the PDL wait,
    the rest in the loop; splits of several blocks, of one block (the loop does not run) and
    uneven splits; with CUDA's tile settings and the split-K accumulator, and with the ticket."""
    t, gs, w = make_weight(K, N, bits, group, asym, act_order)
    x = torch.randn(1, K, device=DEV).half()
    ref = x.float() @ w.t()
    for extra in ({}, dict(w4a16_gemv._CUDA_H2, ATOMIC=True, BLOCK_N=16)):
        ov = dict(dict(HALF2=True, PRELOAD=True, programs_per_cu=ppc, BLOCK_N=32), **extra)
        p = w4a16_gemv.gemv_launch_params(1, N, t["qweight"].shape[0] // 16, 4, override=ov)
        assert p["PRELOAD"] and p["HALF2"]
        y = run(x, t, bits, gs, force="gemv", override=ov)
        torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())


def test_half2_eligibility():
    """HALF2 only for 4-bit, GROUP a multiple of 32 and fp16 x; otherwise the FMA / dot paths."""
    for arch in ("cuda", "default"):
        p = w4a16_gemv.gemv_launch_params(1, 4096, 32, 132, arch)
        assert p["HALF2"] and p["ASM"] == (arch == "cuda")
        assert not w4a16_gemv.gemv_launch_params(1, 4096, 32, 132, arch, half2_ok=False)["HALF2"]
        assert w4a16_gemv.gemv_launch_params(16, 4096, 32, 132, arch)["USE_DOT"]
    for arch in ("gfx906", "gfx90a", "gfx942", "gfx1100"):  # PTX is CUDA only
        assert not w4a16_gemv.gemv_launch_params(1, 4096, 32, 60, arch)["ASM"]
    t, gs, w = make_weight(128, 32, 4, 16, False, False)  # GROUP 16: FMA path
    x = torch.randn(1, 128, device=DEV).half()
    torch.testing.assert_close(run(x, t, 4, gs, force="gemv").float(), x.float() @ w.t(), rtol=2e-3, atol=2e-3)


def test_gemv_split_k_and_fp32():
    """Many K blocks over few column tiles: split-K with the ticket fix-up, fp32 activations."""
    t, gs, w = make_weight(512, 32, 4, 64, True, False)
    x = torch.randn(1, 512, device=DEV)
    p = w4a16_gemv.gemv_launch_params(1, 32, 512 // 128, 4, "default")
    assert p["SPLIT_K"] > 1
    for _ in range(2):  # the counters must be back at 0 for the second launch
        y = run(x, t, 4, gs, force="gemv")
        torch.testing.assert_close(y, x @ w.t(), rtol=1e-5, atol=1e-4)
    assert int(w4a16_gemv.ticket_counters(x.device).abs().sum()) == 0


@pytest.mark.parametrize("bits,group,asym,act_order,K,N", CASES[:4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_gemm(bits, group, asym, act_order, K, N, dtype):
    t, gs, w = make_weight(K, N, bits, group, asym, act_order)
    M = 40
    x = torch.randn(M, K, device=DEV).to(dtype)
    bias = torch.randn(N, device=DEV).to(dtype)
    y = run(x, t, bits, gs, bias, force="gemm", override=dict(BLOCK_M=32, BLOCK_N=32))
    ref = x.float() @ w.t() + bias.float()
    assert y.dtype == dtype
    # fp16: the dequantised weight and the output are rounded to fp16 (2**-11 relative each)
    tol = 2e-3 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(y.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())


def test_isa_specs_are_well_formed():
    specs = w4a16_gemv.isa_specs() + w4.isa_specs()
    assert {s["arch"] for s in specs} >= {"gfx906", "cuda"}
    for s in specs:
        assert set(s["constexprs"]) <= {k for k, v in s["signature"].items() if v == "constexpr"}
        assert s["fn"] in (w4a16_gemv.w4a16_gemv_kernel, w4.w4a16_gemm_kernel)


@pytest.mark.parametrize("bits,group,asym,act_order,K,N", [CASES[1], CASES[3], CASES[5]])
@pytest.mark.parametrize("expand,magic", [(True, True), (False, True), (True, False)])
def test_expand_and_magic_variants(bits, group, asym, act_order, K, N, expand, magic):
    """The matrix-core variants (one K=KB dot per block, exponent-trick conversions) on every path."""
    t, gs, w = make_weight(K, N, bits, group, asym, act_order)
    for M, kind in ((1, "gemv"), (6, "gemv"), (20, "gemm")):
        x = torch.randn(M, K, device=DEV).half()
        ov = dict(EXPAND=expand, MAGIC=magic) if kind == "gemm" else dict(EXPAND=expand, MAGIC=magic, USE_DOT=M > 1)
        if kind == "gemm":
            ov.update(BLOCK_M=32, BLOCK_N=32)
        y = run(x, t, bits, gs, force=kind, override=ov)
        ref = x.float() @ w.t()
        torch.testing.assert_close(y.float(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_dequantize_then_matmul(dtype):
    t, gs, w = make_weight(160, 48, 4, 32, True, True)
    wt = w4.dequantize(t["qweight"], t["scales"], t["zeros"], t["perm"], 4, gs, 160, dtype)
    torch.testing.assert_close(wt.float(), w.t().to(dtype).float())
    x = torch.randn(24, 160, device=DEV).to(dtype)
    bias = torch.randn(48, device=DEV).to(dtype)
    y = run(x, t, 4, gs, bias, force="dequant")
    ref = x.float() @ w.t() + bias.float()
    tol = 2e-3 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(y.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs a GPU")
@pytest.mark.parametrize("bits,group,asym,act_order", [(4, 128, False, False), (4, 32, True, True),
                                                       (8, -1, False, False), (8, 64, True, False)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_real_sizes_gpu(bits, group, asym, act_order, dtype):
    """Every dispatch path (GEMV, GEMM, dequantise + matmul) at real sizes, repeated launches."""
    K, N = 4096, 1024 + 96
    t, gs, w = make_weight(K, N, bits, group, asym, act_order, "cuda")
    for M in (1, 2, 3, 4, 7, 16, 17, 48, 64, 65, 300):
        x = torch.randn(M, K, device="cuda").to(dtype)
        ref = x.float() @ w.t()
        tol = 2e-3 if dtype == torch.float16 else 1e-2
        forces = (None,) if M <= 16 else (None, "gemv", "gemm", "dequant") if M <= 64 else (None, "gemm", "dequant")
        for force in forces:
            for _ in range(3):
                y = run(x, t, bits, gs, force=force)
                torch.testing.assert_close(y.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())

"""W4A16 fused dequantise+GEMV/GEMM speed on Llama-3-8B linear shapes; prints JSON.

Usage: python benchmarks/bench_w4a16.py [--bits 4] [--group 128] [--sweep] [--out FILE]

Weights are random (speed does not depend on values) in the internal layout, symmetric, group 128.
Timings are CUDA-graph replays of many back-to-back calls, each on a different copy of the weights
(together > 2x the L2 size), so every call streams its weight from HBM, as in decode.

* decode (M = 1..16): effective weight bandwidth = (qweight + scales [+ zeros]) bytes / time, as a
  fraction of the copy bandwidth measured in the same run (``dst.copy_(src)`` of 1 GiB, counting
  read + write bytes), and the speed-up over ``torch.nn.functional.linear`` with an fp16 weight.
* prefill (M = 64..4096): TFLOP/s of the fused GEMM (``force="gemm"``) and of the default
  dispatch vs the fp16 matmul and vs "dequantise to fp16 (``w4a16_gemm.dequantize``, a
  bandwidth-bound Triton kernel) then torch matmul" (``force="dequant"``).
``--sweep`` also times alternative GEMV/GEMM launch settings (for choosing CONFIGS["cuda"]).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import triton

from gfx906_llm.kernels.gfx906 import w4a16_gemm as k

SHAPES = [(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096), (4096, 28672)]  # (K in, N out)
DECODE_M = [1, 2, 4, 8, 16]
PREFILL_M = [64, 128, 256, 512, 1024, 2048, 4096]


def graph_time(fns: list, reps: int = 5) -> float:
    """Seconds per call of the callables in ``fns`` (each captured once, replayed ``reps`` times)."""
    for f in fns:
        f()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / (reps * len(fns))


def copy_bandwidth() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = graph_time([lambda: dst.copy_(src)] * 4)
    return 2 * src.numel() / t


def make_weights(K: int, N: int, bits: int, group: int, copies: int):
    pack = 32 // bits
    out = []
    for _ in range(copies):
        qw = torch.randint(-2**31, 2**31 - 1, (K // pack, N), dtype=torch.int32, device="cuda")
        s = (torch.rand(K // group, N, device="cuda") * 0.01).half()
        out.append((qw, s))
    return out


def check_correctness() -> list[dict]:
    """Real-size agreement with ``x @ dequant(W).T`` in fp32 (the test oracle), every code path;
    repeated launches catch split-K ticket races."""
    from gfx906_llm.quant.packing import act_order_perm, dequantize_internal, pack_internal

    out = []
    for bits, group, asym, act, K, N in ((4, 128, False, False, 4096, 4096 + 96), (4, 32, True, True, 4096, 1024),
                                         (8, -1, False, False, 14336, 1024), (8, 64, True, False, 4096, 2048),
                                         (4, 128, True, True, 14336, 4096)):
        g = K if group == -1 else group
        q = torch.randint(0, 2**bits, (K, N), device="cuda")
        s = (torch.rand(K // g, N, device="cuda") * 0.02 + 0.001).half()
        z = torch.randint(0, 2**bits, (K // g, N), device="cuda") if asym else None
        perm = act_order_perm(torch.randperm(K, device="cuda") // g, g, K) if act else None
        pw = pack_internal(q, s, z, bits, group, perm)
        w = dequantize_internal(pw)  # [N, K] fp32
        for M in (1, 2, 3, 8, 16, 17, 64, 300):
            x = torch.randn(M, K, device="cuda").half()
            ref = x.float() @ w.t()
            for force in (None, "gemm") if M > 16 else (None,):
                err = 0.0
                for _ in range(20 if M <= 16 else 2):
                    y = k.w4a16_linear(x, pw.qweight, pw.scales, pw.zeros, pw.perm, None, bits, pw.group_size, K,
                                       force=force)
                    err = max(err, ((y.float() - ref).abs().max() / ref.abs().max()).item())
                out.append({"bits": bits, "group": group, "asym": asym, "act_order": act, "K": K, "N": N, "M": M,
                            "path": force or "dispatch", "max_err_rel_to_max": err, "ok": err < 2e-3})
    return out


def _gemv_variants(M: int) -> list[dict]:
    if M == 1:
        return [dict(BLOCK_N=bn, programs_per_cu=ppc, MAGIC=mg, num_warps=4, num_stages=st)
                for bn in (128, 256) for ppc in (4, 8, 16) for mg in (True, False) for st in (1, 3)
                if st == 1 or (bn == 256 and mg)]
    return [dict(USE_DOT=True, EXPAND=ex, MAGIC=mg, BLOCK_N=bn, programs_per_cu=ppc, num_warps=4, num_stages=3)
            for ex in (True, False) for mg in (True, False) for bn in (64, 128) for ppc in (4, 8)]


def _gemm_variants() -> list[dict]:
    return [dict(EXPAND=ex, MAGIC=True, BLOCK_M=bm, BLOCK_N=bn, num_warps=nw, num_stages=st)
            for ex in (True, False) for bm, bn, nw, st in ((64, 128, 4, 4), (128, 128, 8, 3), (128, 256, 8, 3),
                                                           (128, 128, 4, 4))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--budget-s", type=float, default=300.0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--check", action="store_true", help="also check correctness at real sizes")
    a = ap.parse_args()
    t0 = time.time()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    res = {"device": props.name, "triton": triton.__version__, "torch": torch.__version__, "bits": a.bits,
           "group_size": a.group, "copy_bw_GBps": copy_bandwidth() / 1e9, "decode": [], "prefill": [], "sweep": []}
    copy_bw = res["copy_bw_GBps"] * 1e9
    if a.check:
        res["correctness"] = check_correctness()
        res["correctness_all_ok"] = all(c["ok"] for c in res["correctness"])
        dump(res, a.out)
        print(json.dumps({"correctness_all_ok": res["correctness_all_ok"],
                          "failed": [c for c in res["correctness"] if not c["ok"]]}), flush=True)
    for K, N in SHAPES:
        wbytes = K * N * a.bits // 8 + (K // a.group) * N * 2
        copies = max(2, -(-3 * l2 // wbytes))
        ws = make_weights(K, N, a.bits, a.group, copies)
        fcopies = max(2, -(-3 * l2 // (K * N * 2)))
        wf = [torch.randn(N, K, device="cuda").half() for _ in range(fcopies)]

        def ours(x, qw, s, **kw):
            return k.w4a16_linear(x, qw, s, None, None, None, a.bits, a.group, K, **kw)

        for M in DECODE_M:
            x = torch.randn(M, K, device="cuda").half()
            t = graph_time([lambda qw=qw, s=s: ours(x, qw, s) for qw, s in ws])
            tf = graph_time([lambda w=w: torch.nn.functional.linear(x, w) for w in wf])
            res["decode"].append({"K": K, "N": N, "M": M, "us": t * 1e6, "eff_GBps": wbytes / t / 1e9,
                                  "frac_of_copy_bw": wbytes / t / copy_bw, "torch_fp16_us": tf * 1e6,
                                  "speedup_vs_fp16": tf / t})
            if a.sweep and M in (1, 4, 16) and (K, N) in ((4096, 4096), (4096, 14336)):
                for ov in _gemv_variants(M):
                    if time.time() - t0 > a.budget_s:
                        break
                    try:
                        ts = graph_time([lambda qw=qw, s=s: ours(x, qw, s, override=ov) for qw, s in ws])
                    except Exception as e:  # a config that does not compile is recorded and skipped
                        res["sweep"].append({"kind": "gemv", "K": K, "N": N, "M": M, **ov, "error": str(e)[:100]})
                        continue
                    res["sweep"].append({"kind": "gemv", "K": K, "N": N, "M": M, **ov, "us": ts * 1e6,
                                         "frac_of_copy_bw": wbytes / ts / copy_bw, "speedup_vs_fp16": tf / ts})
        for M in PREFILL_M:
            if time.time() - t0 > a.budget_s:
                break
            x = torch.randn(M, K, device="cuda").half()
            flop = 2 * M * K * N
            tg = graph_time([lambda qw=qw, s=s: ours(x, qw, s, force="gemm") for qw, s in ws[:2]])
            t = graph_time([lambda qw=qw, s=s: ours(x, qw, s) for qw, s in ws[:2]])
            tf = graph_time([lambda w=w: torch.nn.functional.linear(x, w) for w in wf[:2]])
            td = graph_time([lambda qw=qw, s=s: ours(x, qw, s, force="dequant") for qw, s in ws[:2]])
            res["prefill"].append({"K": K, "N": N, "M": M, "fused_us": tg * 1e6, "fused_TFLOPs": flop / tg / 1e12,
                                   "fused_vs_fp16": tf / tg, "fused_vs_dequant_then_matmul": td / tg,
                                   "dispatch_TFLOPs": flop / t / 1e12, "dispatch_vs_fp16": tf / t,
                                   "torch_fp16_TFLOPs": flop / tf / 1e12, "dequant_then_matmul_TFLOPs": flop / td / 1e12})
            if a.sweep and M in (256, 2048) and (K, N) == (4096, 14336):
                for ov in _gemm_variants():
                    try:
                        ts = graph_time([lambda qw=qw, s=s: ours(x, qw, s, force="gemm", override=ov) for qw, s in ws[:2]])
                    except Exception as e:
                        res["sweep"].append({"kind": "gemm", "M": M, **ov, "error": str(e)[:100]})
                        continue
                    res["sweep"].append({"kind": "gemm", "K": K, "N": N, "M": M, **ov, "TFLOPs": flop / ts / 1e12,
                                         "vs_fp16": tf / ts})
        del ws, wf
        torch.cuda.empty_cache()
        dump(res, a.out)
    res["elapsed_s"] = time.time() - t0
    print(json.dumps(res, indent=1))
    dump(res, a.out)


def dump(res: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

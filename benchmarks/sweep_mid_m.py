"""Decode-batch linears between the GEMV and the prefill regimes (M = 8..64 rows) on an 8B layer.

    python benchmarks/sweep_mid_m.py [--out FILE]

For the four linears of a Llama-3-8B layer (qkv 4096->6144, o 4096->4096, gate_up 4096->28672,
down 14336->4096) times every path and launch variant for W4A16 (4-bit g128) and GGUF Q4_K at
M = 8, 16, 24, 32, 48, 64 (CUDA-graph replays over weight copies larger than the L2), and checks
each variant against the dequantised weight in fp32 at M = 32 (max |error| / max |reference|).
Prints JSON: per (format, M, variant) the summed microseconds of the four linears.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench_gguf import graph_time, random_raw
from gfx906_llm.kernels.gfx906 import gguf_gemm, gguf_gemv
from gfx906_llm.kernels.gfx906 import w4a16_gemm as w4
from gfx906_llm.kernels.gfx906.gguf_dequant import gguf_dequantize
from gfx906_llm.quant import gguf_torch as gt
from gfx906_llm.quant.gguf import QT

SHAPES = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096)]  # (K, N)
MS = [8, 16, 24, 32, 48, 64]
W4_VARIANTS = {"gemv_cfg": ("gemv", None), "gemv_bn128": ("gemv", {"BLOCK_N": 128}),
               "gemv_bn32": ("gemv", {"BLOCK_N": 32}), "gemv_bn64_p8": ("gemv", {"BLOCK_N": 64, "programs_per_cu": 8}),
               "gemv_bn128_p8": ("gemv", {"BLOCK_N": 128, "programs_per_cu": 8}), "gemm": ("gemm", None),
               "dequant": ("dequant", None)}


def w4_weights(K, N, copies):
    out = []
    for _ in range(copies):
        qw = torch.randint(-2**31, 2**31 - 1, (K // 8, N), dtype=torch.int32, device="cuda")
        s = (torch.rand(K // 128, N, device="cuda") * 0.01).half()
        out.append((qw, s))
    return out


def w4_ref(qw, s, K):
    return w4.dequantize(qw, s, None, None, 4, 128, K, torch.float32)  # [K, N]


def sweep_w4a16(res):
    for K, N in SHAPES:
        ws = w4_weights(K, N, max(2, -(-100 * 2**20 // (K * N // 2))))
        for M in MS:
            x = torch.randn(M, K, device="cuda").half()
            for name, (force, ov) in W4_VARIANTS.items():
                if force == "gemv" and M > 64:
                    continue
                fns = [lambda qw=qw, s=s: w4.w4a16_linear(x, qw, s, None, None, None, 4, 128, K, force=force,
                                                          override=ov) for qw, s in ws]
                try:
                    t = graph_time(fns)
                except Exception as e:  # noqa: BLE001 (a variant that does not compile is reported)
                    res.setdefault("errors", []).append(f"w4a16 {name} M{M} {K}x{N}: {e!r}"[:300])
                    continue
                key = f"w4a16 M{M} {name}"
                res["us"][key] = res["us"].get(key, 0.0) + t * 1e6
                if M == 32 and (K, N) == (14336, 4096):
                    ref = x.float() @ w4_ref(*ws[0], K)
                    y = w4.w4a16_linear(x, *ws[0], None, None, None, 4, 128, K, force=force, override=ov).float()
                    res["err"][key] = float((y - ref).abs().max() / ref.abs().max())


def sweep_gguf(res, qt=QT.Q4_K):
    rng = np.random.default_rng(0)
    for K, N in SHAPES:
        raw = random_raw(int(qt), N, K, rng).cuda()
        p0 = gt.pack_planes(raw, int(qt), K)
        planes = [p0] + [gt.pack_planes(raw, int(qt), K) for _ in range(max(1, -(-100 * 2**20 // p0.nbytes)) - 1)]
        for M in MS:
            x = torch.randn(M, K, device="cuda").half()
            out = torch.empty(M, N, device="cuda", dtype=torch.float16)
            variants = {"gemm": lambda p: gguf_gemm.gguf_gemm(x, p, out, config=gguf_gemm.launch_config(M)),
                        "dequant": lambda p: gguf_gemm.gguf_dequant_matmul(x, p, out)}
            if M <= 8:
                variants["gemv"] = lambda p: gguf_gemv.gguf_gemv(x, p, out)
            for name, f in variants.items():
                try:
                    t = graph_time([lambda p=p, f=f: f(p) for p in planes])
                except Exception as e:  # noqa: BLE001
                    res.setdefault("errors", []).append(f"gguf {name} M{M} {K}x{N}: {e!r}"[:300])
                    continue
                key = f"q4_k M{M} {name}"
                res["us"][key] = res["us"].get(key, 0.0) + t * 1e6
                if M == 32 and (K, N) == (14336, 4096):
                    ref = x.float() @ gguf_dequantize(p0).t()
                    f(p0)
                    res["err"][key] = float((out.float() - ref).abs().max() / ref.abs().max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    res = {"us": {}, "err": {}}
    sweep_w4a16(res)
    sweep_gguf(res)
    for fmt in ("w4a16", "q4_k"):
        for M in MS:
            row = {k.split()[-1]: round(v, 1) for k, v in res["us"].items() if k.startswith(f"{fmt} M{M} ")}
            best = min(row, key=row.get) if row else None
            print(f"{fmt} M={M}: best {best}  " + "  ".join(f"{k}={v}" for k, v in sorted(row.items(), key=lambda kv: kv[1])))
    print("err at M=32:", json.dumps({k: round(v, 5) for k, v in res["err"].items()}))
    print("errors:", res.get("errors", [])[:6])
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()

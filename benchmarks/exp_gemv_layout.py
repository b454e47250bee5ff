"""Why the W4A16 GEMV streams at ~3.2 TB/s: weight layout, bytes in flight and cache policy (prints JSON).

Usage: python benchmarks/exp_gemv_layout.py [--out FILE] [--budget-s 400]

1. ``stream``: a Triton kernel that only reads the packed int32 weight the way the GEMV does
   (``[16, BLOCK_N]`` word tiles per K block, split-K programs) and xor-reduces it: the ceiling of
   the access pattern without any arithmetic. Layouts: the internal ``[K_pad / 8, N]`` (``TILE_W``
   0: each tile row is a ``4 * BLOCK_N``-byte run, rows ``4 N`` bytes apart) and tiled
   ``[N / TILE_W, K_pad / 8, TILE_W]`` (a program's words contiguous); ``UNROLL`` K blocks loaded
   before they are used (bytes in flight); ``evict_first`` on the weight.
2. ``gemv``: the real HALF2 M = 1 GEMV (``w4a16_gemv``) as before session 3 and with the CUDA
   settings now committed (scales in the tile's layout, no column masks, a barrier pinning the
   block's loads), each with and without ``evict_first``, over tiles, warps and split-K, checked
   against ``x @ dequant(W).T``; then back-to-back launches on 8 weights in one graph, each
   output checked (split-K tickets shared by all launches).
Findings (NOTES_w4a16.md, session 3): the access pattern itself streams at up to 0.93 of copy
bandwidth (4096x28672); tiling the layout, unrolling loads and (in a variant since removed)
programmatic dependent launch with an L2 prefetch did not help the GEMV.
Fractions are of the SM copy bandwidth (read + write of 1 GiB) measured in the same run, as in
``bench_w4a16.py``; ``read_GBps`` is a torch read-only reduction of 1 GiB for reference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
import triton
import triton.language as tl

from bench_w4a16 import SHAPES, copy_bandwidth, graph_time


@triton.jit
def stream_kernel(w_ptr, out_ptr, N, num_kblocks, bps, BLOCK_N: tl.constexpr, TILE_W: tl.constexpr,
                  UNROLL: tl.constexpr, EVICT: tl.constexpr):
    P: tl.constexpr = 16
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, P)
    if TILE_W == 0:
        ptrs = w_ptr + offs_p[:, None] * N + offs_n[None, :]
        STEP = P * N
    else:
        ptrs = (w_ptr + (offs_n // TILE_W)[None, :] * (num_kblocks * P * TILE_W) + offs_p[:, None] * TILE_W
                + (offs_n % TILE_W)[None, :])
        STEP = P * TILE_W
    acc = tl.zeros([P, BLOCK_N], dtype=tl.int32)
    lo = pid_k * bps
    for kb in range(lo, lo + bps, UNROLL):
        a = tl.load(ptrs + kb * STEP, eviction_policy=EVICT)
        if UNROLL >= 2:
            b = tl.load(ptrs + (kb + 1) * STEP, eviction_policy=EVICT)
            if UNROLL == 4:
                c = tl.load(ptrs + (kb + 2) * STEP, eviction_policy=EVICT)
                d = tl.load(ptrs + (kb + 3) * STEP, eviction_policy=EVICT)
                b = b ^ c ^ d
            a = a ^ b
        acc = acc ^ a
    tl.store(out_ptr + pid_k * N + offs_n, tl.sum(acc, axis=0))


TILES = ((64, 2, 16), (128, 4, 8), (256, 4, 8))  # BLOCK_N, warps, programs/SM
# {}: the HALF2 kernel before session 3; then the CUDA settings committed in session 3
# (w4a16_gemv._CUDA_H2 but EVICT, which is swept), with the ticket epilogue and with the split-K
# sum in the separate splitk_reduce launch
_H2 = dict(TILE_S=True, EVEN_N=True, PIN=True)
VARIANTS = ({}, dict(_H2, REDUCE_LAUNCH=False), dict(_H2, REDUCE_LAUNCH=True))


def tiled(qw: torch.Tensor, tw: int) -> torch.Tensor:
    """``[Kw, N]`` -> ``[N / tw, Kw, tw]`` contiguous (flattened back to ``[Kw, N]``'s size)."""
    kw, n = qw.shape
    return qw.view(kw, n // tw, tw).permute(1, 0, 2).contiguous().view(kw, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget-s", type=float, default=400)
    ap.add_argument("--no-stream", action="store_true", help="skip part 1")
    a = ap.parse_args()
    t0 = time.time()
    props = torch.cuda.get_device_properties(0)
    sms = props.multi_processor_count
    res = {"device": props.name, "triton": triton.__version__, **copy_bandwidth(), "stream": [], "gemv": []}
    big = torch.randn(1 << 28, device="cuda")  # fp32 (an int32 sum accumulates in int64: slow)
    res["read_GBps"] = 4 * 2**28 / graph_time([big.sum] * 4) / 1e9
    big = None
    bw = res["sm_copy_GBps"] * 1e9
    from gfx906_llm.kernels.gfx906 import w4a16_gemm as k
    from gfx906_llm.kernels.gfx906 import w4a16_gemv as gv
    from gfx906_llm.quant.packing import PackedWeight, dequantize_internal

    for K, N in SHAPES:
        kw = K // 8
        wbytes = kw * N * 4
        copies = max(3, -(-240 * 2**20 // wbytes))
        raw = [torch.randint(-2**31, 2**31 - 1, (kw, N), dtype=torch.int32, device="cuda") for _ in range(copies)]
        layouts = {0: raw}
        for tw in (64, 128, 256) if not a.no_stream else ():
            layouts[tw] = [tiled(q, tw) for q in raw]
        nkb = kw // 16
        out = torch.empty(nkb * N, dtype=torch.int32, device="cuda")
        for bn, nw in ((64, 2), (128, 4), (256, 4)) if not a.no_stream else ():
            for tw in (0, bn):
                for ppc in (8, 16):
                    want = max(1, ppc * sms // (N // bn))
                    for unroll in (1, 2, 4):
                        bps = -(-nkb // min(want, nkb))
                        bps = -(-bps // unroll) * unroll
                        if nkb % bps:
                            continue
                        for ev in ("", "evict_first"):
                            fns = [lambda q=q: stream_kernel[(N // bn, nkb // bps)](
                                q, out, N, nkb, bps, BLOCK_N=bn, TILE_W=tw, UNROLL=unroll, EVICT=ev, num_warps=nw)
                                for q in layouts[tw]]
                            t = graph_time(fns)
                            res["stream"].append({"K": K, "N": N, "BLOCK_N": bn, "num_warps": nw, "TILE_W": tw,
                                                  "programs_per_cu": ppc, "UNROLL": unroll, "EVICT": ev,
                                                  "split": nkb // bps, "us": t * 1e6, "frac": wbytes / t / bw})
        # the real GEMV (HALF2, M = 1) on the same words, scales g128
        s = [(torch.rand(K // 128, N, device="cuda") * 0.01).half() for _ in range(copies)]
        w32 = dequantize_internal(PackedWeight(raw[0], s[0], None, None, 4, 128, K, N))
        x = torch.randn(1, K, device="cuda").half()
        ref = x.float() @ w32.t()
        gbytes = wbytes + (K // 128) * N * 2
        for (bn, nw, ppc), var, ev in itertools.product(TILES, VARIANTS, ("", "evict_first")):
            if time.time() - t0 > a.budget_s:
                break
            ov = dict(HALF2=True, BLOCK_N=bn, num_warps=nw, programs_per_cu=ppc, num_stages=1, EVICT=ev, **var)
            qs = layouts[0]

            def call(q, sc, ov=ov):
                return k.w4a16_linear(x, q, sc, None, None, None, 4, 128, K, force="gemv", override=ov)
            try:
                err = ((call(qs[0], s[0]).float() - ref).abs().max() / ref.abs().max()).item()
                t = graph_time([lambda q=q, sc=sc: call(q, sc) for q, sc in zip(qs, s)])
            except Exception as e:
                res["gemv"].append({"K": K, "N": N, "override": ov, "error": str(e)[:300]})
                continue
            res["gemv"].append({"K": K, "N": N, "override": ov, "us": t * 1e6, "frac": gbytes / t / bw, "err": err})
        if N <= 4096:  # back-to-back launches on different weights, each output checked (split-K tickets)
            refs = [x.float() @ dequantize_internal(PackedWeight(q, sc, None, None, 4, 128, K, N)).t()
                    for q, sc in zip(raw[:8], s[:8])]
            for var in VARIANTS:
                ov = dict(HALF2=True, BLOCK_N=64, num_warps=2, programs_per_cu=16, num_stages=1, EVICT="evict_first",
                          **var)
                outs = [torch.empty(1, N, device="cuda", dtype=torch.float16) for _ in refs]
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for q, sc, o in zip(raw[:8], s[:8], outs):
                        gv.gemv(x, q, sc, None, None, None, o, 4, 128, override=ov)
                worst = 0.0
                for _ in range(50):
                    for o in outs:
                        o.fill_(float("nan"))
                    g.replay()
                    torch.cuda.synchronize()
                    worst = max(worst, max(((o.float() - r).abs().max() / r.abs().max()).item()
                                           for o, r in zip(outs, refs)))
                res.setdefault("b2b_check", []).append({"K": K, "N": N, "override": ov, "max_err": worst})
                print("b2b check", K, N, json.dumps(var), worst)
        del raw, layouts, s
        torch.cuda.empty_cache()
        if a.out:
            json.dump(res, open(a.out, "w"), indent=1)
    res["elapsed_s"] = time.time() - t0
    if a.out:
        json.dump(res, open(a.out, "w"), indent=1)
    print(json.dumps({kk: v for kk, v in res.items() if not isinstance(v, list)}))
    for key in ("stream", "gemv"):
        for K, N in SHAPES:
            rows = sorted((r for r in res[key] if (r["K"], r["N"]) == (K, N) and "us" in r), key=lambda r: -r["frac"])
            print(key, K, N, "best:", " | ".join(f"{r['frac']:.3f} {r['us']:.1f}us " + json.dumps(
                {kk: v for kk, v in r.get("override", r).items() if kk not in ("K", "N", "us", "frac", "HALF2",
                                                                                   "num_stages")}) for r in rows[:4]))
    for var in VARIANTS:  # geometric mean over shapes of the best tile per shape
        for ev in ("", "evict_first"):
            best = []
            for K, N in SHAPES:
                fr = [r["frac"] for r in res["gemv"] if (r["K"], r["N"]) == (K, N) and "us" in r
                      and all(r["override"].get(kk) == v for kk, v in var.items()) and r["override"]["EVICT"] == ev
                      and (var or "TILE_S" not in r["override"])]
                best.append(max(fr) if fr else float("nan"))
            print("variant", json.dumps(var), ev, "best per shape:", " ".join(f"{b:.3f}" for b in best))
    print("errors:", [r for r in res["gemv"] if "error" in r][:3], "max err:",
          max((r["err"] for r in res["gemv"] if "err" in r), default=None))


if __name__ == "__main__":
    main()

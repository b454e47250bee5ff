"""GPU correctness of the Triton attention and cache-write kernels at real sizes (prints JSON).

Checks ``gfx906_llm.kernels.gfx906.attention.unified_attention`` and ``cache_ops.reshape_and_cache``
against ``gfx906_llm.kernels.reference`` on fresh random inputs: query/context pairs (1, 1328),
(5, 18), (129, 463), (2048, 0), a 32k-token context, mixed batches of them, GQA 1/4/8, head sizes
64/80/96/128/256, block sizes 16/32, sliding window, soft-cap, fp16 and bf16, forced split-KV; each
under the GPU's own CONFIGS entry and again under gfx906's (the FMA decode path).
The output buffer is poisoned with NaN before each call. Exit status 1 on any mismatch.

Run from the repository root: ``python benchmarks/gpu_attention_check.py [--out FILE]``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch


def import_kernels():
    """Import gfx906_llm.kernels from the source tree when the package is not installed."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    try:
        import gfx906_llm.kernels  # noqa: F401
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "gfx906_llm.kernels", root / "kernels" / "__init__.py", submodule_search_locations=[str(root / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["gfx906_llm.kernels"] = mod
        spec.loader.exec_module(mod)


def make_batch(pairs, hq, hkv, d, block_size, dtype, device="cuda", spare_blocks=7):
    """Random paged batch: pairs of (q_len, context_len); blocks shuffled over the cache."""
    seq = [q + c for q, c in pairs]
    nblk = [-(-s // block_size) for s in seq]
    total = sum(nblk) + spare_blocks
    perm = torch.randperm(total, device=device).to(torch.int32)
    bt = torch.zeros(len(seq), max(nblk) + 2, dtype=torch.int32, device=device)
    o = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[o:o + n]
        o += n
    kc = torch.randn(total, block_size, hkv, d, dtype=dtype, device=device)
    vc = torch.randn_like(kc)
    T = sum(q for q, _ in pairs)
    q = torch.randn(T + 3, hq, d, dtype=dtype, device=device)  # 3 padding rows
    qsl = torch.tensor([0] + [sum(p[0] for p in pairs[:i + 1]) for i in range(len(pairs))],
                       dtype=torch.int32, device=device)
    return q, kc, vc, qsl, torch.tensor(seq, dtype=torch.int32, device=device), bt


def check_attention(name, pairs, hq, hkv, d, bs, dtype, **kw):
    from gfx906_llm.kernels import reference
    from gfx906_llm.kernels.gfx906.attention import unified_attention

    q, kc, vc, qsl, sl, bt = make_batch(pairs, hq, hkv, d, bs, dtype)
    ref_kw = {k: v for k, v in kw.items() if k in ("sliding_window", "soft_cap")}
    ref = reference.paged_attention(q, kc, vc, qsl, sl, bt, d ** -0.5, **ref_kw)
    out = torch.full_like(q, float("nan"))
    unified_attention(q, kc, vc, qsl, sl, bt, d ** -0.5, out=out, max_query_len=max(p[0] for p in pairs),
                      max_seq_len=max(sum(p) for p in pairs), **kw)
    n = int(qsl[-1])
    err = (out[:n].float() - ref[:n].float()).abs().max().item()
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    return {"name": name, "pairs": pairs[:6], "hq": hq, "hkv": hkv, "d": d, "block_size": bs,
            "dtype": str(dtype), **{k: v for k, v in kw.items()}, "max_abs_err": err, "ok": err <= tol}


def check_cache(T, hkv, d, bs, dtype):
    from gfx906_llm.kernels import reference
    from gfx906_llm.kernels.gfx906.cache_ops import reshape_and_cache

    nb = T // bs + 4
    k = torch.randn(T, hkv, d, dtype=dtype, device="cuda")
    v = torch.randn_like(k)
    slots = torch.randperm(nb * bs, device="cuda")[:T]
    slots[::7] = -1
    caches = [torch.randn(nb, bs, hkv, d, dtype=dtype, device="cuda") for _ in range(2)]
    ref = [c.clone() for c in caches]
    reference.reshape_and_cache(k, v, ref[0], ref[1], slots)
    reshape_and_cache(k, v, caches[0], caches[1], slots)
    ok = torch.equal(ref[0], caches[0]) and torch.equal(ref[1], caches[1])
    return {"name": f"reshape_and_cache T{T} h{hkv} d{d} bs{bs} {dtype}", "ok": ok}


def cases():
    f16, b16 = torch.float16, torch.bfloat16
    real = [(1, 1328), (5, 18), (129, 463), (2048, 0)]
    yield "each_pair", dict(pairs=None)
    yield "mixed_llama3", dict(pairs=real + [(1, 40), (1, 16), (1, 17), (3, 31)], hq=32, hkv=8, d=128, bs=16, dtype=f16)
    yield "ctx32k_decode", dict(pairs=[(1, 32767), (1, 32000)], hq=32, hkv=8, d=128, bs=16, dtype=f16)
    yield "ctx32k_chunk", dict(pairs=[(64, 32704)], hq=32, hkv=8, d=128, bs=32, dtype=f16)
    yield "mha_d64", dict(pairs=real, hq=12, hkv=12, d=64, bs=16, dtype=f16)
    yield "smollm_d64_g3", dict(pairs=real, hq=9, hkv=3, d=64, bs=32, dtype=f16)
    yield "qwen_d64_g7", dict(pairs=real, hq=14, hkv=2, d=64, bs=16, dtype=f16)
    yield "d80_g4", dict(pairs=real, hq=16, hkv=4, d=80, bs=16, dtype=f16)
    yield "d96_g8", dict(pairs=real, hq=32, hkv=4, d=96, bs=16, dtype=f16)
    yield "gemma_d256_window_cap", dict(pairs=real, hq=4, hkv=1, d=256, bs=16, dtype=f16, sliding_window=512,
                                       soft_cap=50.0)
    yield "window_small", dict(pairs=real, hq=8, hkv=2, d=128, bs=32, dtype=f16, sliding_window=37)
    yield "softcap", dict(pairs=real, hq=8, hkv=8, d=128, bs=16, dtype=f16, soft_cap=5.0)
    yield "bf16_mixed", dict(pairs=real, hq=32, hkv=8, d=128, bs=16, dtype=b16)
    yield "bf16_decode_g8", dict(pairs=[(1, 1328), (1, 33), (1, 4000)], hq=64, hkv=8, d=128, bs=16, dtype=b16)
    for ns in (2, 8, 64):
        yield f"split{ns}_mixed", dict(pairs=real + [(1, 5000)], hq=32, hkv=8, d=128, bs=16, dtype=f16, num_segments=ns)
    yield "split16_window", dict(pairs=[(1, 3000), (7, 900)], hq=32, hkv=8, d=128, bs=16, dtype=f16,
                                 sliding_window=300, num_segments=16)
    yield "block_edges", dict(pairs=[(1, 15), (1, 16), (1, 31), (16, 16), (17, 15), (32, 0)], hq=8, hkv=2,
                              d=128, bs=16, dtype=f16)


def main(argv=None) -> int:
    import_kernels()
    from gfx906_llm.kernels.gfx906 import attention

    seed = int(time.time())
    torch.manual_seed(seed)
    results = []
    native = attention._config_key
    for key in (native(), "gfx906"):  # the GPU's own launch settings, then gfx906's (FMA decode)
        attention._config_key = lambda key=key: key
        for name, kw in cases():
            if kw["pairs"] is None:
                for p in [(1, 1328), (5, 18), (129, 463), (2048, 0)]:
                    results.append(dict(check_attention(f"pair{p}", [p], 32, 8, 128, 16, torch.float16), config=key))
                continue
            results.append(dict(check_attention(name, **kw), config=key))
    attention._config_key = native
    for T, hkv, d, bs, dt in ((1, 8, 128, 16, torch.float16), (300, 8, 128, 16, torch.float16),
                              (77, 1, 256, 32, torch.bfloat16), (64, 3, 80, 16, torch.float16)):
        results.append(check_cache(T, hkv, d, bs, dt))
    bad = [r for r in results if not r["ok"]]
    summary = {"seed": seed, "checks": len(results), "failed": len(bad), "results": results}
    text = json.dumps(summary, indent=1, default=str)
    print(text)
    if argv and "--out" in argv:
        Path(argv[argv.index("--out") + 1]).write_text(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

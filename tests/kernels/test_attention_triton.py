"""Triton unified attention vs the torch reference (interpreter on CPU, tiny shapes).

Fresh random inputs each run; the output buffer is poisoned with NaN before each call and only
rows that belong to a request are compared (padding rows may be left untouched).
"""

from __future__ import annotations

import time

import pytest
import torch

from gfx906_llm.kernels import reference

attention = pytest.importorskip("gfx906_llm.kernels.gfx906.attention")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
SEED = int(time.time() * 1000) % 2**31
torch.manual_seed(SEED)


def make_batch(pairs, hq, hkv, d, bs, dtype=torch.float16, pad_rows=2):
    """Paged batch of (q_len, context_len) requests with blocks scattered over the cache."""
    seq = [q + c for q, c in pairs]
    nblk = [-(-s // bs) for s in seq]
    total = sum(nblk) + 3
    perm = torch.randperm(total).to(torch.int32)
    bt = torch.zeros(len(seq), max(nblk) + 1, dtype=torch.int32)
    o = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[o:o + n]
        o += n
    kc = torch.randn(total, bs, hkv, d, dtype=dtype, device=DEV)
    vc = torch.randn_like(kc)
    T = sum(q for q, _ in pairs)
    q = torch.randn(T + pad_rows, hq, d, dtype=dtype, device=DEV)
    qsl = torch.tensor([0] + [sum(p[0] for p in pairs[:i + 1]) for i in range(len(pairs))], dtype=torch.int32)
    return q, kc, vc, qsl.to(DEV), torch.tensor(seq, dtype=torch.int32, device=DEV), bt.to(DEV)


def run_case(pairs, hq, hkv, d, bs, sliding_window=None, soft_cap=None, num_segments=None, hint=True):
    q, kc, vc, qsl, sl, bt = make_batch(pairs, hq, hkv, d, bs)
    scale = d ** -0.5
    ref = reference.paged_attention(q, kc, vc, qsl, sl, bt, scale, sliding_window=sliding_window, soft_cap=soft_cap)
    out = torch.full_like(q, float("nan"))
    hints = {"max_query_len": max(p[0] for p in pairs), "max_seq_len": max(sum(p) for p in pairs)} if hint else {}
    res = attention.unified_attention(q, kc, vc, qsl, sl, bt, scale, sliding_window=sliding_window,
                                      soft_cap=soft_cap, out=out, num_segments=num_segments, **hints)
    assert res is out
    n = int(qsl[-1])
    err = (out[:n].float() - ref[:n].float()).abs().max().item()
    assert err < 5e-3, f"max abs err {err} (seed {SEED}, pairs {pairs})"


CASES = {
    # name: (pairs (q_len, ctx), hq, hkv, d, block_size, extra kwargs)
    "decode_only_g4": ([(1, 20), (1, 5), (1, 47)], 8, 2, 64, 16, {}),
    "prefill_only_mha": ([(9, 0), (21, 0)], 2, 2, 64, 16, {}),
    "mixed_g8_bs32": ([(1, 40), (6, 0), (1, 3), (13, 18)], 8, 1, 64, 32, {}),
    "chunked_prefill_ctx": ([(11, 37), (4, 64)], 4, 1, 128, 16, {}),
    "block_edges_bs16": ([(1, 15), (1, 31), (16, 16), (17, 15)], 4, 2, 64, 16, {}),
    "block_edges_bs32": ([(1, 31), (1, 32), (32, 0), (33, 31)], 4, 4, 64, 32, {}),
    "d80_padded_g3": ([(1, 22), (7, 9)], 6, 2, 80, 16, {}),
    "d96_g4": ([(1, 30), (5, 12)], 4, 1, 96, 16, {}),
    "d256": ([(1, 18), (3, 20)], 2, 1, 256, 16, {}),
    "sliding_window": ([(1, 50), (12, 30), (5, 0)], 4, 2, 64, 16, {"sliding_window": 9}),
    "soft_cap": ([(1, 33), (8, 8)], 4, 1, 64, 32, {"soft_cap": 2.0}),
    "split_decode": ([(1, 70), (1, 9), (1, 100)], 8, 2, 64, 16, {"num_segments": 4}),
    "split_mixed_window": ([(1, 90), (6, 40)], 4, 1, 64, 16, {"num_segments": 8, "sliding_window": 30}),
    "split_softcap_more_segs_than_tiles": ([(1, 20), (2, 3)], 4, 4, 64, 16, {"num_segments": 16, "soft_cap": 3.0}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name):
    pairs, hq, hkv, d, bs, kw = CASES[name]
    run_case(pairs, hq, hkv, d, bs, **kw)


@pytest.mark.parametrize("name", ["decode_only_g4", "mixed_g8_bs32", "split_decode", "d256", "sliding_window"])
def test_gfx906_configs(monkeypatch, name):
    """The gfx906 launch settings (FMA decode without tl.dot, the head-256 prefill override)."""
    monkeypatch.setattr(attention, "_config_key", lambda: "gfx906")
    pairs, hq, hkv, d, bs, kw = CASES[name]
    run_case(pairs, hq, hkv, d, bs, **kw)


def test_without_host_hints_and_empty_request():
    """max_query_len/max_seq_len computed from the tensors; a request with no query rows."""
    run_case([(3, 10), (0, 7), (1, 4)], 4, 2, 64, 16, hint=False)


def test_out_none_zero_padding_rows():
    q, kc, vc, qsl, sl, bt = make_batch([(2, 5), (1, 9)], 4, 2, 64, 16, pad_rows=3)
    res = attention.unified_attention(q, kc, vc, qsl, sl, bt, 0.125)
    ref = reference.paged_attention(q, kc, vc, qsl, sl, bt, 0.125)
    assert torch.allclose(res.float(), ref.float(), atol=5e-3)
    assert torch.all(res[3:] == 0)


def test_num_segments_policy():
    cfg = attention.CONFIGS["gfx906"]
    # batch 1 x 8 KV heads at 8k: 240 programs wanted on 60 CUs, each segment >= 4 tiles
    assert attention.pick_segments(cfg, 8, 8192, 16, 60) == 32
    assert attention.pick_segments(cfg, 8, 200, 16, 60) == 2  # short context: few segments
    assert attention.pick_segments(cfg, 64 * 8, 32768, 16, 60) == 1  # big batch fills the chip
    assert attention.pick_segments(cfg, 1, 10**6, 16, 60) == attention.MAX_SEGMENTS
    assert attention.pick_segments(cfg, 8, 1024, 16, 60, max_query_len=1024) == 1  # plain prefill: no split
    assert attention.pick_segments(cfg, 8, 32768, 16, 60, max_query_len=64) == 32  # short chunk, long context


def test_invalid_arguments():
    q, kc, vc, qsl, sl, bt = make_batch([(1, 3)], 4, 2, 64, 16)
    with pytest.raises(ValueError, match="multiple"):
        attention.unified_attention(q[:, :3], kc, vc, qsl, sl, bt, 0.1)
    with pytest.raises(ValueError, match="dtype"):
        attention.unified_attention(q.float(), kc.float(), vc.float(), qsl, sl, bt, 0.1)
    with pytest.raises(ValueError, match="num_segments"):
        attention.unified_attention(q, kc, vc, qsl, sl, bt, 0.1, num_segments=3)

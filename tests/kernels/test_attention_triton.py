"""Triton unified attention vs the torch reference (interpreter on CPU, tiny shapes).

Fresh random inputs each run; the output buffer is poisoned with NaN before each call and only
rows that belong to a request are compared (padding rows may be left untouched). The split-KV
forms (fixed, adaptive, adaptive + fused reduction; see attention_decode.py) are each checked with
a capture-time max_seq_len far above the real lengths, mixed lengths, sliding window, soft-cap,
head sizes 64/128/256, and partial buffers reused (NaN-poisoned) across launches. On a GPU the same
file runs there, plus a CUDA-graph replay with changing seq_lens.
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


def run_case(pairs, hq, hkv, d, bs, sliding_window=None, soft_cap=None, num_segments=None, hint=True,
             max_seq_len=None, batch=None, early=None):
    q, kc, vc, qsl, sl, bt = batch or make_batch(pairs, hq, hkv, d, bs)
    scale = d ** -0.5
    ref = reference.paged_attention(q, kc, vc, qsl, sl, bt, scale, sliding_window=sliding_window, soft_cap=soft_cap)
    out = torch.full_like(q, float("nan"))
    hints = {"max_query_len": max(p[0] for p in pairs),
             "max_seq_len": max_seq_len or max(sum(p) for p in pairs)} if hint else {}
    res = attention.unified_attention(q, kc, vc, qsl, sl, bt, scale, sliding_window=sliding_window,
                                      soft_cap=soft_cap, out=out, num_segments=num_segments, early=early, **hints)
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


@pytest.mark.parametrize("early", [True, False])
@pytest.mark.parametrize("name", ["chunked_prefill_ctx", "block_edges_bs16", "mixed_g8_bs32", "split_decode",
                                  "split_mixed_window", "split_softcap_more_segs_than_tiles", "d80_padded_g3"])
def test_early_first_tile(name, early):
    """The first KV tile of each segment read in two parts (attention_tile.early_tile: the rows of
    earlier steps, then this step's rows), on and off whatever PDL says: chunks whose first tile
    holds both, decode tokens, split segments, windows, padded heads."""
    pairs, hq, hkv, d, bs, kw = CASES[name]
    run_case(pairs, hq, hkv, d, bs, early=early, **kw)


@pytest.mark.parametrize("name", ["decode_only_g4", "chunked_prefill_ctx", "split_decode"])
def test_early_first_tile_gfx906(monkeypatch, name):
    """The early tile on the FMA decode path (K as [N, D], no tl.dot)."""
    monkeypatch.setattr(attention, "_config_key", lambda: "gfx906")
    pairs, hq, hkv, d, bs, kw = CASES[name]
    run_case(pairs, hq, hkv, d, bs, early=True, **kw)


@pytest.mark.parametrize("name", ["decode_only_g4", "d256", "sliding_window", "soft_cap"])
def test_decode_early_tile_settings(monkeypatch, name):
    """CUDA's settings with the early tile: decode batches take CONFIGS' "decode_early" tile and
    re-pick their segment count within the one-wave grid (capture-time max_seq_len far above the
    real lengths, as under a graph)."""
    monkeypatch.setattr(attention, "_config_key", lambda: "cuda")
    assert "decode_early" in attention.CONFIGS["cuda"]
    pairs, hq, hkv, d, bs, kw = CASES[name]
    run_case(pairs, hq, hkv, d, bs, early=True, max_seq_len=4096, **kw)


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


# ---- split-KV forms: fixed (every segment stores), adaptive (segments follow the real seq_len) with
# a second reduce launch, adaptive with the reduction fused into the attention kernel ----
SPLIT_MODES = {"fixed": {"adaptive": False, "fused_reduce": False},
               "adaptive": {"adaptive": True, "fused_reduce": False},
               "fused": {"adaptive": True, "fused_reduce": True}}


def set_split_mode(monkeypatch, mode, key=None):
    key = key or attention._config_key()
    cfg = dict(attention.CONFIGS.get(key, attention.CONFIGS["default"]), **SPLIT_MODES[mode])
    monkeypatch.setitem(attention.CONFIGS, key, cfg)
    return cfg


class ReusedPartials:
    """Stands in for attention._alloc_partials: one NaN-poisoned set of buffers per shape, handed
    to every launch, so a reader of segments the current launch did not write sees NaN or the
    previous launch's values."""

    def __init__(self):
        self.bufs = {}

    def __call__(self, T, hq, nseg, head_pad, device):
        key = (T, hq, nseg, head_pad)
        if key not in self.bufs:
            acc = torch.full((T, hq, nseg, head_pad), float("nan"), device=device)
            self.bufs[key] = (acc, torch.full((T, hq, nseg), float("nan"), device=device),
                              torch.full((T, hq, nseg), float("nan"), device=device))
        return self.bufs[key]


def expected_active(n_tiles, min_tiles, nseg):
    """The kernel's active segment count (attention_decode.active_segments), in Python."""
    per = -(-n_tiles // min(-(-n_tiles // min_tiles), nseg))
    return -(-n_tiles // per)


SPLIT_CASES = {
    # name: (pairs, hq, hkv, d, bs, kwargs); max_seq_len far above the real lengths, as under a
    # CUDA graph captured for max_model_len
    "decode_graph_hint": ([(1, 20), (1, 5), (1, 300)], 8, 2, 64, 16, {"max_seq_len": 4096}),
    "mixed_lengths_prefill_chunk": ([(1, 3), (6, 200), (1, 400), (2, 30)], 4, 1, 64, 16, {"max_seq_len": 2048}),
    "window": ([(1, 300), (5, 120), (1, 10)], 4, 2, 64, 16, {"max_seq_len": 4096, "sliding_window": 70}),
    "softcap_d128_g1": ([(1, 150), (1, 7)], 2, 2, 128, 32, {"max_seq_len": 1024, "soft_cap": 5.0}),
    "d256_forced_segments": ([(1, 90), (3, 40)], 2, 1, 256, 16, {"num_segments": 8}),
}


@pytest.mark.parametrize("mode", sorted(SPLIT_MODES))
@pytest.mark.parametrize("name", sorted(SPLIT_CASES))
def test_split_modes(monkeypatch, mode, name):
    set_split_mode(monkeypatch, mode)
    monkeypatch.setattr(attention, "_alloc_partials", ReusedPartials())
    pairs, hq, hkv, d, bs, kw = SPLIT_CASES[name]
    run_case(pairs, hq, hkv, d, bs, **kw)


@pytest.mark.parametrize("mode", ["adaptive", "fused"])
def test_gfx906_split_modes(monkeypatch, mode):
    """gfx906 settings (FMA decode, 4 tiles per segment) with a long capture-time max_seq_len."""
    monkeypatch.setattr(attention, "_config_key", lambda: "gfx906")
    set_split_mode(monkeypatch, mode, "gfx906")
    monkeypatch.setattr(attention, "_alloc_partials", ReusedPartials())
    run_case([(1, 600), (1, 40), (1, 130)], 8, 2, 64, 16, max_seq_len=8192)


@pytest.mark.parametrize("mode", sorted(SPLIT_MODES))
def test_reused_partials_long_then_short(monkeypatch, mode):
    """Launches share the partial buffers (and, fused, the ticket counters): a long batch fills
    every segment, then a short one of the same shape must not read the long one's leftovers, then
    the long one again (counters must have been reset)."""
    set_split_mode(monkeypatch, mode)
    monkeypatch.setattr(attention, "_alloc_partials", ReusedPartials())
    hq, hkv, d, bs = 4, 2, 64, 16
    long_pairs, short_pairs = [(1, 700), (1, 500), (2, 640)], [(1, 40), (1, 2), (2, 90)]
    long_batch = make_batch(long_pairs, hq, hkv, d, bs)
    for pairs, batch in ((long_pairs, long_batch), (short_pairs, None), (long_pairs, long_batch)):
        run_case(pairs, hq, hkv, d, bs, num_segments=16, max_seq_len=1024, batch=batch)


def test_unused_segments_store_nothing(monkeypatch):
    """Adaptive split: slots of segments >= the active count stay as they were (NaN here), the
    active ones are written; a one-segment request writes no partials at all."""
    cfg = set_split_mode(monkeypatch, "adaptive")
    parts = ReusedPartials()
    monkeypatch.setattr(attention, "_alloc_partials", parts)
    pairs, hq, hkv, d, bs = [(1, 150), (1, 3), (1, 1000)], 4, 2, 64, 16
    run_case(pairs, hq, hkv, d, bs, num_segments=16, max_seq_len=4096)
    (_, part_m, _), = parts.bufs.values()
    block_n = attention._launch_params(cfg, hq // hkv, 64, 1)[2]
    for t, (_, c) in enumerate(pairs):
        n_act = expected_active(-(-(c + 1) // block_n), cfg["min_tiles_per_segment"], 16)
        written = ~torch.isnan(part_m[t].cpu())  # [Hq, S]
        if n_act == 1:
            assert not written.any(), f"one-segment request {t} stored partials"
        else:
            assert written[:, :n_act].all() and not written[:, n_act:].any(), (t, n_act, written)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mode", sorted(SPLIT_MODES))
def test_cuda_graph_replay_with_changing_lengths(mode, monkeypatch):
    """Captured once for max_seq_len 8192 (as the engine does), replayed for short and long contexts
    written into the same input tensors."""
    set_split_mode(monkeypatch, mode)
    hq, hkv, d, bs, R = 32, 8, 128, 16, 4
    q, kc, vc, qsl, sl, bt = make_batch([(1, 8191)] * R, hq, hkv, d, bs)
    out = torch.empty_like(q)

    def call():
        attention.unified_attention(q, kc, vc, qsl, sl, bt, d ** -0.5, out=out, max_query_len=1, max_seq_len=8192)

    call()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        call()
    for lens in ([200, 8192, 1, 513], [5000, 64, 2048, 129], [8192] * R, [200, 200, 3, 17]):
        sl.copy_(torch.tensor(lens, dtype=torch.int32))
        q.normal_()
        out.fill_(float("nan"))
        g.replay()
        ref = reference.paged_attention(q, kc, vc, qsl, sl, bt, d ** -0.5)
        err = (out[:R].float() - ref[:R].float()).abs().max().item()
        assert err < 5e-3, f"{mode} lens {lens}: max abs err {err} (seed {SEED})"

"""The sampler on synthetic logits: penalty arithmetic, truncation masks, seeds, distribution."""

from __future__ import annotations

import math

import torch

from gfx906_llm.engine.request import Request
from gfx906_llm.sampling_params import SamplingParams
from gfx906_llm.worker.sampler import Sampler, _top_k_top_p_min_p, argmax_rows


def _req(rid="r", prompt=(5,), out=(), eos=frozenset({9}), **kw) -> Request:
    r = Request(rid, list(prompt), SamplingParams(**kw), 100, eos)
    for t in out:
        r.append_token(t)
    return r


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    req = _req(prompt=(0,), out=(1,), temperature=0, repetition_penalty=2.0, logprobs=0)
    out = Sampler().sample(logits.clone(), [req], {})
    # penalised: [1.0, -2.0, 0.5, 3.0] -> argmax stays 3; raw logprob is reported
    assert out.token_ids == [3]
    assert math.isclose(out.logprobs[0], float(torch.log_softmax(logits, -1)[0, 3]), rel_tol=1e-6)
    logits2 = torch.tensor([[2.0, -1.0, 1.5, 0.0]])
    req2 = _req(prompt=(0,), temperature=0, repetition_penalty=2.0)
    assert Sampler().sample(logits2, [req2], {}).token_ids == [2]  # 2.0 -> 1.0 < 1.5


def test_frequency_and_presence_penalties():
    logits = torch.tensor([[1.0, 0.0, 2.9, 0.0]])
    req = _req(out=(2, 2), temperature=0, frequency_penalty=0.5, presence_penalty=0.5)
    # token 2: 2.9 - 0.5 * 2 - 0.5 = 1.4 > 1.0
    assert Sampler().sample(logits.clone(), [req], {}).token_ids == [2]
    req = _req(out=(2, 2, 2), temperature=0, frequency_penalty=0.5, presence_penalty=0.5)
    assert Sampler().sample(logits.clone(), [req], {}).token_ids == [0]  # 2.9 - 1.5 - 0.5 = 0.9


def test_min_tokens_bans_eos_and_stop_ids():
    logits = torch.tensor([[0.0] * 9 + [10.0] + [5.0, 0.0]])
    req = _req(temperature=0, min_tokens=2, stop_token_ids=[10])
    assert Sampler().sample(logits.clone(), [req], {}).token_ids == [0]
    req = _req(out=(1, 1), temperature=0, min_tokens=2)
    assert Sampler().sample(logits.clone(), [req], {}).token_ids == [9]


def test_truncation_masks():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    one = lambda v: torch.tensor([v])  # noqa: E731
    k = _top_k_top_p_min_p(logits, one(2), one(1.0), one(0.0))
    assert torch.isinf(k[0, 2:]).all() and torch.isfinite(k[0, :2]).all()
    p = _top_k_top_p_min_p(logits, one(0), one(0.75), one(0.0))  # 0.5 + 0.3 reaches 0.75
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    m = _top_k_top_p_min_p(logits, one(0), one(1.0), one(0.25))  # keep p >= 0.125
    assert torch.isfinite(m[0, :3]).all() and torch.isinf(m[0, 3])


def test_sampling_follows_the_distribution_and_seeds_repeat():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = torch.log(probs)[None].repeat(4000, 1)
    reqs = [_req(rid=f"r{i}", temperature=1.0) for i in range(4000)]
    ids = torch.tensor(Sampler().sample(logits.clone(), reqs, {}).token_ids)
    freq = torch.bincount(ids, minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.04), freq
    g1 = {"a": Sampler.make_generator(3, torch.device("cpu"))}
    g2 = {"a": Sampler.make_generator(3, torch.device("cpu"))}
    lg = torch.randn(1, 50)
    a = [Sampler().sample(lg.clone(), [_req("a", temperature=1.0)], g1).token_ids[0] for _ in range(10)]
    b = [Sampler().sample(lg.clone(), [_req("a", temperature=1.0)], g2).token_ids[0] for _ in range(10)]
    assert a == b and len(set(a)) > 1


def test_argmax_rows_matches_argmax_with_ties():
    """The two-stage argmax returns torch.argmax's index (the first maximum), ties across and
    within slices included, -inf rows and vocabularies that do not split evenly."""
    for V in (49152, 128256, 1000, 300):
        x = torch.randn(5, V)
        x[1] = x[1].round()  # many ties
        x[2, [7, V - 3]] = 1e4  # the same maximum in two slices: the first one wins
        x[3] = float("-inf")
        x[4] = 0.0
        x[4, V // 2] = 0.0
        assert torch.equal(argmax_rows(x), x.argmax(-1)), V

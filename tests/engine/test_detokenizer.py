"""Incremental detokenisation: the streamed text equals a full decode, also for multi-byte
characters split over tokens and for byte sequences that never become valid UTF-8."""

from __future__ import annotations

import random

import pytest

from gfx906_llm.bench.random_model import SHAPES, write_tokenizer
from gfx906_llm.engine.output_processor import MAX_PENDING, SequenceDetokenizer
from gfx906_llm.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tok")
    write_tokenizer(d, SHAPES["tiny"])  # byte-level BPE: every byte is a token
    return AutoTokenizer.from_pretrained(str(d))


def _stream(tok, prompt, ids):
    det = SequenceDetokenizer(tok, prompt, SamplingParams(max_tokens=len(ids)), 0)
    window = 0
    for t in ids:
        det.update(t)
        window = max(window, len(det.ids) - det.prefix_offset)
    return det.text, window


def test_multibyte_characters_stream_whole(tok):
    prompt = tok("Hello", add_special_tokens=False).input_ids
    ids = tok(" na\u00efve \u65e5\u672c\u8a9e \U0001f600 ok", add_special_tokens=False).input_ids
    text, _ = _stream(tok, prompt, ids)
    assert text == tok.decode(prompt + ids)[len(tok.decode(prompt)):]
    assert "\ufffd" not in text and "\U0001f600" in text


def test_invalid_bytes_are_emitted_and_the_window_stays_bounded(tok):
    lone = [i for i in range(256) if tok.backend_tokenizer.decode([i]) == "\ufffd"]
    rng = random.Random()
    ids = [rng.choice(lone) for _ in range(60)] + tok(" end", add_special_tokens=False).input_ids
    prompt = tok("x", add_special_tokens=False).input_ids
    text, window = _stream(tok, prompt, ids)
    assert text == tok.decode(prompt + ids)[len(tok.decode(prompt)):]
    assert text.endswith(" end") and window <= MAX_PENDING + 7

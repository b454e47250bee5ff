"""End to end (slow): SmolLM2 GGUF -> fp16 HF folder -> GPTQ / AWQ / RTN / compressed-tensors checkpoints.

Each checkpoint is read back with the independent numpy unpackers of conftest.py, turned into a
plain fp32 transformers model, and its perplexity on a fixed held-out text (not in the
calibration text) is compared with the fp16 folder's. Run:

    pytest -m heavy tests/quant/test_e2e_quantized.py -s   (about 20 minutes; not in CI)
"""

from __future__ import annotations

import json
import math
import os
import time

import pytest
import torch

EVAL_TEXT = """The lighthouse keeper kept a logbook in which he wrote down the weather, the ships that passed \
and anything unusual he saw from the tower. On calm nights he listened to the radio and repaired the \
nets that the fishermen brought him, because his hands were steady and he had time. In winter the \
supply boat came only once a fortnight, so he learned to bake his own bread and to keep a store of \
potatoes, onions and dried beans in the cellar below the lamp room.

A hash table stores key-value pairs in an array of buckets. To insert a key, the table computes a hash \
of the key, reduces it modulo the number of buckets, and places the pair in that bucket. When two keys \
land in the same bucket, the table resolves the collision either by chaining, where each bucket holds \
a small list, or by open addressing, where the table probes other buckets until it finds a free one. \
When the load factor grows too large, the table allocates a bigger array and rehashes every entry.

def count_words(path):
    counts = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            for word in line.lower().split():
                counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: kv[1], reverse=True)

Volcanoes form where molten rock from deep inside the Earth reaches the surface. Some erupt explosively, \
throwing ash high into the atmosphere, while others release slow rivers of lava that flow for weeks. \
Scientists monitor active volcanoes with seismometers, satellite images and gas sensors, hoping to warn \
nearby towns days before an eruption begins. The soil around old volcanoes is often very fertile, which \
is one reason why people have always farmed on their slopes despite the danger.

User: Can you suggest a short plan for learning to play the guitar?
Assistant: Start with fifteen minutes a day. In the first week learn to tune the guitar and play the \
chords E minor, A minor, C and G. In the second week practise switching between them slowly with a \
metronome. Then pick a simple song you like that uses those chords and play it every day until the \
changes feel natural. After a month, add barre chords and basic strumming patterns."""

# SmolLM2's hidden size 576 is not a multiple of 128: g128 needs --allow-ragged-groups (a format-legal
# but engine-refused checkpoint); g64 divides 576 and 1536 and gives checkpoints every engine loads.
VARIANTS = [
    ("gptq", "gptq", 128, []),
    ("gptq", "gptq", 128, ["--desc-act"]),
    ("gptq", "gptq", 64, []),
    ("awq", "awq", 128, []),
    ("rtn", "gptq", 128, []),
    ("rtn", "gptq", 64, []),
    ("gptq", "compressed-tensors", 128, []),
]


def perplexity(model, tok) -> float:
    ids = tok(EVAL_TEXT, return_tensors="pt")["input_ids"]
    if tok.bos_token_id is not None and int(ids[0, 0]) != tok.bos_token_id:
        ids = torch.cat([torch.tensor([[tok.bos_token_id]]), ids], dim=1)
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:])
    return math.exp(float(nll))


def model_from_checkpoint(folder: str, dequantize):
    """fp32 transformers model with the numpy-unpacked weights of a quantised ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    cfg.pop("quantization_config")
    config = AutoConfig.for_model(**cfg)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    state = {k: torch.from_numpy(v).float() if v.dtype.kind == "f" else torch.from_numpy(v) for k, v in dequantize(folder).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    assert not unexpected and all(m in tied for m in missing), (missing, unexpected)
    model.tie_weights()
    return model


@pytest.mark.heavy
def test_quantized_smollm2_perplexity(smollm2_fp16_dir, unpackers, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gfx906_llm.quant.tools.cli import build_parser, _validate, quantize_folder

    tok = AutoTokenizer.from_pretrained(smollm2_fp16_dir)
    fp = AutoModelForCausalLM.from_pretrained(smollm2_fp16_dir, dtype=torch.float32).eval()
    ppl_fp = perplexity(fp, tok)
    results = {"fp16": {"ppl": round(ppl_fp, 3)}}
    print("fp16", results["fp16"], flush=True)
    for method, fmt, gs, extra in VARIANTS:
        out = str(tmp_path / f"{method}-{fmt}-g{gs}{'-act' if extra else ''}")
        args = build_parser().parse_args([smollm2_fp16_dir, "--method", method, "--format", fmt, "--bits", "4",
                                          "--group-size", str(gs), "--output", out, "--allow-ragged-groups", *extra])
        _validate(args)
        t0 = time.perf_counter()
        info = quantize_folder(args, log=lambda m: None)
        ppl = perplexity(model_from_checkpoint(out, unpackers.checkpoint), tok)
        key = f"{method}->{fmt} g{gs}{' act-order' if extra else ''}"
        results[key] = {"ppl": round(ppl, 3), "rel": round(ppl / ppl_fp - 1, 4), "wall_s": round(time.perf_counter() - t0, 1),
                        "quantize_cpu_s": info["cpu_s"], "quantize_wall_s": info["total_s"]}
        print(key, results[key], flush=True)
        with open(os.path.join(out, "config.json")) as f:
            assert json.load(f)["quantization_config"]["quant_method"] == ("compressed-tensors" if fmt == "compressed-tensors" else fmt)
    print(json.dumps(results, indent=1))
    for key, r in results.items():
        if key != "fp16":  # a broken layout gives perplexities in the hundreds or more
            assert r["ppl"] < 2.0 * ppl_fp, (key, r, ppl_fp)
    assert results["gptq->gptq g128 act-order"]["ppl"] < results["rtn->gptq g128"]["ppl"]
    assert results["awq->awq g128"]["ppl"] < results["rtn->gptq g128"]["ppl"]

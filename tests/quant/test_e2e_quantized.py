"""End to end (slow): SmolLM2 GGUF -> fp16 HF folder -> GPTQ / AWQ / RTN / compressed-tensors checkpoints.

Each checkpoint is read back with the independent numpy unpackers of conftest.py, turned into a
plain fp32 transformers model, asked the France question (greedy) and measured: perplexity on
``eval_text.txt`` (2,868 SmolLM2 tokens of text written for the project, in none of the calibration
texts) in windows of 1024 tokens, each starting with BOS. Run:

    pytest -m heavy tests/quant/test_e2e_quantized.py -s   (about 15 minutes on 2 shared cores; not in CI)

``EVAL_TEXT`` (494 tokens, all its paragraphs also in eval_text.txt) is the short text the CI engine test uses.
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

EVAL_TEXT_FILE = os.path.join(os.path.dirname(__file__), "eval_text.txt")  # 2,868 SmolLM2 tokens, not in any calibration text
CONTEXT = 1024

# SmolLM2's hidden size 576 is not a multiple of 128: g128 needs --allow-ragged-groups (a format-legal
# but engine-refused checkpoint, hence the numpy unpackers below rather than the engine's loaders).
VARIANTS = [  # (name, CLI arguments)
    ("rtn g128 sym", ["--method", "rtn", "--format", "gptq"]),
    ("rtn g128 asym", ["--method", "rtn", "--format", "gptq", "--asym"]),
    ("gptq g128", ["--method", "gptq", "--format", "gptq"]),
    ("gptq g128 act-order", ["--method", "gptq", "--format", "gptq", "--desc-act"]),
    ("gptq g128 extended calibration", ["--method", "gptq", "--format", "gptq", "--calibration", "extended",
                                        "--num-samples", "64"]),
    ("awq g128", ["--method", "awq", "--format", "awq"]),
    ("compressed-tensors w4a16 g128 (gptq)", ["--method", "gptq", "--format", "compressed-tensors"]),
    ("rtn g32 asym", ["--method", "rtn", "--format", "gptq", "--asym", "--group-size", "32"]),
    ("rtn 8-bit g128", ["--method", "rtn", "--format", "gptq", "--bits", "8"]),
]


def perplexity(model, tok, text: str | None = None, context: int = CONTEXT) -> tuple[float, int]:
    """(perplexity, predicted tokens) of ``text`` (default: the eval text file) in consecutive
    windows of ``context`` tokens, each starting with BOS (teacher forcing, fp32 logits)."""
    if text is None:
        with open(EVAL_TEXT_FILE, encoding="utf-8") as f:
            text = f.read()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    nll, n = 0.0, 0
    for s in range(0, len(ids), context - len(bos)):
        w = torch.tensor([bos + ids[s : s + context - len(bos)]])
        with torch.no_grad():
            logits = model(w).logits[0, :-1].float()
        nll += float(torch.nn.functional.cross_entropy(logits, w[0, 1:], reduction="sum"))
        n += w.shape[1] - 1
    return math.exp(nll / n), n


def france_answer(model, tok) -> str:
    """Greedy reply (16 tokens) to the France question through the chat template."""
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


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
    ppl_fp, n_tok = perplexity(fp, tok)
    results = {"fp16": {"ppl": round(ppl_fp, 3), "tokens": n_tok, "context": CONTEXT, "answer": france_answer(fp, tok)}}
    print("fp16", results["fp16"], flush=True)
    for i, (key, extra) in enumerate(VARIANTS):
        out = str(tmp_path / f"v{i}")
        args = build_parser().parse_args([smollm2_fp16_dir, "--output", out, "--allow-ragged-groups", *extra])
        _validate(args)
        t0 = time.perf_counter()
        info = quantize_folder(args, log=lambda m: None)
        model = model_from_checkpoint(out, unpackers.checkpoint)
        ppl, _ = perplexity(model, tok)
        results[key] = {"ppl": round(ppl, 3), "rel": round(ppl / ppl_fp - 1, 4), "answer": france_answer(model, tok),
                        "wall_s": round(time.perf_counter() - t0, 1), "quantize_cpu_s": info["cpu_s"]}
        print(key, results[key], flush=True)
        with open(os.path.join(out, "config.json")) as f:
            assert json.load(f)["quantization_config"]["quant_method"] == args.format
    print(json.dumps(results, indent=1))
    r = {k: v["ppl"] for k, v in results.items()}
    for key, v in results.items():
        assert "Paris" in v["answer"], (key, v)
    # Measured (2,868 tokens, context 1024, fp16 18.55): rtn sym 27.9 (+51%), rtn asym 23.6 (+27%),
    # gptq 22.5 (+21%), gptq act-order 22.3 (+20%), awq 21.9 (+18%), rtn g32 asym 23.0 (+24%),
    # rtn 8-bit 18.70 (+0.8%), gptq with the extended calibration text 21.85 (+18%). Without the sink weight GPTQ gave 26.1 (sym): see gptq.hessian_from_inputs.
    # 4 bits g128 cost SmolLM2-135M about 20% whatever the algorithm: "within a few percent" is not reached.
    assert r["rtn 8-bit g128"] < 1.03 * ppl_fp
    assert r["gptq g128"] < 0.85 * r["rtn g128 sym"]  # GPTQ against RTN with the same (symmetric) quantiser
    assert r["gptq g128"] < r["rtn g128 asym"]  # ... and even against asymmetric RTN
    assert r["gptq g128 act-order"] < 0.85 * r["rtn g128 sym"]
    assert r["awq g128"] < 0.97 * r["rtn g128 asym"]  # AWQ (asym) against RTN with the same quantiser
    assert r["compressed-tensors w4a16 g128 (gptq)"] == pytest.approx(r["gptq g128"], rel=0.01)  # same codes
    for key in ("gptq g128", "gptq g128 act-order", "gptq g128 extended calibration", "awq g128",
                "compressed-tensors w4a16 g128 (gptq)"):
        assert r[key] < 1.27 * ppl_fp, (key, r[key], ppl_fp)

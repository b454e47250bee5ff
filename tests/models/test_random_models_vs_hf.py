"""Small random-weight models built from transformers' own config classes, saved as HF folders
(safetensors), loaded by the engine: logits match transformers, through prefill chunks and decode."""

from __future__ import annotations

import json

import pytest
import torch

from gfx906_llm.llm import LLM
from tests.helpers import engine_logits

VOCAB = 256


def _tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w1", unk_token="w0").save_pretrained(folder)


def _make(kind: str, folder):
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  eos_token_id=1, bos_token_id=2)
    if kind == "qwen2":
        cfg = tf.Qwen2Config(**common, tie_word_embeddings=True)
    elif kind == "qwen3":
        cfg = tf.Qwen3Config(**common, head_dim=32, tie_word_embeddings=False)
    elif kind == "llama_bias":  # q/k/v and o_proj biases
        cfg = tf.LlamaConfig(**common, tie_word_embeddings=False, attention_bias=True)
    elif kind == "llama3":
        cfg = tf.LlamaConfig(**common, tie_word_embeddings=False,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    else:
        cfg = tf.MistralConfig(**common, tie_word_embeddings=False, sliding_window=None)
    torch.manual_seed(torch.seed())
    model = tf.AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so the logits are far from uniform
        for p in model.parameters():
            if p.dim() >= 1 and p.numel() > 64:
                p.mul_(5.0)
            elif p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    _tokenizer(folder)
    return model


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "llama3", "mistral", "llama_bias"])
def test_logits_match_transformers(kind, tmp_path):
    hf = _make(kind, tmp_path)
    llm = LLM(str(tmp_path), dtype="float32", max_model_len=128, kv_cache_memory_bytes=1 << 22)
    ids = torch.randint(3, VOCAB, (40,)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
    for chunks in ([40], [13, 17, 1, 1, 8], [1] * 40):
        ours = engine_logits(llm, ids, chunks)
        torch.testing.assert_close(ours, ref, atol=2e-4, rtol=2e-4)
    assert ref.std() > 0.5  # the comparison is not between near-constant logits


@pytest.mark.parametrize("form", ["partials", "accumulator"])
@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_split_k_partials_handed_to_consumers(kind, form, tmp_path, monkeypatch):
    """Every linear hands fp32 split-K partials (3 K chunks, bias left to the consumer) to the ops
    after it, as the W4A16 GEMV does on GPUs (gfx906_llm/layers/splitk.py): the fused q/k-norm +
    rotary + KV write, SiLU-and-mul and the residual RMSNorms (here their torch paths) sum them;
    or, as CUDA's ATOMIC GEMV, the sum in the shared accumulator, which every consumer must zero.
    Logits still match transformers (Qwen2: QKV bias; Qwen3: q/k norms)."""
    from gfx906_llm.layers.splitk import SplitKPartials, accumulator_buffer
    from gfx906_llm.quant.base import UnquantizedLinearMethod

    calls = []

    def apply_deferred(self, layer, x, bias=None):
        w = layer.weight  # [N, K]
        parts = [x[:, c].float() @ w[:, c].float().t() for c in torch.tensor_split(torch.arange(w.shape[1]), 3)]
        calls.append(tuple(w.shape))
        if form == "partials":
            return SplitKPartials(torch.stack(parts).contiguous(), bias, x.dtype)  # [3, M, N]
        M, N = parts[0].shape
        acc = accumulator_buffer(x.device, M * N).view(1, M, N)
        assert not bool(acc.any()), "a consumer left the accumulator dirty"
        for p in parts:
            acc[0] += p
        return SplitKPartials(acc, bias, x.dtype, accumulator=True)

    monkeypatch.setattr(UnquantizedLinearMethod, "apply_deferred", apply_deferred, raising=False)
    hf = _make(kind, tmp_path)
    llm = LLM(str(tmp_path), dtype="float32", max_model_len=128, kv_cache_memory_bytes=1 << 22)
    ids = torch.randint(3, VOCAB, (24,)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].float()
    calls.clear()
    ours = engine_logits(llm, ids, [9, 1, 14])
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=2e-4)
    assert len(calls) == 3 * 2 * 4  # 3 steps x 2 layers x (qkv, o, gate_up, down)
    assert not bool(accumulator_buffer(torch.device("cpu"), 1 << 16).any())


def test_transformers4_schema_and_bad_folders(tmp_path):
    _make("llama3", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    # rewrite in the transformers 4 schema: rope_theta + rope_scaling + torch_dtype
    rp = cfg.pop("rope_parameters", None) or {}
    cfg["rope_theta"] = 50000.0
    cfg["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"} or cfg.get("rope_scaling")
    cfg.pop("dtype", None)
    cfg["torch_dtype"] = "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    llm = LLM(str(tmp_path), dtype="float32", max_model_len=64, kv_cache_memory_bytes=1 << 20)
    mc = llm.engine.model_config
    assert mc.rope_theta == 50000.0 and mc.rope_scaling["rope_type"] == "llama3"
    assert mc.checkpoint_dtype == torch.bfloat16

    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        LLM(str(tmp_path), dtype="float32", max_model_len=64, kv_cache_memory_bytes=1 << 20)


def test_unknown_architecture_is_named(tmp_path):
    _make("qwen2", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"] = ["FancyNewForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="FancyNewForCausalLM.*supported: .*LlamaForCausalLM"):
        LLM(str(tmp_path), dtype="float32")


def test_malformed_gguf_is_named(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ValueError, match="broken.gguf"):
        LLM(str(bad))

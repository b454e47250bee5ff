"""The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (qwen2: QKV bias, separate output head;
Q4_K / Q6_K / Q5_0 / Q8_0 tensors dequantised at load) against Hugging Face transformers on
the same file: greedy tokens and log-probs."""

from __future__ import annotations

import pytest

from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams
from tests.helpers import compare_greedy_with_hf_gguf


@pytest.mark.slow
def test_qwen25_coder_matches_transformers(qwen25_coder_gguf_path):
    llm = LLM(str(qwen25_coder_gguf_path), max_model_len=256, kv_cache_memory_bytes=64 << 20)
    tok = llm.get_tokenizer()
    chat = [{"role": "user", "content": "Write a Python function that reverses a string."}]
    prompts = [llm.engine.encode(tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False),
                                 add_special_tokens=False),
               llm.engine.encode("import numpy as np\n\ndef softmax(x):")]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, logprobs=0))
    del llm
    compared = compare_greedy_with_hf_gguf(qwen25_coder_gguf_path, prompts, outs)
    assert min(compared) >= 16 and max(compared) == 32, compared
    assert "def" in outs[0].outputs[0].text

"""The real Gemma-3-270M Q4_K_M GGUF (gemma3: sliding-window layers, q/k norms, head_dim 256,
four norms per layer, embedding scaling; Q8_0/Q5_0/Q4_K/Q6_K dequantised at load) against
Hugging Face transformers on the same file: greedy tokens and log-probs."""

from __future__ import annotations

import pytest

from gfx906_llm.llm import LLM
from gfx906_llm.sampling_params import SamplingParams
from tests.helpers import compare_greedy_with_hf_gguf


@pytest.mark.slow
def test_gemma3_matches_transformers(gemma3_gguf_path):
    llm = LLM(str(gemma3_gguf_path), max_model_len=1024, kv_cache_memory_bytes=64 << 20)
    assert llm.engine.model_config.architecture == "Gemma3ForCausalLM"
    # one prompt longer than the 512-token sliding window, so the window mask matters
    long_prompt = "The history of the city goes back many centuries. " * 60
    prompts = [llm.engine.encode("The capital of France is"), llm.engine.encode("def fibonacci(n):"),
               llm.engine.encode(long_prompt)]
    assert len(prompts[2]) > 512
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=0))
    del llm
    compared = compare_greedy_with_hf_gguf(gemma3_gguf_path, prompts, outs)
    assert min(compared) >= 12 and max(compared) == 24, compared
    assert "France" in outs[0].outputs[0].text  # a base model: it rambles, but on topic

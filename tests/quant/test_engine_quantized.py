"""Quantised checkpoints of the real SmolLM2 weights, written by our tools in the standard GPTQ,
AWQ and compressed-tensors formats, loaded and run by the engine (CPU path of the W4A16 method).

Round-to-nearest codes keep this fast enough for CI; the algorithms (GPTQ, AWQ) are checked in
test_tools.py and reported by the heavy test_e2e_quantized.py. The same RTN codes written as GPTQ
and as compressed-tensors must give the same model: an end-to-end cross-check of two loaders.
"""

from __future__ import annotations

import pytest

from gfx906_llm.llm import LLM
from gfx906_llm.quant.tools.cli import main as quantize_main
from gfx906_llm.sampling_params import SamplingParams
from tests.helpers import engine_logits, perplexity
from tests.quant.test_e2e_quantized import EVAL_TEXT

FORMATS = {
    "gptq": ["--method", "rtn", "--format", "gptq", "--group-size", "64"],
    "compressed-tensors": ["--method", "rtn", "--format", "compressed-tensors", "--group-size", "64"],
    "awq": ["--method", "rtn", "--format", "awq", "--group-size", "64"],
}


def _run(folder) -> tuple[float, str, LLM]:
    llm = LLM(str(folder), max_model_len=1024, kv_cache_memory_bytes=32 << 20)
    ids = llm.engine.encode(EVAL_TEXT)
    ppl = perplexity(engine_logits(llm, ids), ids)
    ans = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0, max_tokens=16))[0].outputs[0].text
    return ppl, ans, llm


@pytest.fixture(scope="module")
def fp16_result(smollm2_fp16_dir):
    ppl, ans, _ = _run(smollm2_fp16_dir)
    assert "Paris" in ans
    return ppl


@pytest.mark.slow
def test_quantized_formats_run_in_the_engine(smollm2_fp16_dir, fp16_result, tmp_path):
    ppls = {}
    for fmt, args in FORMATS.items():
        out = tmp_path / fmt
        assert quantize_main([str(smollm2_fp16_dir), *args, "--output", str(out)]) == 0
        ppl, ans, llm = _run(out)
        method = type(llm.engine.runner.model.model.layers[0].mlp.down_proj.quant_method).__name__
        print(f"{fmt}: ppl {ppl:.3f} (fp16 {fp16_result:.3f}), {method}: {ans!r}")
        assert "Paris" in ans, (fmt, ans)
        # 4-bit RTN on a 135M model costs tens of percent here (see the closing notes), not more
        assert fp16_result < ppl < 1.8 * fp16_result, (fmt, ppl, fp16_result)
        ppls[fmt] = ppl
    assert ppls["gptq"] == pytest.approx(ppls["compressed-tensors"], rel=1e-4)

"""Offline inference: ``LLM(model).generate(prompts, SamplingParams)`` and ``LLM.chat(messages)``."""

from __future__ import annotations

from typing import Any, Sequence

from tqdm.auto import tqdm

from gfx906_llm.config import EngineConfig
from gfx906_llm.engine.engine import LLMEngine
from gfx906_llm.outputs import RequestOutput
from gfx906_llm.sampling_params import SamplingParams


class LLM:
    """A model plus engine for batch generation in this process (vLLM's ``LLM``).

    Args:
        model: HF folder, ``.gguf`` file, demo-model name, or None for the SmolLM2 demo model.
        **kwargs: any ``EngineConfig`` field (``max_model_len``, ``max_num_seqs``, ``dtype``, ...).
    """

    def __init__(self, model: str | None = None, **kwargs: Any):
        self.engine = LLMEngine(EngineConfig(model=model, **kwargs))
        self._counter = 0

    @classmethod
    def from_engine_config(cls, config: EngineConfig) -> "LLM":
        llm = cls.__new__(cls)
        llm.engine, llm._counter = LLMEngine(config), 0
        return llm

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts: str | list[int] | Sequence[str | list[int]],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids), all batched together.

        Returns:
            One finished RequestOutput per prompt, in input order.
        """
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(plist)} sampling params for {len(prompts)} prompts")
        ids = []
        for p, sp in zip(prompts, plist):
            rid = f"llm-{self._counter}"
            self._counter += 1
            self.engine.add_request(rid, p, sp)
            ids.append(rid)
        done: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(ids), desc="Generating", disable=not use_tqdm)
        while self.engine.has_unfinished_requests():
            for out in self.engine.step():
                if out.finished:
                    done[out.request_id] = out
                    bar.update(1)
        bar.close()
        return [done[r] for r in ids]

    def chat(self, messages: list[dict] | Sequence[list[dict]], sampling_params: SamplingParams | None = None,
             add_generation_prompt: bool = True, use_tqdm: bool = False, **template_kwargs: Any) -> list[RequestOutput]:
        """Apply the model's chat template (transformers) to one conversation or a list of them,
        then generate.

        Raises:
            ValueError: the tokenizer has no chat template.
        """
        tok = self.engine.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ValueError("this model has no chat template; use generate() with a plain prompt")
        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        prompts = [tok.apply_chat_template(c, add_generation_prompt=add_generation_prompt, tokenize=False,
                                           **template_kwargs) for c in convs]
        token_ids = [self.engine.encode(p, add_special_tokens=False) for p in prompts]
        return self.generate(token_ids, sampling_params, use_tqdm)

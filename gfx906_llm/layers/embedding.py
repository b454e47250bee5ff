"""Token embedding and the output head (tied or separate).

Both are ``[vocab, hidden]`` matrices held like a linear layer's weight, so a QuantConfig that
quantises embeddings (``quantizes_embeddings``: GGUF keeps ``token_embd`` in its blocks) gives
them its QuantMethod: the lookup then dequantises only the rows it needs
(``quant_method.embedding``) and the head runs the quantised GEMV/GEMM.
"""

from __future__ import annotations

import torch
from torch import nn

from gfx906_llm.layers.linear import LinearBase
from gfx906_llm.quant.base import QuantConfig


def _embedding_quant(quant_config: QuantConfig | None) -> QuantConfig | None:
    return quant_config if getattr(quant_config, "quantizes_embeddings", False) else None


class VocabEmbedding(LinearBase):
    """``[T]`` token ids -> ``[T, hidden]`` in the model dtype; weight ``[vocab, hidden]``."""

    def __init__(self, vocab_size: int, hidden_size: int, quant_config: QuantConfig | None = None,
                 prefix: str = "model.embed_tokens"):
        super().__init__(hidden_size, [vocab_size], bias=False, quant_config=_embedding_quant(quant_config),
                         prefix=prefix)
        self.params_dtype = torch.get_default_dtype()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        lookup = getattr(self.quant_method, "embedding", None)
        if lookup is not None:
            return lookup(self, input_ids).to(self.params_dtype)
        return nn.functional.embedding(input_ids, self.weight)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The tied output head: ``[N, hidden] -> [N, vocab]`` fp32."""
        return self.quant_method.apply(self, hidden).float()


class LMHead(LinearBase):
    """A separate output head: ``[N, hidden]`` -> fp32 logits ``[N, vocab]``."""

    def __init__(self, vocab_size: int, hidden_size: int, quant_config: QuantConfig | None = None,
                 prefix: str = "lm_head"):
        super().__init__(hidden_size, [vocab_size], bias=False, quant_config=_embedding_quant(quant_config),
                         prefix=prefix)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.quant_method.apply(self, hidden).float()


class TiedLMHead(nn.Module):
    """The output head of tied-embedding models: the embedding's matrix, no parameter of its own."""

    def __init__(self, embedding: VocabEmbedding):
        super().__init__()
        self._embedding = [embedding]  # a list: not registered twice as a submodule

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._embedding[0].logits(hidden)


def make_lm_head(vocab_size: int, hidden_size: int, tied_to: VocabEmbedding | None,
                 quant_config: QuantConfig | None = None) -> nn.Module:
    return TiedLMHead(tied_to) if tied_to is not None else LMHead(vocab_size, hidden_size, quant_config)

"""Llama-family decoder: Llama 2/3, Mistral, SmolLM2, Qwen2 (QKV bias) and Qwen3 (q/k RMSNorm).

Follows Hugging Face transformers' modeling_llama / modeling_qwen2 / modeling_qwen3 so that
checkpoints load by name; attention runs over the paged KV cache.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from gfx906_llm.attention.layer import Attention
from gfx906_llm.config import ModelConfig
from gfx906_llm.layers.activation import get_act_and_mul
from gfx906_llm.layers.embedding import VocabEmbedding, make_lm_head
from gfx906_llm.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from gfx906_llm.layers.norm import RMSNorm
from gfx906_llm.layers.rotary import get_rope
from gfx906_llm.models.loading import load_weights_by_name
from gfx906_llm.quant.base import QuantConfig


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, quant: QuantConfig | None, prefix: str):
        super().__init__()
        hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_size, self.kv_size = hq * d, hkv * d
        self.qkv_proj = QKVParallelLinear(cfg.hidden_size, d, hq, hkv, bias=cfg.attention_bias,
                                          quant_config=quant, prefix=f"{prefix}.qkv_proj")
        # transformers: o_proj has a bias with attention_bias (Llama, Qwen3), never on Qwen2
        self.o_proj = RowParallelLinear(hq * d, cfg.hidden_size, bias=cfg.attention_bias and cfg.model_type != "qwen2",
                                        quant_config=quant, prefix=f"{prefix}.o_proj")
        self.qk_norm = cfg.model_type == "qwen3"
        if self.qk_norm:
            self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.rotary_emb = get_rope(d, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling)
        sliding = getattr(cfg.hf_config, "sliding_window", None) if cfg.model_type == "mistral" else None
        self.attn = Attention(hq, d, hkv, d ** -0.5, sliding_window=sliding)
        self.head_dim = d

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj.forward_deferred(x)  # [T, (Hq + 2 Hkv) * D], or its split-K partials
        norms = dict(q_norm_weight=self.q_norm.weight, k_norm_weight=self.k_norm.weight,
                     norm_eps=self.q_norm.eps) if self.qk_norm else {}
        # q/k norms, rotary, the KV-cache write (one launch on GPUs), then attention; o_proj's
        # split-K partials (if any) go to the residual RMSNorm after it
        return self.o_proj.forward_deferred(self.attn(qkv, positions, self.rotary_emb.cos_sin_cache, **norms))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, quant: QuantConfig | None, prefix: str):
        super().__init__()
        i = cfg.intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(cfg.hidden_size, [i, i], bias=False, quant_config=quant,
                                                       prefix=f"{prefix}.gate_up_proj")
        self.down_proj = RowParallelLinear(i, cfg.hidden_size, bias=False, quant_config=quant,
                                           prefix=f"{prefix}.down_proj")
        self.act_fn = get_act_and_mul(getattr(cfg.hf_config, "hidden_act", "silu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x [T, d]; gate_up may hand over its split-K partials: the activation sums them; down_proj's
        # go to the next residual RMSNorm
        return self.down_proj.forward_deferred(self.act_fn(self.gate_up_proj.forward_deferred(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, quant: QuantConfig | None, prefix: str):
        super().__init__()
        self.self_attn = LlamaAttention(cfg, quant, f"{prefix}.self_attn")
        self.mlp = LlamaMLP(cfg, quant, f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, positions, hidden, residual):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, quant: QuantConfig | None, prefix: str = "model"):
        super().__init__()
        self.embed_tokens = VocabEmbedding(cfg.vocab_size, cfg.hidden_size, quant, prefix=f"{prefix}.embed_tokens")
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(cfg, quant, f"{prefix}.layers.{i}") for i in range(cfg.num_hidden_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)  # [T, d]
        residual = None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    """``forward(input_ids [T], positions [T]) -> hidden [T, d]``; ``compute_logits(hidden [N, d])
    -> [N, vocab]`` fp32."""

    # checkpoint module name -> (merged module name, shard index)
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, cfg: ModelConfig, quant_config: QuantConfig | None = None):
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg, quant_config)
        tied = self.model.embed_tokens if cfg.tie_word_embeddings else None
        self.lm_head = make_lm_head(cfg.vocab_size, cfg.hidden_size, tied, quant_config)

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self.model.layers]

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def load_weights(self, weights: Iterable[tuple[str, object]]) -> set[str]:
        skip = ("rotary_emb.inv_freq",)
        if self.config.tie_word_embeddings:
            skip = skip + ("lm_head.weight",)
        return load_weights_by_name(self, weights, self.packed_modules_mapping, skip_suffixes=skip)

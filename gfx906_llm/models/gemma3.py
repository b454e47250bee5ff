"""Gemma 3 text decoder (transformers' modeling_gemma3, ``Gemma3ForCausalLM``).

Differences from Llama: embeddings scaled by ``sqrt(hidden_size)``; RMSNorm multiplies by
``1 + weight``; four norms per layer (pre/post attention, pre/post feed-forward); q/k RMSNorm;
softmax scale ``query_pre_attn_scalar ** -0.5``; sliding-window layers (``layer_types``) with
their own rope base; GeGLU (tanh GELU) MLP; optional attention and final logit soft-capping.
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


def _layer_rope(hf, layer_type: str) -> tuple[float, dict | None]:
    """Rope base and scaling of a layer type (transformers 5 nests them per type; 4 used
    ``rope_theta`` for global layers and ``rope_local_base_freq`` for sliding ones)."""
    params = getattr(hf, "rope_parameters", None)
    if isinstance(params, dict) and layer_type in params:
        p = dict(params[layer_type])
        theta = float(p.get("rope_theta", 10000.0))
        return theta, (p if p.get("rope_type", "default") != "default" else None)
    if layer_type == "sliding_attention":
        return float(getattr(hf, "rope_local_base_freq", 10000.0)), None
    scaling = getattr(hf, "rope_scaling", None)
    return float(getattr(hf, "rope_theta", 1e6)), scaling


def _layer_types(hf, n: int) -> list[str]:
    types = getattr(hf, "layer_types", None)
    if types:
        return list(types)
    pattern = int(getattr(hf, "sliding_window_pattern", getattr(hf, "_sliding_window_pattern", 6)))
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]


class Gemma3Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_type: str, quant: QuantConfig | None, prefix: str):
        super().__init__()
        hf = cfg.hf_config
        hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_size, self.kv_size, self.head_dim = hq * d, hkv * d, d
        self.qkv_proj = QKVParallelLinear(cfg.hidden_size, d, hq, hkv, bias=cfg.attention_bias,
                                          quant_config=quant, prefix=f"{prefix}.qkv_proj")
        self.o_proj = RowParallelLinear(hq * d, cfg.hidden_size, bias=cfg.attention_bias, quant_config=quant,
                                        prefix=f"{prefix}.o_proj")  # transformers: bias=attention_bias
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps, offset=1.0)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps, offset=1.0)
        theta, scaling = _layer_rope(hf, layer_type)
        self.rotary_emb = get_rope(d, cfg.max_position_embeddings, theta, scaling)
        sliding = getattr(hf, "sliding_window", None) if layer_type == "sliding_attention" else None
        scale = float(getattr(hf, "query_pre_attn_scalar", d)) ** -0.5
        self.attn = Attention(hq, d, hkv, scale, sliding_window=sliding,
                              soft_cap=getattr(hf, "attn_logit_softcapping", None))

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj.forward_deferred(x)  # [T, (Hq + 2 Hkv) * D], or its split-K partials
        # q/k norms (Gemma's 1 + weight), rotary, the KV-cache write (one launch on GPUs), attention
        q = self.attn(qkv, positions, self.rotary_emb.cos_sin_cache, self.q_norm.weight,
                      self.k_norm.weight, self.q_norm.eps, norm_offset=1.0)
        return self.o_proj.forward_deferred(q)  # partials (if any) go to post_attention_layernorm


class Gemma3MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, quant: QuantConfig | None, prefix: str):
        super().__init__()
        i = cfg.intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(cfg.hidden_size, [i, i], quant_config=quant,
                                                       prefix=f"{prefix}.gate_up_proj")
        self.down_proj = RowParallelLinear(i, cfg.hidden_size, quant_config=quant, prefix=f"{prefix}.down_proj")
        act = getattr(cfg.hf_config, "hidden_activation", None) or getattr(cfg.hf_config, "hidden_act", "gelu_pytorch_tanh")
        self.act_fn = get_act_and_mul(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x [T, d]; split-K partials go to the activation and to post_feedforward_layernorm
        return self.down_proj.forward_deferred(self.act_fn(self.gate_up_proj.forward_deferred(x)))


class Gemma3DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_type: str, quant: QuantConfig | None, prefix: str):
        super().__init__()
        eps, h = cfg.rms_norm_eps, cfg.hidden_size
        self.self_attn = Gemma3Attention(cfg, layer_type, quant, f"{prefix}.self_attn")
        self.mlp = Gemma3MLP(cfg, quant, f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(h, eps, offset=1.0)
        self.post_attention_layernorm = RMSNorm(h, eps, offset=1.0)
        self.pre_feedforward_layernorm = RMSNorm(h, eps, offset=1.0)
        self.post_feedforward_layernorm = RMSNorm(h, eps, offset=1.0)

    def forward(self, positions, hidden, residual):
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.post_attention_layernorm(self.self_attn(positions, hidden))
        hidden, residual = self.pre_feedforward_layernorm(hidden, residual)
        return self.post_feedforward_layernorm(self.mlp(hidden)), residual


class Gemma3Model(nn.Module):
    def __init__(self, cfg: ModelConfig, quant: QuantConfig | None, prefix: str = "model"):
        super().__init__()
        self.embed_tokens = VocabEmbedding(cfg.vocab_size, cfg.hidden_size, quant, prefix=f"{prefix}.embed_tokens")
        types = _layer_types(cfg.hf_config, cfg.num_hidden_layers)
        self.layers = nn.ModuleList(
            Gemma3DecoderLayer(cfg, types[i], quant, f"{prefix}.layers.{i}") for i in range(cfg.num_hidden_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, offset=1.0)
        self.embed_scale = cfg.hidden_size ** 0.5

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)  # [T, d]
        hidden = hidden * torch.tensor(self.embed_scale, dtype=hidden.dtype)  # HF rounds the scale to the dtype
        residual = None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class Gemma3ForCausalLM(nn.Module):
    """``forward(input_ids [T], positions [T]) -> [T, d]``; ``compute_logits -> [N, vocab]`` fp32."""

    packed_modules_mapping = {
        "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }
    #: GGUF files store Gemma's norm weights as ``1 + w`` (llama.cpp's converter)
    gguf_norm_offset = 1.0

    def __init__(self, cfg: ModelConfig, quant_config: QuantConfig | None = None):
        super().__init__()
        self.config = cfg
        self.model = Gemma3Model(cfg, quant_config)
        tied = self.model.embed_tokens if cfg.tie_word_embeddings else None
        self.lm_head = make_lm_head(cfg.vocab_size, cfg.hidden_size, tied, quant_config)
        self.final_logit_softcapping = getattr(cfg.hf_config, "final_logit_softcapping", None)

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self.model.layers]

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        if self.final_logit_softcapping:
            cap = self.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def load_weights(self, weights: Iterable[tuple[str, object]]) -> set[str]:
        skip = ("rotary_emb.inv_freq",) + (("lm_head.weight",) if self.config.tie_word_embeddings else ())
        return load_weights_by_name(self, weights, self.packed_modules_mapping, skip_suffixes=skip)

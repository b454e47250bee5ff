"""Random-weight Llama models in fp16, GPTQ and GGUF form, for speed measurements at real size.

``python -m gfx906_llm.bench.random_model --format fp16|gptq|gguf-q4_k --shape llama3-8b|tiny --out PATH
[--device cuda|cpu] [--seed N] [--overwrite]`` writes a model that our loaders (and transformers,
AutoGPTQ, vLLM, llama.cpp) read like a downloaded one and prints one JSON line {format, shape, path,
bytes, seconds, ...}. Speed does not depend on the values; they are scaled (weight std 0.02, norms 1)
so that fp16 activations stay finite through all layers:

* fp16: HF folder, ``model-0000i-of-0000n.safetensors`` shards <= 4e9 bytes + index; ``N(0, 0.02^2)``.
* gptq: the same in GPTQ v1 (``quant/gptq.py``): 4 bits, group 128, sym, desc_act false. ``qweight``
  is random bits with each 0 nibble made 8: codes 1..15, symmetric about the zero 8 (uniform 0..15
  has mean 7.5, a bias that grows over the layers); scales ``U(0.75, 1.25) * 0.02 / sqrt(E[(q-8)^2])``.
* gguf-q4_k: one GGUF file (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) typed as
  llama.cpp's Q4_K_M types Llama-3-8B: linears and ``token_embd`` Q4_K, ``output`` Q6_K
  (``--gguf-output-type``), norms F32, ``rope_freqs`` F32 (llama3 scaling, as convert_hf_to_gguf.py
  writes it). Blocks are random bytes but for the fp16 d/dmin (Q4_K ``d * sc * q - dmin * m`` with
  dmin = 7.5 d: zero mean; Q6_K int8 scales kept in [-16, 15] so that d is a normal fp16), set for
  std 0.02 (block layouts: gguf-py ``quants.py``).

The tokenizer is a byte-level BPE of exactly ``vocab`` tokens (256 GPT-2 byte symbols, merges that
append one letter, Llama-3.1's special tokens on top: bos ``<|begin_of_text|>``, eos ``<|eot_id|>``),
so every id decodes. Tensors are made on ``--device`` one linear at a time and streamed to disk:
host memory holds one tensor (at most the 1 GB embedding), never the model.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

FORMATS = ("fp16", "gptq", "gguf-q4_k")
STD = 0.02
SHARD_BYTES = 4 * 10**9
GROUP = 128
Q4_K, Q6_K, F16 = 12, 14, 1  # GGML types (gguf-py GGMLQuantizationType)
_Q = {Q4_K: (256, 144), Q6_K: (256, 210), F16: (1, 2)}  # elements, bytes per block
# Q4_K (sc, m ~ U{0..63}, q ~ U{0..15}, dmin = 7.5 d): E[w^2] / d^2 = E[sc^2] E[q^2] - 15 E[sc] E[q] E[m]
# + 7.5^2 E[m^2], E[sc^2] = E[m^2] = 1333.5, E[q^2] = 77.5; Q6_K (s ~ U{-16..15}, q-32 ~ U{-32..31}): 85.5 * 341.5
Q4K_D, Q6K_D = STD / math.sqrt(1333.5 * 77.5 - 15 * 31.5 * 7.5 * 31.5 + 56.25 * 1333.5), STD / math.sqrt(85.5 * 341.5)
GPTQ_SCALE = STD / math.sqrt(17.5)  # codes 1..15, P(8) = 2/16: E[(q-8)^2] = 2 * 140 / 16
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                 "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
ROPE_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}  # Llama-3.1-8B


# n_special: special tokens at the top of the vocabulary (Llama 3: 256); max_pos: max_position_embeddings
Shape = NamedTuple("Shape", [("hidden", int), ("intermediate", int), ("layers", int), ("heads", int), ("kv_heads", int),
                             ("head_dim", int), ("vocab", int), ("n_special", int), ("max_pos", int)])


SHAPES = {
    "llama3-8b": Shape(4096, 14336, 32, 32, 8, 128, 128256, 256, 8192),
    # smallest size where K divides by the GPTQ group (128) and the K-quant block (256)
    "tiny": Shape(256, 512, 2, 4, 2, 64, 512, 16, 8192),
}
_SPECIAL_NAMES = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]


def special_ids(s: Shape) -> dict[str, int]:
    base = s.vocab - s.n_special
    return {"bos": base, "end_of_text": base + 1, "eom": base + 8, "eot": base + 9}


# ---- tokenizer ----------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (openai/gpt-2 ``encoder.py``)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    other = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(other)}}


def build_vocab(s: Shape) -> tuple[list[str], list[str]]:
    """``(tokens, merges)``: ``s.vocab`` tokens in byte-level spelling (id = index) and the BPE
    merges ``"left right"`` in rank order (each merge creates the token at id 256 + rank)."""
    b2u = _bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    letters = [b2u[c] for c in range(ord("a"), ord("z") + 1)]
    n_merges = s.vocab - s.n_special - 256
    merges: list[str] = []
    level = [b2u[ord(" ")]] + letters  # strings that get one more letter appended
    while len(merges) < n_merges:
        nxt = []
        for prefix in level:  # Ġ-prefixed strings first at each level
            for c in letters:
                if len(merges) == n_merges:
                    break
                merges.append(f"{prefix} {c}")
                tokens.append(prefix + c)
                nxt.append(prefix + c)
        level = nxt
    extra = s.n_special - len(_SPECIAL_NAMES)  # Llama 3.1: reserved_special_token_3 .. _247
    tokens += (_SPECIAL_NAMES + [f"<|reserved_special_token_{i}|>" for i in range(3, extra + 3)])[: s.n_special]
    assert len(tokens) == s.vocab and len(set(tokens)) == s.vocab
    return tokens, merges


def write_tokenizer(out: Path, s: Shape) -> None:
    """tokenizer.json (``tokenizers`` BPE, Llama-3 pre-tokenizer) and tokenizer_config.json."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens, merges = build_vocab(s)
    ids = special_ids(s)
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in merges])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    bos = tokens[ids["bos"]]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                                       special_tokens=[(bos, ids["bos"])])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens[s.vocab - s.n_special:]])
    tok.save(str(out / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": tokens[ids["eot"]],
           "model_max_length": s.max_pos, "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


# ---- tensors ------------------------------------------------------------------------------------
def linears(s: Shape) -> list[tuple[str, str, int, int]]:
    """``(HF suffix, GGUF name, N, K)`` of one layer's linears."""
    q, kv, h, i = s.heads * s.head_dim, s.kv_heads * s.head_dim, s.hidden, s.intermediate
    return [("self_attn.q_proj", "attn_q", q, h), ("self_attn.k_proj", "attn_k", kv, h),
            ("self_attn.v_proj", "attn_v", kv, h), ("self_attn.o_proj", "attn_output", h, q),
            ("mlp.gate_proj", "ffn_gate", i, h), ("mlp.up_proj", "ffn_up", i, h), ("mlp.down_proj", "ffn_down", h, i)]


class _Rand:
    """Random tensors made on ``device`` from one seeded generator, returned on the CPU."""

    def __init__(self, device: str, seed: int):
        self.dev = torch.device(device)
        self.g = torch.Generator(device=self.dev).manual_seed(seed)

    def normal(self, *shape: int) -> torch.Tensor:  # fp16 N(0, STD^2)
        return (torch.randn(shape, generator=self.g, device=self.dev, dtype=torch.float16) * STD).cpu()

    def bytes(self, *shape: int) -> torch.Tensor:  # uint8, on the device
        return torch.randint(0, 256, shape, generator=self.g, device=self.dev, dtype=torch.uint8)

    def gptq(self, n: int, k: int) -> dict[str, torch.Tensor]:
        """GPTQ v1 tensors of one [N, K] linear (quant/gptq.py layout), symmetric codes around 8."""
        from gfx906_llm.quant.packing import pack_int32

        g = k // GROUP
        w = self.bytes(k // 8 * n * 4).view(torch.int32).view(k // 8, n)  # [K/8, N] random nibbles
        zero = ~(w | (w >> 1) | (w >> 2) | (w >> 3)) & 0x11111111  # bit 0 of each nibble that is 0
        qweight = w | (zero << 3)  # nibble 0 -> 8: codes 1..15, 8 twice as likely, mean 8
        u = torch.rand((g, n), generator=self.g, device=self.dev)
        scales = ((0.75 + 0.5 * u) * GPTQ_SCALE).half()  # [K/128, N]
        qzeros = pack_int32(torch.full((g, n), 7, dtype=torch.int32), 4, dim=1)  # v1 stores zero - 1 = 7
        g_idx = torch.arange(k, dtype=torch.int32) // GROUP
        return {"qweight": qweight.cpu(), "qzeros": qzeros, "scales": scales.cpu(), "g_idx": g_idx}

    def blocks(self, qtype: int, n: int, k: int) -> np.ndarray:
        """uint8 ``[N, K / 256 * bytes]``: random Q4_K / Q6_K blocks with d (and dmin) set."""
        qk, nbytes = _Q[qtype]
        raw = self.bytes(n * k // qk, nbytes)  # [blocks, bytes]
        if qtype == Q4_K:  # d, dmin, 12 scale bytes, 128 qs bytes
            dd = torch.tensor([Q4K_D, 7.5 * Q4K_D], dtype=torch.float16).view(torch.uint8)
            raw[:, :4] = dd.to(self.dev)
        else:  # Q6_K: 128 ql, 64 qh, 16 int8 scales, d
            raw[:, 192:208] = ((raw[:, 192:208] & 31).to(torch.int16) - 16).to(torch.int8).view(torch.uint8)
            raw[:, 208:] = torch.tensor([Q6K_D], dtype=torch.float16).view(torch.uint8).to(self.dev)
        return raw.cpu().numpy().reshape(n, k // qk * nbytes)


Entry = tuple[list[tuple[str, str, tuple[int, ...]]], Callable[[], list[torch.Tensor]]]


def hf_entries(s: Shape, fmt: str, rnd: _Rand) -> list[Entry]:
    """Every tensor in file order, in groups made together: ``([(name, safetensors dtype, shape)],
    maker)`` where ``maker()`` returns the group's tensors (on the CPU)."""
    def norm(name: str) -> Entry:
        return [(name, "F16", (s.hidden,))], lambda: [torch.ones(s.hidden, dtype=torch.float16)]

    def dense(name: str, n: int, k: int) -> Entry:
        return [(name, "F16", (n, k))], lambda: [rnd.normal(n, k)]

    out = [dense("model.embed_tokens.weight", s.vocab, s.hidden)]
    for i in range(s.layers):
        p = f"model.layers.{i}"
        out.append(norm(f"{p}.input_layernorm.weight"))
        for suffix, _, n, k in linears(s):
            if fmt == "fp16":
                out.append(dense(f"{p}.{suffix}.weight", n, k))
            else:
                g = k // GROUP
                specs = [(f"{p}.{suffix}.qweight", "I32", (k // 8, n)), (f"{p}.{suffix}.qzeros", "I32", (g, n // 8)),
                         (f"{p}.{suffix}.scales", "F16", (g, n)), (f"{p}.{suffix}.g_idx", "I32", (k,))]
                out.append((specs, lambda n=n, k=k: list(rnd.gptq(n, k).values())))
            if suffix == "self_attn.o_proj":
                out.append(norm(f"{p}.post_attention_layernorm.weight"))
    return out + [norm("model.norm.weight"), dense("lm_head.weight", s.vocab, s.hidden)]


_ST_DTYPES = {"F16": torch.float16, "F32": torch.float32, "I32": torch.int32}


def write_safetensors(out: Path, entries: list[Entry]) -> list[str]:
    """Shards of <= SHARD_BYTES (``model-0000i-of-0000n.safetensors``, one file: ``model.safetensors``)
    and the index, streamed group by group (safetensors format: u64 header length, JSON header,
    raw little-endian data; https://github.com/huggingface/safetensors#format)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for e in entries:
        nb = sum(math.prod(shape) * _ST_DTYPES[dt].itemsize for _, dt, shape in e[0])
        if shards[-1] and size + nb > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += nb
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map, total = {}, 0
    for fname, shard in zip(names, shards):
        header: dict = {"__metadata__": {"format": "pt"}}
        off = 0
        for name, dt, shape in (spec for specs, _ in shard for spec in specs):
            nb = math.prod(shape) * _ST_DTYPES[dt].itemsize
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + nb]}
            off += nb
            weight_map[name] = fname
        total += off
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        with open(out / fname, "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb)
            for specs, make in shard:
                for (name, dt, shape), t in zip(specs, make(), strict=True):
                    assert t.dtype == _ST_DTYPES[dt] and tuple(t.shape) == shape, (name, t.dtype, t.shape)
                    t.contiguous().numpy().tofile(f)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return names


def hf_config(s: Shape, fmt: str) -> dict:
    ids = special_ids(s)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s.hidden,
           "intermediate_size": s.intermediate, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
           "num_key_value_heads": s.kv_heads, "head_dim": s.head_dim, "vocab_size": s.vocab, "rms_norm_eps": 1e-5,
           "rope_theta": 500000.0, "rope_scaling": dict(ROPE_SCALING), "max_position_embeddings": s.max_pos,
           "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
           "bos_token_id": ids["bos"], "eos_token_id": [ids["end_of_text"], ids["eom"], ids["eot"]],
           "torch_dtype": "float16", "dtype": "float16"}
    if fmt == "gptq":
        from gfx906_llm.quant.tools.writers import gptq_quantize_config

        cfg["quantization_config"] = gptq_quantize_config(4, GROUP, desc_act=False, sym=True, method="random")
    return cfg


def write_hf(out: Path, s: Shape, fmt: str, rnd: _Rand) -> None:
    """An HF folder: config.json, generation_config.json, tokenizer, safetensors shards (+ index)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = hf_config(s, fmt)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if fmt == "gptq":
        (out / "quantize_config.json").write_text(json.dumps(cfg["quantization_config"], indent=2))
    gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"], "temperature": 0.6, "top_p": 0.9}
    (out / "generation_config.json").write_text(json.dumps({**gen, "do_sample": True}, indent=2))
    write_tokenizer(out, s)
    write_safetensors(out, hf_entries(s, fmt, rnd))


# ---- GGUF ---------------------------------------------------------------------------------------
def llama3_rope_factors(s: Shape) -> np.ndarray:
    """float32 ``[head_dim / 2]`` ``rope_freqs`` (llama.cpp convert_hf_to_gguf.py, LlamaModel)."""
    r = ROPE_SCALING
    old, lo, hi = r["original_max_position_embeddings"], r["low_freq_factor"], r["high_freq_factor"]
    wl = 2 * math.pi * 500000.0 ** (np.arange(0, s.head_dim, 2, dtype=np.float64) / s.head_dim)  # wavelengths
    smooth = (old / wl - lo) / (hi - lo)
    mid = 1 / ((1 - smooth) / r["factor"] + smooth)
    return np.where(wl < old / hi, 1.0, np.where(wl > old / lo, r["factor"], mid)).astype(np.float32)


def write_gguf(path: Path, s: Shape, rnd: _Rand, output_type: int = Q6_K) -> None:
    """One GGUF file, header first, then each tensor as it is made (GGUFWriter's streaming API)."""
    import gguf

    ids = special_ids(s)
    tokens, merges = build_vocab(s)
    types = [gguf.TokenType.NORMAL] * (s.vocab - s.n_special) + [gguf.TokenType.CONTROL] * s.n_special
    w = gguf.GGUFWriter(path, "llama")
    for fn, v in (("name", f"random-llama3-{'8b' if s.layers == 32 else 'tiny'}"), ("block_count", s.layers),
                  ("context_length", s.max_pos), ("embedding_length", s.hidden), ("head_count", s.heads),
                  ("feed_forward_length", s.intermediate), ("head_count_kv", s.kv_heads),
                  ("rope_freq_base", 500000.0), ("layer_norm_rms_eps", 1e-5), ("vocab_size", s.vocab),
                  ("file_type", gguf.LlamaFileType.MOSTLY_Q4_K_M), ("rope_dimension_count", s.head_dim),
                  ("key_length", s.head_dim), ("value_length", s.head_dim), ("tokenizer_model", "gpt2"),
                  ("tokenizer_pre", "llama-bpe"), ("token_list", tokens), ("token_types", types),
                  ("token_merges", merges), ("bos_token_id", ids["bos"]), ("eos_token_id", ids["eot"]),
                  ("add_bos_token", True), ("chat_template", CHAT_TEMPLATE),
                  ("quantization_version", gguf.GGML_QUANT_VERSION)):
        getattr(w, f"add_{fn}")(v)

    def quant(qtype: int, n: int, k: int):  # (dtype, numpy shape, raw GGML type, maker)
        if qtype == F16:
            return np.float16, (n, k), None, lambda: rnd.normal(n, k).numpy()
        qk, nb = _Q[qtype]
        return np.uint8, (n, k // qk * nb), qtype, lambda: rnd.blocks(qtype, n, k)

    norm = (np.float32, (s.hidden,), None, lambda: np.ones(s.hidden, dtype=np.float32))
    plan = [("rope_freqs.weight", (np.float32, (s.head_dim // 2,), None, lambda: llama3_rope_factors(s))),
            ("token_embd.weight", quant(Q4_K, s.vocab, s.hidden))]
    for i in range(s.layers):
        plan.append((f"blk.{i}.attn_norm.weight", norm))
        for _, gname, n, k in linears(s):
            plan.append((f"blk.{i}.{gname}.weight", quant(Q4_K, n, k)))
            if gname == "attn_output":
                plan.append((f"blk.{i}.ffn_norm.weight", norm))
    plan += [("output_norm.weight", norm), ("output.weight", quant(output_type, s.vocab, s.hidden))]
    for name, (dt, shape, qtype, _) in plan:
        w.add_tensor_info(name, shape, np.dtype(dt), math.prod(shape) * np.dtype(dt).itemsize,
                          raw_dtype=None if qtype is None else gguf.GGMLQuantizationType(qtype))
    w.write_header_to_file(path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, (dt, shape, _, make) in plan:
        arr = make()
        assert arr.dtype == dt and arr.shape == shape, (name, arr.dtype, arr.shape)
        w.write_tensor_data(arr)
    w.close()


# ---- CLI ----------------------------------------------------------------------------------------
def write_model(fmt: str, shape: str, out: str | Path, device: str = "cpu", seed: int = 0,
                gguf_output_type: str = "q6_k", overwrite: bool = False) -> dict:
    """Write one random model; returns the summary dict.

    Args:
        out: a folder for fp16/gptq; for gguf-q4_k a ``.gguf`` file, or a folder to put one in.
    Raises:
        ValueError: unknown format/shape/device/output type, or ``out`` exists (without overwrite).
    """
    otypes = {"q6_k": Q6_K, "q4_k": Q4_K, "f16": F16}
    for flag, v, ok in (("format", fmt, FORMATS), ("shape", shape, tuple(SHAPES)),
                        ("gguf-output-type", gguf_output_type, tuple(otypes))):
        if v not in ok:
            raise ValueError(f"--{flag} {v!r}: expected one of {ok}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    out = Path(out)
    if fmt == "gguf-q4_k" and out.suffix != ".gguf":
        out = out / f"random-{shape}-Q4_K_M.gguf"
    if out.exists() and (out.is_file() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out} exists; remove it or pass --overwrite")
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    s, rnd = SHAPES[shape], _Rand(device, seed)
    t0 = time.monotonic()
    if fmt == "gguf-q4_k":
        out.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(out, s, rnd, otypes[gguf_output_type])
        nbytes = out.stat().st_size
    else:
        write_hf(out, s, fmt, rnd)
        nbytes = sum(f.stat().st_size for f in out.iterdir())
    return {"format": fmt, "shape": shape, "path": str(out), "bytes": nbytes,
            "seconds": round(time.monotonic() - t0, 2), "device": device, "seed": seed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--shape", default="llama3-8b", choices=tuple(SHAPES))
    p.add_argument("--out", required=True, help="folder (fp16, gptq) or .gguf file / folder (gguf-q4_k)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where numbers are made")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gguf-output-type", default="q6_k", choices=("q6_k", "q4_k", "f16"), help="output.weight")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    a = p.parse_args(argv)
    try:
        print(json.dumps(write_model(a.format, a.shape, a.out, a.device, a.seed, a.gguf_output_type, a.overwrite)))
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

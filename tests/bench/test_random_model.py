"""Random-weight models (gfx906_llm/bench/random_model.py) at the tiny shape: each format is written,
read back independently (safetensors / gguf-py / transformers), served by our engine on the CPU,
and the GPTQ model is checked against a dense folder holding its independently dequantised weights.
The 8B shape is only planned here (parameter count, sizes, shards), not written."""

from __future__ import annotations

import json
import math
import random
import shutil
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gfx906_llm.bench import random_model as rm

TINY = rm.SHAPES["tiny"]
ENGINE = dict(device="cpu", dtype="float32", max_model_len=128, kv_cache_memory_bytes=1 << 22)
PROMPT = "the quick brown fox, with 12 dogs!"


@pytest.fixture
def seed():
    s = int(time.time() * 1000) % 2**31
    print(f"seed={s}")
    return s


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GFX906_LLM_CACHE", str(tmp_path / "cache"))  # GGUF metadata cache


def _llm(path, **kw):
    from gfx906_llm.llm import LLM

    return LLM(str(path), **{**ENGINE, **kw})


def _greedy(llm, n=8):
    from gfx906_llm.sampling_params import SamplingParams

    prompt = llm.engine.encode(PROMPT)
    out = llm.generate([prompt], SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))[0].outputs[0]
    assert len(out.token_ids) == n and all(0 <= t < TINY.vocab for t in out.token_ids)
    llm.get_tokenizer().decode(out.token_ids)  # every id decodes
    return prompt, out.token_ids


def _read_all(folder) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            out.update({k: sf.get_tensor(k) for k in sf.keys()})
    return out


def test_vocab_and_tokenizer(tmp_path):
    for shape in (TINY, rm.SHAPES["llama3-8b"]):
        tokens, merges = rm.build_vocab(shape)
        assert len(tokens) == len(set(tokens)) == shape.vocab
        known = set(tokens[:256])
        for rank, m in enumerate(merges):  # every merge joins known tokens into the next id
            a, b = m.split(" ")
            assert a in known and b in known and tokens[256 + rank] == a + b
            known.add(a + b)
    big = rm.special_ids(rm.SHAPES["llama3-8b"])
    assert (big["bos"], big["eot"]) == (128000, 128009)  # Llama-3's ids
    assert tokens[128255] == "<|reserved_special_token_247|>" and tokens[128010] == "<|python_tag|>"  # last shape
    rm.write_tokenizer(tmp_path, TINY)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == TINY.vocab and tok.bos_token_id == rm.special_ids(TINY)["bos"]
    assert tok.eos_token_id == rm.special_ids(TINY)["eot"]
    for i in range(TINY.vocab):
        assert isinstance(tok.decode([i]), str)
    text = "Hello wörld\n  the 123 <x>"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and tok.decode(ids[1:]) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llama3_8b_plan():
    """The 8B shapes without writing: Llama-3.1-8B's parameter count, shard sizes, file sizes."""
    s = rm.SHAPES["llama3-8b"]
    rnd = rm._Rand("cpu", 0)
    fp16 = [spec for specs, _ in rm.hf_entries(s, "fp16", rnd) for spec in specs]
    assert sum(math.prod(shape) for _, _, shape in fp16) == 8_030_261_248
    assert len(fp16) == 291
    gptq = rm.hf_entries(s, "gptq", rnd)
    nbytes = sum(math.prod(sh) * rm._ST_DTYPES[dt].itemsize for specs, _ in gptq for _, dt, sh in specs)
    assert 5.6e9 < nbytes < 5.8e9  # 4-bit linears + fp16 embedding and lm_head (1 GB each)


def test_fp16_tiny_sharded_matches_transformers(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(rm, "SHARD_BYTES", 1 << 20)  # force shards + index at the tiny size
    out = tmp_path / "fp16"
    res = rm.write_model("fp16", "tiny", out, "cpu", seed)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    n = len(shards)
    assert n >= 2 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert all(p.stat().st_size <= rm.SHARD_BYTES + 4096 for p in out.glob("*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert res["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    sd = _read_all(out)
    assert set(sd) == set(index["weight_map"])
    w = sd["model.layers.1.mlp.down_proj.weight"]
    assert w.dtype == torch.float16 and abs(w.float().std().item() - rm.STD) < 0.002
    assert bool((sd["model.norm.weight"] == 1).all())

    from transformers import AutoModelForCausalLM

    prompt, ours = _greedy(_llm(out))
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    logits = hf(torch.tensor([prompt + ours])).logits[0, len(prompt) - 1:-1]
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a != b:  # allowed only at a near-tie of the reference
            assert float(logits[i, b] - logits[i, a]) < 1e-3, (i, a, b)
            break


def _unpack_gptq(sd: dict, name: str) -> torch.Tensor:
    """Independent numpy GPTQ v1 dequantisation -> fp32 W [N, K]."""
    qw = sd[f"{name}.qweight"].numpy().view(np.uint32)  # [K/8, N]
    qz = sd[f"{name}.qzeros"].numpy().view(np.uint32)  # [G, N/8]
    sc = sd[f"{name}.scales"].float().numpy()  # [G, N]
    shifts = (np.arange(8, dtype=np.uint32) * 4)
    q = ((qw[:, None, :] >> shifts[None, :, None]) & 15).reshape(-1, qw.shape[1]).astype(np.float32)  # [K, N]
    z = (((qz[:, :, None] >> shifts[None, None, :]) & 15).reshape(qz.shape[0], -1) + 1).astype(np.float32)  # v1
    g = sd[f"{name}.g_idx"].numpy().astype(np.int64)
    assert np.array_equal(g, np.arange(q.shape[0]) // rm.GROUP)
    assert q.min() >= 1 and q.max() <= 15 and np.all(z == 8)
    return torch.from_numpy(((q - z[g]) * sc[g]).T.copy())


def test_gptq_tiny_matches_dense_dequantised(tmp_path, seed):
    from gfx906_llm.quant.packing import dequantize_internal
    from tests.helpers import engine_logits

    out = tmp_path / "gptq"
    rm.write_model("gptq", "tiny", out, "cpu", seed)
    cfg = json.loads((out / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert [qc[k] for k in ("quant_method", "bits", "group_size", "sym", "desc_act")] == ["gptq", 4, 128, True, False]
    assert json.loads((out / "quantize_config.json").read_text()) == qc
    sd = _read_all(out)
    assert sd["model.layers.0.self_attn.q_proj.qweight"].dtype == torch.int32
    assert sd["model.embed_tokens.weight"].dtype == torch.float16 and "lm_head.weight" in sd
    dense = {k: v.float() for k, v in sd.items() if v.is_floating_point() and not k.endswith(".scales")}
    for name in {k.rsplit(".", 1)[0] for k in sd if k.endswith(".qweight")}:
        dense[f"{name}.weight"] = _unpack_gptq(sd, name)
    codes = torch.cat([_unpack_gptq({**sd, f"{n}.scales": torch.ones_like(sd[f"{n}.scales"])}, n).flatten() + 8
                       for n in ["model.layers.0.mlp.down_proj", "model.layers.1.self_attn.k_proj"]])
    counts = torch.bincount(codes.round().long(), minlength=16)
    assert counts[0] == 0 and counts[8] > 1.5 * counts[1:8].float().mean()  # 0 -> 8 (all nibble positions)
    assert abs(dense["model.layers.1.mlp.gate_proj.weight"].std().item() - rm.STD) < 0.003
    assert abs(dense["model.layers.1.mlp.gate_proj.weight"].mean().item()) < 5e-4  # no bias

    gptq = _llm(out)
    layers = gptq.engine.runner.model.model.layers
    for i, layer in enumerate(layers):  # our loader's dequantised weights == the independent unpack
        for mod, parts in ((layer.self_attn.qkv_proj, ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                           (layer.self_attn.o_proj, ("self_attn.o_proj",)),
                           (layer.mlp.gate_up_proj, ("mlp.gate_proj", "mlp.up_proj")),
                           (layer.mlp.down_proj, ("mlp.down_proj",))):
            got = dequantize_internal(mod.quant_method.packed_weight(mod), torch.float32)
            ref = torch.cat([dense[f"model.layers.{i}.{p}.weight"] for p in parts])
            torch.testing.assert_close(got, ref, rtol=0, atol=0)

    ref_dir = tmp_path / "dense"
    ref_dir.mkdir()
    save_file({k: v.contiguous() for k, v in dense.items()}, str(ref_dir / "model.safetensors"))
    del cfg["quantization_config"]
    cfg["dtype"] = cfg["torch_dtype"] = "float32"
    (ref_dir / "config.json").write_text(json.dumps(cfg))
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(out / f, ref_dir / f)
    prompt, q_ids = _greedy(gptq)
    ref_llm = _llm(ref_dir)
    _, d_ids = _greedy(ref_llm)
    lq = engine_logits(gptq, prompt + q_ids)
    ld = engine_logits(ref_llm, prompt + q_ids)
    torch.testing.assert_close(lq, ld, rtol=1e-4, atol=1e-4)
    for i, (a, b) in enumerate(zip(q_ids, d_ids)):
        if a != b:  # the two may part only at a near-tie
            row = ld[len(prompt) - 1 + i]
            assert float(row[b] - row[a]) < 1e-3, (i, a, b)
            break


def test_gguf_tiny(tmp_path, seed):
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize

    from gfx906_llm.loader.gguf import open_gguf

    path = tmp_path / "m.gguf"
    res = rm.write_model("gguf-q4_k", "tiny", path, "cpu", seed)
    assert res["path"] == str(path) and res["bytes"] == path.stat().st_size
    r = open_gguf(path)
    types = {t.name: (t.tensor_type, tuple(int(x) for x in t.shape)) for t in r.tensors}
    assert len(types) == 1 + 2 + TINY.layers * 9 + 1
    h, i = TINY.hidden, TINY.intermediate
    assert types["token_embd.weight"] == (T.Q4_K, (h, TINY.vocab))
    assert types["output.weight"] == (T.Q6_K, (h, TINY.vocab))
    assert types["blk.1.ffn_down.weight"] == (T.Q4_K, (i, h)) and types["blk.0.ffn_up.weight"] == (T.Q4_K, (h, i))
    assert types["blk.0.attn_k.weight"] == (T.Q4_K, (h, TINY.kv_heads * TINY.head_dim))
    assert types["blk.1.attn_norm.weight"] == (T.F32, (h,)) and types["rope_freqs.weight"] == (T.F32, (32,))
    by_name = {t.name: t for t in r.tensors}
    for name, qtype in (("blk.1.ffn_down.weight", T.Q4_K), ("token_embd.weight", T.Q4_K), ("output.weight", T.Q6_K)):
        w = dequantize(by_name[name].data, qtype)
        assert np.isfinite(w).all() and rm.STD / 2 < w.std() < rm.STD * 2, (name, w.std())
        assert abs(w.std() - rm.STD) < 0.1 * rm.STD and abs(w.mean()) < 0.1 * rm.STD
    raw = np.asarray(by_name["blk.0.attn_q.weight"].data).reshape(-1, 144)
    d = raw[:, :4].copy().view(np.float16)
    assert np.all(d[:, 0] == np.float16(rm.Q4K_D)) and np.all(d[:, 1] == np.float16(7.5 * rm.Q4K_D))
    assert np.all(by_name["blk.0.ffn_norm.weight"].data == 1)
    f = r.fields
    assert bytes(f["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
    assert len(f["tokenizer.ggml.tokens"].data) == TINY.vocab

    dense = _llm(path)  # CPU: dequantised at load
    assert dense.engine.model_config.vocab_size == TINY.vocab
    prompt, ids = _greedy(dense)
    blocks = _llm(path, quantization="gguf")  # GGUF blocks kept, dequantised per matmul (torch path)
    prompt2, ids2 = _greedy(blocks)
    assert prompt2 == prompt
    for i, (a, b) in enumerate(zip(ids, ids2)):
        if a != b:
            from tests.helpers import engine_logits

            row = engine_logits(dense, prompt + ids)[len(prompt) - 1 + i]
            assert float(row[a] - row[b]) < 1e-3, (i, a, b)
            break


def test_cli(tmp_path, capsys):
    out = tmp_path / "g"
    assert rm.main(["--format", "gptq", "--shape", "tiny", "--out", str(out), "--device", "cpu",
                    "--seed", str(random.randrange(1000))]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res) >= {"format", "shape", "path", "bytes", "seconds"} and res["format"] == "gptq"
    assert res["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    with pytest.raises(SystemExit) as e:
        rm.main(["--format", "gptq", "--shape", "tiny", "--out", str(out), "--device", "cpu"])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err
    assert rm.main(["--format", "fp16", "--shape", "tiny", "--out", str(out), "--device", "cpu", "--overwrite"]) == 0
    assert not (out / "quantize_config.json").exists()
    with pytest.raises(ValueError, match="format"):
        rm.write_model("q8", "tiny", tmp_path / "x")
    with pytest.raises(ValueError, match="shape"):
        rm.write_model("fp16", "70b", tmp_path / "x")

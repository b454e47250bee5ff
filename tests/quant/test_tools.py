"""Quantisation tools: GPTQ vs RTN, act-order, AWQ scale search, checkpoint layouts, GGUF export."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from gfx906_llm.quant.tools import writers
from gfx906_llm.quant.tools.awq import _fold_into_norm, _fake_quant, layer_groups, search_clip, search_scale
from gfx906_llm.quant.tools.gptq import gptq_quantize_weight, hessian_from_inputs, output_error
from gfx906_llm.quant.tools.rtn import QuantizedWeight, num_groups, quantize_rtn


def correlated_inputs(t: int, k: int) -> torch.Tensor:
    """``[t, k]`` activations: a rank-k/4 correlated part plus noise, channels of different scales
    (GPTQ/RTN error ratio 0.34-0.44 over 20 draws at the shapes used below)."""
    mix = torch.randn(k // 4, k)
    return (torch.randn(t, k // 4) @ mix + 0.3 * torch.randn(t, k)) * torch.exp(0.5 * torch.randn(k))


@pytest.mark.parametrize("sym", [True, False])
def test_gptq_beats_rtn_on_correlated_inputs(sym):
    n, k, t, gs = 96, 256, 1024, 64
    x, w = correlated_inputs(t, k), torch.randn(n, k) * 0.05
    h = hessian_from_inputs(x)
    rtn = quantize_rtn(w, 4, gs, sym, include_zero=True)  # GPTQ's quantiser, no error feedback
    err_rtn = output_error(x, w, rtn)
    g = gptq_quantize_weight(w, h, 4, gs, sym)
    err_gptq = output_error(x, w, g)
    print(f"||XW^T - XWq^T||: rtn {err_rtn:.3f} gptq {err_gptq:.3f}")
    assert err_gptq < 0.95 * err_rtn  # typically 0.5-0.9 of RTN's error on these random inputs
    assert torch.equal(g.g_idx.long(), torch.arange(k) // gs) and not g.desc_act
    assert g.qweight.dtype == torch.uint8 and int(g.qweight.max()) <= 15
    # codes, scales and zeros reproduce the weight the error was measured on
    assert torch.equal(g.dequantize(), g.scales[:, g.g_idx.long()] * (g.qweight.float() - g.zeros[:, g.g_idx.long()]))


def test_gptq_act_order_g_idx():
    n, k, t, gs = 64, 192, 768, 32
    x, w = correlated_inputs(t, k), torch.randn(n, k) * 0.05
    h = hessian_from_inputs(x)
    g = gptq_quantize_weight(w, h, 4, gs, sym=True, desc_act=True)
    plain = gptq_quantize_weight(w, h, 4, gs, sym=True)
    assert g.g_idx.dtype == torch.int32 and g.g_idx.shape == (k,)
    assert g.desc_act
    assert torch.equal(torch.bincount(g.g_idx.long(), minlength=k // gs), torch.full((k // gs,), gs))
    # groups are runs of gs columns taken in order of decreasing diag(H)
    perm = torch.argsort(torch.diag(h), descending=True)
    assert torch.equal(g.g_idx.long()[perm], torch.arange(k) // gs)
    assert g.scales.shape == (n, k // gs)
    err_act, err_plain = output_error(x, w, g), output_error(x, w, plain)
    err_rtn = output_error(x, w, quantize_rtn(w, 4, gs, True, include_zero=True))
    print(f"act-order {err_act:.3f} plain {err_plain:.3f} rtn {err_rtn:.3f}")
    assert err_act < err_rtn


def test_rtn_ragged_last_group_and_bounds():
    w = torch.randn(16, 200)  # 200 = 3 * 64 + 8: the last group has 8 columns
    q = quantize_rtn(w, 4, 64, sym=False)
    assert num_groups(200, 64) == 4 and q.scales.shape == (16, 4)
    # asymmetric: half a step from rounding + up to half a step from the rounded zero point
    err = (q.dequantize() - w).abs()
    assert bool((err <= q.scales[:, q.g_idx.long()] * 1.0001).all())
    qs = quantize_rtn(w, 4, 64, sym=True)
    assert bool((qs.zeros == 8).all())
    err = (qs.dequantize() - w).abs()  # symmetric: codes -8..7 around 0, |w| <= 7.5 steps
    assert bool((err <= qs.scales[:, qs.g_idx.long()] * 0.51).all())  # + fp16 rounding of s


def random_qw(n: int, k: int, gs: int, bits: int, sym: bool, act_order: bool = False) -> QuantizedWeight:
    g = num_groups(k, gs)
    maxq = 2**bits - 1
    zeros = torch.full((n, g), 2 ** (bits - 1)) if sym else torch.randint(1, maxq + 1, (n, g))
    g_idx = torch.arange(k) // (k if gs == -1 else gs)
    if act_order:
        g_idx = g_idx[torch.randperm(k)]
    return QuantizedWeight(
        qweight=torch.randint(0, maxq + 1, (n, k), dtype=torch.uint8),
        scales=(torch.rand(n, g) * 0.02 + 1e-3).half().float(),
        zeros=zeros.to(torch.int32),
        g_idx=g_idx.to(torch.int32),
        bits=bits, group_size=gs, sym=sym,
    )


@pytest.mark.parametrize("bits,sym,act_order,gs", [(4, True, False, 32), (4, False, True, 32), (8, False, False, 64),
                                                    (2, True, False, -1), (4, False, False, 48)])
def test_gptq_layout_roundtrip(unpackers, bits, sym, act_order, gs):
    n, k = 64, 96
    qw = random_qw(n, k, gs, bits, sym, act_order)
    t = writers.pack_gptq(qw)
    pf = 32 // bits
    assert t["qweight"].dtype == torch.int32 and t["qweight"].shape == (k // pf, n)
    assert t["qzeros"].dtype == torch.int32 and t["qzeros"].shape == (num_groups(k, gs), n // pf)
    assert t["scales"].dtype == torch.float16 and t["scales"].shape == (num_groups(k, gs), n)
    assert t["g_idx"].dtype == torch.int32 and t["g_idx"].shape == (k,)
    w = unpackers.gptq(*(t[s].numpy() for s in ("qweight", "qzeros", "scales", "g_idx")), bits)
    np.testing.assert_array_equal(w, qw.dequantize().numpy())
    if sym and bits == 4:  # v1 stores zero - 1 = 7 in every nibble
        assert bool((t["qzeros"] == 0x77777777).all())


def test_gptq_v1_rejects_zero_point_zero():
    qw = random_qw(16, 64, 32, 4, sym=False)
    qw.zeros[0, 0] = 0
    with pytest.raises(ValueError, match="zero point of 0"):
        writers.pack_gptq(qw)


@pytest.mark.parametrize("sym", [True, False])
def test_awq_layout_roundtrip(unpackers, sym):
    n, k, gs = 64, 256, 64
    qw = random_qw(n, k, gs, 4, sym)
    t = writers.pack_awq(qw)
    assert t["qweight"].dtype == torch.int32 and t["qweight"].shape == (k, n // 8)
    assert t["qzeros"].shape == (k // gs, n // 8) and t["scales"].shape == (k // gs, n)
    w = unpackers.awq(t["qweight"].numpy(), t["qzeros"].numpy(), t["scales"].numpy(), gs)
    np.testing.assert_array_equal(w, qw.dequantize().numpy())
    # nibble order [0,2,4,6,1,3,5,7]: column 1 sits in bits 16..19 of the first word
    assert int(t["qweight"][0, 0].item() >> 16 & 0xF) == int(qw.qweight[1, 0])
    with pytest.raises(ValueError, match="act-order"):
        writers.pack_awq(random_qw(n, k, gs, 4, sym, act_order=True))


@pytest.mark.parametrize("sym,gs", [(True, 32), (False, 32), (True, 64), (False, -1)])
def test_compressed_tensors_layout_roundtrip(unpackers, sym, gs):
    n, k, bits, act_order = 48, 128, 4, False
    qw = random_qw(n, k, gs, bits, sym)
    t = writers.pack_compressed_tensors(qw)
    assert t["weight_packed"].dtype == torch.int32 and t["weight_packed"].shape == (n, k // 8)
    assert t["weight_scale"].shape == (n, num_groups(k, gs)) and t["weight_scale"].dtype == torch.float16
    assert t["weight_shape"].tolist() == [n, k]
    assert ("weight_zero_point" in t) == (not sym) and ("weight_g_idx" in t) == act_order
    zp = t["weight_zero_point"].numpy() if not sym else None
    gi = t["weight_g_idx"].numpy() if act_order else None
    w = unpackers.ct(t["weight_packed"].numpy(), t["weight_scale"].numpy(), t["weight_shape"].numpy(), bits, gs, zp, gi)
    np.testing.assert_array_equal(w, qw.dequantize().numpy())
    if not sym:
        assert t["weight_zero_point"].shape == (n // 8, num_groups(k, gs))
    # the compressed-tensors package's own decompressor reads the same weight
    ct = pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme

    cfg = writers.ct_quantization_config(bits, gs, sym, act_order)
    QuantizationConfig.model_validate({k2: v for k2, v in cfg.items() if k2 not in ("sparsity_config", "transform_config", "version")})
    scheme = QuantizationScheme.model_validate(cfg["config_groups"]["group_0"])
    QuantizationScheme.model_validate(writers.ct_quantization_config(bits, gs, sym, True)["config_groups"]["group_0"])
    sd = {name: v for name, v in t.items()}
    dec = PackedQuantizationCompressor.decompress(sd, scheme)["weight"]
    torch.testing.assert_close(dec.float(), qw.dequantize(), rtol=1e-3, atol=1e-5)
    assert ct is not None


def test_compressed_tensors_act_order_uses_static_groups():
    """compressed-tensors dropped actorder='group' (g_idx): act-order there means static groups."""
    with pytest.raises(ValueError, match="static groups"):
        writers.pack_compressed_tensors(random_qw(16, 64, 32, 4, True, act_order=True))
    x, w = correlated_inputs(512, 128), torch.randn(32, 128) * 0.05
    h = hessian_from_inputs(x)
    g = gptq_quantize_weight(w, h, 4, 32, True, desc_act=True, static_groups=True)
    assert not g.desc_act  # trivial g_idx
    rtn = quantize_rtn(w, 4, 32, True, include_zero=True)
    torch.testing.assert_close(g.scales, rtn.scales)  # groups fixed from the original weight
    assert output_error(x, w, g) < output_error(x, w, rtn)
    writers.pack_compressed_tensors(g)


def tiny_llama_layer(k=64, inter=128):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=k, intermediate_size=inter, num_attention_heads=4, num_key_value_heads=4,
                      num_hidden_layers=1, vocab_size=32)
    layer = LlamaDecoderLayer(cfg, 0).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.05 if p.dim() == 2 else 1 + 0.1 * torch.randn_like(p))
    return layer, LlamaRotaryEmbedding(cfg)


@torch.no_grad()
def test_awq_scale_search_never_worse_than_alpha0():
    layer, _ = tiny_llama_layer()
    x = torch.randn(4, 32, 64)
    x[..., :4] *= 20  # salient outlier channels, as in real activations
    xn = layer.post_attention_layernorm(x)
    mlp, lins = layer.mlp, [layer.mlp.gate_proj, layer.mlp.up_proj]
    w0 = [m.weight.clone() for m in lins]
    s, losses = search_scale(xn, xn, lins, mlp, bits=4, group_size=32, sym=False, n_grid=20)
    assert all(torch.equal(m.weight, w) for m, w in zip(lins, w0))  # search restores the weights
    # alpha = 0 measured independently: plain RTN of gate/up, MSE of the mlp output
    ref = mlp(xn)
    for m in lins:
        m.weight.data = _fake_quant(m.weight.data, 4, 32, False)
    loss0 = float((mlp(xn) - ref).pow(2).mean())
    for m, w in zip(lins, w0):
        m.weight.data = w
    assert abs(losses[0] - loss0) <= 1e-6 * max(loss0, 1e-12)
    best = min(losses)
    for m in lins:
        m.weight.data = _fake_quant(m.weight.data * s, 4, 32, False) / s
    loss_best = float((mlp(xn) - ref).pow(2).mean())
    print(f"mlp output MSE alpha=0 {loss0:.3e} best {loss_best:.3e} (grid min {best:.3e})")
    assert loss_best <= loss0 * (1 + 1e-6) and abs(loss_best - best) <= 1e-5 * best


@torch.no_grad()
def test_awq_scale_folding_is_exact():
    layer, rope = tiny_llama_layer()
    x = torch.randn(2, 16, 64)
    pos = torch.arange(16)[None].expand(2, -1)
    pe = rope(x, pos)
    ref = layer(x, position_embeddings=pe, position_ids=pos)
    for g in layer_groups(layer):
        s = torch.rand(g["linears"][0].in_features) + 0.5
        if g["kind"] == "norm":
            _fold_into_norm(g["prev"], s)
        else:
            g["prev"].weight.data /= s[:, None]
        for lin in g["linears"]:
            lin.weight.data *= s
    assert [g["name"] for g in layer_groups(layer)] == ["qkv", "o", "gate_up", "down"]
    torch.testing.assert_close(layer(x, position_embeddings=pe, position_ids=pos), ref, rtol=1e-4, atol=1e-5)


def test_awq_clip_search_not_worse_than_no_clip():
    w, x = torch.randn(32, 128) * 0.05, correlated_inputs(256, 128)
    mv = search_clip(w, x, 4, 64, False)
    assert bool((mv <= w.abs().reshape(32, 2, 64).amax(-1).repeat_interleave(64, 1) + 1e-7).all())
    clipped = torch.maximum(torch.minimum(w, mv), -mv)
    e_clip = torch.linalg.norm(x @ (w - _fake_quant(clipped, 4, 64, False)).T)
    e_none = torch.linalg.norm(x @ (w - _fake_quant(w, 4, 64, False)).T)
    assert e_clip <= e_none * 1.0001


def test_cli_rejects_bad_arguments(capsys):
    from gfx906_llm.quant.tools.cli import main

    assert main(["/nonexistent", "--method", "awq", "--desc-act", "--output", "/tmp/x"]) == 2
    assert main(["/nonexistent", "--format", "awq", "--bits", "8", "--output", "/tmp/x"]) == 2
    assert main(["/nonexistent", "--sink-weight", "-1", "--output", "/tmp/x"]) == 2
    assert "error" in capsys.readouterr().err


def test_gguf_export_matches_transformers_on_gguf(smollm2_fp16_dir, smollm2_gguf_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with open(os.path.join(smollm2_fp16_dir, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30 and "quantization_config" not in cfg
    model = AutoModelForCausalLM.from_pretrained(smollm2_fp16_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_fp16_dir)
    ids = tok("The capital of France is Paris, and the capital of Italy is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = smollm2_gguf_model(ids).logits
        out = model(ids).logits
    # the export rounds the dequantised GGUF weights to fp16: logits agree to fp16 precision
    diff = (out - ref).abs().max().item()
    print(f"max |logit diff| fp16 export vs GGUF: {diff:.4f} (logit std {ref.std().item():.2f})")
    assert diff < 0.05 * ref.std().item()
    assert torch.equal(out[0, -1].argmax(), ref[0, -1].argmax())


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A 2-layer random Llama (fp16) with a word-level tokenizer over the calibration text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from gfx906_llm.quant.tools.calibration import load_calibration_text

    words = sorted(set(load_calibration_text().split()))[:253]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)
    d = str(tmp_path_factory.mktemp("tiny_llama"))
    model.half().save_pretrained(d)
    tok.save_pretrained(d)
    return d


SUFFIXES = {"gptq": {"qweight", "qzeros", "scales", "g_idx"}, "awq": {"qweight", "qzeros", "scales"},
            "compressed-tensors": {"weight_packed", "weight_scale", "weight_shape"}}


@pytest.mark.parametrize("method,fmt,extra", [
    ("gptq", "gptq", []), ("gptq", "gptq", ["--desc-act", "--asym"]), ("awq", "awq", []),
    ("rtn", "compressed-tensors", ["--asym"]), ("gptq", "compressed-tensors", ["--desc-act"]), ("awq", "gptq", []),
])
def test_cli_checkpoints_on_tiny_llama(tiny_llama_dir, tmp_path, unpackers, method, fmt, extra):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from gfx906_llm.quant.tools.cli import main

    out = str(tmp_path / "q")
    argv = [tiny_llama_dir, "--method", method, "--format", fmt, "--group-size", "32", "--num-samples", "4",
            "--seq-len", "32", "--output", out, *extra]
    assert main(argv) == 0
    with open(os.path.join(out, "config.json")) as f:
        qc = json.load(f)["quantization_config"]
    assert qc["quant_method"] == fmt
    if fmt == "gptq":
        with open(os.path.join(out, "quantize_config.json")) as f:
            gc = json.load(f)
        assert gc["checkpoint_format"] == "gptq" and gc["bits"] == 4 and gc["group_size"] == 32
        assert gc["desc_act"] == ("--desc-act" in extra) and gc["sym"] == ("--asym" not in extra and method != "awq")
    elif fmt == "awq":
        assert qc["version"] == "gemm" and qc["zero_point"] is True and qc["bits"] == 4
    else:
        w = qc["config_groups"]["group_0"]["weights"]
        assert qc["format"] == "pack-quantized" and qc["ignore"] == ["lm_head"]
        assert w["symmetric"] == ("--asym" not in extra) and w["group_size"] == 32
        assert w["actorder"] == ("weight" if "--desc-act" in extra else None)
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        names = set(f.keys())
    proj = [f"model.layers.{i}.{p}" for i in range(2) for p in
            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj")]
    for p in proj:
        assert {f"{p}.{s}" for s in SUFFIXES[fmt]} <= names and f"{p}.weight" not in names
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    if fmt == "gptq" and "--desc-act" in extra:
        with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
            assert not torch.equal(f.get_tensor(f"{proj[0]}.g_idx").long(), torch.arange(64) // 32)
    # the checkpoint, unpacked by numpy, behaves like the original model
    fp = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    q = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    state = {k: torch.from_numpy(v).float() for k, v in unpackers.checkpoint(out).items()}
    missing, unexpected = q.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    q.tie_weights()
    ids = torch.randint(3, 256, (2, 24))
    with torch.no_grad():
        lf, lq = fp(ids).logits, q(ids).logits
    rel = float(torch.linalg.norm(lq - lf) / torch.linalg.norm(lf - lf.mean()))
    print(f"{method}->{fmt} {extra}: relative logit error {rel:.3f}")
    # 4-bit g32 on a random 2-layer model gives about 0.25-0.35; a wrong layout (transposed or
    # misordered codes, wrong zero offset) decorrelates the weights and gives > 1
    assert rel < 0.6


def test_cli_refuses_ragged_groups_by_default(tiny_llama_dir, tmp_path, capsys):
    from gfx906_llm.quant.tools.cli import main

    argv = [tiny_llama_dir, "--method", "rtn", "--group-size", "48", "--output", str(tmp_path / "q")]
    assert main(argv) == 2 and "not multiples of --group-size 48" in capsys.readouterr().err
    assert main(argv + ["--allow-ragged-groups"]) == 0

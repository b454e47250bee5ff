"""GPTQ, AWQ and compressed-tensors checkpoints, packed here by plain-numpy writers that follow
each format's published description (AutoGPTQ/GPTQModel, AutoAWQ, compressed-tensors), are
loaded through the lead's linear layers (merged shards included), repacked, and must compute
``x @ W.T + b`` on the CPU (torch path) and through the Triton kernels (interpreter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gfx906_llm.layers.linear import LinearBase
from gfx906_llm.quant.base import get_quant_config_cls

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def np_pack(q: np.ndarray, bits: int, axis: int, order=None) -> torch.Tensor:
    """Pack unsigned ``bits``-bit values, 32/bits consecutive along ``axis``; field t of a word
    holds element order[t] of its run. Returns int32 with the same bits."""
    pack = 32 // bits
    q = np.moveaxis(q.astype(np.uint64), axis, -1)
    out = np.zeros(q.shape[:-1] + (q.shape[-1] // pack,), dtype=np.uint64)
    for t in range(pack):
        src = t if order is None else order[t]
        out |= (q[..., src::pack] & (2**bits - 1)) << np.uint64(bits * t)
    return torch.from_numpy(np.moveaxis(out.astype(np.uint32).view(np.int32), -1, axis).copy())


def make_shard(K: int, n: int, bits: int, group: int, asym: bool, g_idx=None):
    """Random unsigned q [K, n], scales [G, n], zeros [G, n] and the fp32 reference W [n, K]."""
    g = K if group == -1 else group
    G = K // g
    q = np.random.randint(0, 2**bits, (K, n))
    s = (np.random.rand(G, n) * 0.02 + 0.001).astype(np.float16).astype(np.float32)
    z = np.random.randint(0, 2**bits, (G, n)) if asym else np.full((G, n), 2 ** (bits - 1))
    rows = np.arange(K) // g if g_idx is None else g_idx
    w = ((q - z[rows]) * s[rows]).T.astype(np.float32)
    return q, s, z, w


def gptq_tensors(q, s, z, bits, v1, g_idx):
    zs = (z - 1) & (2**bits - 1) if v1 else z
    return {"qweight": np_pack(q, bits, 0), "qzeros": np_pack(zs, bits, 1), "scales": torch.from_numpy(s).half(),
            "g_idx": torch.from_numpy(g_idx.astype(np.int32))}


def awq_tensors(q, s, z, bits, *_):
    return {"qweight": np_pack(q, 4, 1, AWQ_ORDER), "qzeros": np_pack(z, 4, 1, AWQ_ORDER),
            "scales": torch.from_numpy(s).half()}


def ct_tensors(q, s, z, bits, asym, _g_idx):
    """weight_packed [n, K/pack] along K (value = signed q + 2**(b-1), i.e. the unsigned q here),
    weight_scale [n, G], weight_zero_point [n/pack, G] along n, weight_shape [2]."""
    t = {"weight_packed": np_pack(q.T, bits, 1), "weight_scale": torch.from_numpy(s.T.copy()).half(),
         "weight_shape": torch.tensor([q.shape[1], q.shape[0]])}
    if asym:
        t["weight_zero_point"] = np_pack(z.T, bits, 0)
    return t


def load_and_check(cfg, writer, K, sizes, bits, group, asym, prefix, v1=False, act_order=False, bias=True):
    qc = get_quant_config_cls(cfg["quant_method"]).from_hf(cfg)
    layer = LinearBase(K, sizes, bias=bias, quant_config=qc, prefix=prefix, params_dtype=torch.float32)
    g = K if group == -1 else group
    g_idx = np.random.permutation(K) // g if act_order else np.arange(K) // g
    ws = []
    for i, n in enumerate(sizes):
        q, s, z, w = make_shard(K, n, bits, group, asym, g_idx)
        ws.append(w)
        extra = v1 if cfg["quant_method"] == "gptq" else asym
        for name, t in writer(q, s, z, bits, extra, g_idx).items():
            layer.load_shard(getattr(layer, name), t, i if len(sizes) > 1 else None)
    if bias:
        layer.bias.data.normal_()
    layer.quant_method.process_weights_after_loading(layer)
    w = torch.from_numpy(np.concatenate(ws))
    x = torch.randn(3, 2, K)
    ref = x @ w.t() + (layer.bias if bias else 0)
    y = layer(x)
    assert y.shape == (3, 2, sum(sizes)) and y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    return layer, x, ref


@pytest.mark.parametrize("bits,group,sym,v1,act_order", [
    (4, 128, True, True, False), (4, 32, False, True, True), (4, 64, False, False, False),
    (8, 128, True, False, True), (8, -1, False, True, False), (4, -1, True, False, False)])
def test_gptq_merged_qkv(bits, group, sym, v1, act_order):
    cfg = {"quant_method": "gptq", "bits": bits, "group_size": group, "sym": sym, "desc_act": act_order,
           "checkpoint_format": "gptq" if v1 else "gptq_v2"}
    load_and_check(cfg, gptq_tensors, 256, [64, 32, 32], bits, group, not sym, "model.layers.0.self_attn.qkv_proj",
                   v1=v1, act_order=act_order)


@pytest.mark.parametrize("group", [32, 128])
def test_awq_merged_gate_up(group):
    cfg = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    load_and_check(cfg, awq_tensors, 256, [48, 48], 4, group, True, "model.layers.0.mlp.gate_up_proj", bias=False)


@pytest.mark.parametrize("bits,strategy,group,sym", [(4, "group", 128, True), (4, "group", 32, False),
                                                     (8, "channel", None, True), (8, "group", 64, False)])
def test_compressed_tensors(bits, strategy, group, sym):
    weights = {"num_bits": bits, "type": "int", "symmetric": sym, "strategy": strategy, "group_size": group,
               "dynamic": False, "actorder": None}
    cfg = {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
           "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None}}}
    load_and_check(cfg, ct_tensors, 256, [32, 32], bits, -1 if strategy == "channel" else group, not sym,
                   "model.layers.1.mlp.gate_up_proj")


def test_triton_kernels_on_loaded_layers():
    """The processed layer's internal tensors through the GEMV and the GEMM (interpreter on CPU)."""
    from gfx906_llm.kernels.gfx906.w4a16_gemm import w4a16_linear

    cfg = {"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": False, "desc_act": True}
    layer, _, _ = load_and_check(cfg, gptq_tensors, 128, [32, 16, 16], 4, 32, True,
                                 "model.layers.0.self_attn.qkv_proj", v1=True, act_order=True)
    lay = layer.w4a16_layout
    assert layer.w_perm is not None and layer.w_zeros is not None
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: Triton interpreter
    for m, kind in ((1, "gemv"), (3, "gemv"), (20, "gemm")):
        x = torch.randn(m, 128)
        ref = layer(x).to(dev)
        layer.to(dev)
        x = x.to(dev)
        y = w4a16_linear(x, layer.w_qweight, layer.w_scales, layer.w_zeros, layer.w_perm, layer.bias, lay.bits,
                         lay.group_size, lay.in_features, force=kind)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
        layer.to("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_layer_apply_on_gpu():
    """LinearBase.forward -> PackedLinearMethod.apply -> Triton kernels (fp16 activations)."""
    cfg = {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True, "version": "gemm"}
    layer, _, _ = load_and_check(cfg, awq_tensors, 256, [64, 64], 4, 64, True, "model.layers.0.mlp.gate_up_proj")
    x = torch.randn(5, 256)
    ref = layer(x)
    layer.cuda()
    for m in (1, 5):
        y = layer(x[:m].cuda().half())
        assert y.dtype == torch.float16
        torch.testing.assert_close(y.float().cpu(), ref[:m], rtol=2e-3, atol=2e-3 * ref.abs().max().item())


def test_ignore_targets_and_dynamic():
    w = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}
    ct = get_quant_config_cls("compressed-tensors").from_hf({
        "quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head", "re:.*down_proj$"],
        "config_groups": {"g": {"targets": ["re:.*mlp.*", "re:.*self_attn.*"], "weights": w}}})
    lay = LinearBase(128, [32], quant_config=None, prefix="x")
    assert ct.get_method(lay, "lm_head") is None
    assert ct.get_method(lay, "model.layers.3.mlp.down_proj") is None
    assert ct.get_method(lay, "model.layers.3.mlp.up_proj") is not None
    assert ct.get_method(lay, "model.embed_tokens") is None  # no target matches
    ct2 = get_quant_config_cls("compressed-tensors").from_hf({
        "quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["re:.*q_proj"],
        "config_groups": {"g": {"targets": ["Linear"], "weights": w}}})
    qkv = LinearBase(128, [32, 16, 16], quant_config=None, prefix="x")
    with pytest.raises(ValueError, match="merged"):
        ct2.get_method(qkv, "model.layers.0.self_attn.qkv_proj")
    gq = get_quant_config_cls("gptq").from_hf({"quant_method": "gptq", "bits": 4, "group_size": 128,
                                               "dynamic": {"-:.*down_proj": {}, "+:.*up_proj": {"bits": 8}}})
    assert gq.get_method(lay, "model.layers.0.mlp.down_proj") is None
    assert gq.get_method(lay, "model.layers.0.mlp.o_proj").bits == 4
    aw = get_quant_config_cls("awq").from_hf({"quant_method": "awq", "bits": 4, "group_size": 128,
                                              "modules_to_not_convert": ["visual"]})
    assert aw.get_method(lay, "visual.blocks.0.attn.proj") is None


@pytest.mark.parametrize("name,cfg", [
    ("gptq", {"bits": 3}), ("gptq", {"group_size": 48}), ("gptq", {"checkpoint_format": "marlin"}),
    ("awq", {"version": "gemv"}), ("awq", {"bits": 8}), ("awq", {"zero_point": False}),
    ("compressed-tensors", {"format": "float-quantized", "config_groups": {"g": {"targets": ["Linear"], "weights": {
        "num_bits": 8, "type": "float", "strategy": "channel"}}}}),
    ("compressed-tensors", {"format": "pack-quantized", "config_groups": {"g": {"targets": ["Linear"], "weights": {
        "num_bits": 4, "strategy": "tensor"}}}}),
    ("compressed-tensors", {"format": "pack-quantized", "config_groups": {"g": {
        "targets": ["Linear"], "weights": {"num_bits": 4, "strategy": "channel"},
        "input_activations": {"num_bits": 8}}}}),
])
def test_unsupported_configs_raise(name, cfg):
    with pytest.raises(ValueError):
        get_quant_config_cls(name).from_hf({"quant_method": name, **cfg})


def test_merged_shards_with_different_act_order_rejected():
    cfg = {"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": True, "desc_act": True}
    qc = get_quant_config_cls("gptq").from_hf(cfg)
    layer = LinearBase(64, [16, 16], quant_config=qc, prefix="model.layers.0.mlp.gate_up_proj",
                       params_dtype=torch.float32)
    for i in range(2):
        q, s, z, _ = make_shard(64, 16, 4, 32, False)
        for name, t in gptq_tensors(q, s, z, 4, True, np.random.permutation(64) // 32).items():
            layer.load_shard(getattr(layer, name), t, i)
    with pytest.raises(ValueError, match="g_idx"):
        layer.quant_method.process_weights_after_loading(layer)

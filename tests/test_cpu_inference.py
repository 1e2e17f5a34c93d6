"""optimize_for_inference: the inference forms compute what the plain modules do, with the
same checkpoint, under either product kernel; the private oneDNN op only where it applies."""

import copy
import warnings

import pytest
import torch

from qieemo_sb import cpu_inference
from qieemo_sb.backbones import load_backbone
from qieemo_sb.cpu_inference import INFERENCE_FORMS, LinearKernels, optimize_for_inference, resolve_kernels

TINY_BACKBONES = ["efficient_conformer_tiny", "conformer_tiny"]
needs_onednn = pytest.mark.skipif(cpu_inference._ONEDNN_LINEAR is None, reason="needs oneDNN's linear op")
KERNEL_CHOICES = ["default", pytest.param("onednn", marks=needs_onednn)]


def tiny_encoder(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return load_backbone(name)["encoder"].eval()


def emotion_model():
    """qieemo_tiny.yaml's encoder and MMF + CMA head, random weights."""
    from qieemo_sb.hparams_files import load_hparams
    from recipe_runs import ROOT

    hparams = load_hparams(ROOT / "recipes/IEMOCAP/Qieemo/hparams/qieemo_tiny.yaml",
                           {"pretrained_asr": "unused", "data_folder": "unused"})
    return hparams["encoder"].eval(), hparams["head"].eval()


@pytest.mark.parametrize("kernels", KERNEL_CHOICES)
@pytest.mark.parametrize("name", TINY_BACKBONES)
def test_inference_forms_equal_the_plain_encoder_with_the_same_checkpoint(name, kernels):
    """Every converted class appears, the state_dict keeps its keys and values (a plain
    checkpoint loads strictly), and a padded batch gives the plain encoder's block
    outputs, zero padding included."""
    plain = tiny_encoder(name)
    optimized = optimize_for_inference(copy.deepcopy(plain), kernels=kernels)
    converted = {type(module) for module in optimized.modules()}
    assert converted >= {cls for base, cls in INFERENCE_FORMS.items() if base.__name__ != "MultiBlockFusion"}
    assert not converted & set(INFERENCE_FORMS)  # nothing left plain
    state = plain.state_dict()
    assert optimized.state_dict().keys() == state.keys()
    assert all(torch.equal(optimized.state_dict()[key], value) for key, value in state.items())
    optimized.load_state_dict(state, strict=True)
    feats, rel = torch.randn(3, 171, 80), torch.tensor([1.0, 0.55, 0.8])
    feats[1, 95:] = 3.0  # padding must be ignored
    with torch.inference_mode():
        expected, got = plain(feats, rel), optimized(feats, rel)
        alone = optimized(feats[1:2, :94], torch.ones(1))
    for block, (want, have) in enumerate(zip(expected.hidden_states, got.hidden_states)):
        torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-4, msg=f"block {block + 1}")
        n = int(got.lengths[block][1])
        torch.testing.assert_close(have[1, :n], alone.hidden_states[block][0], atol=1e-4, rtol=1e-4)
    assert [n.tolist() for n in got.lengths] == [n.tolist() for n in expected.lengths]


@pytest.mark.parametrize("kernels", KERNEL_CHOICES)
def test_the_converted_head_classifies_as_the_plain_one(kernels):
    encoder, head = emotion_model()
    plain = torch.nn.ModuleList([encoder, head])
    optimized = optimize_for_inference(copy.deepcopy(plain), kernels=kernels)
    assert any(isinstance(m, cpu_inference.InferenceFusion) for m in optimized.modules())
    feats, rel = torch.randn(2, 130, 80), torch.tensor([1.0, 0.7])
    with torch.inference_mode():
        want = plain[1](plain[0](feats, rel))
        have = optimized[1](optimized[0](feats, rel))
    torch.testing.assert_close(have.logits, want.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(have.embedding, want.embedding, atol=1e-5, rtol=1e-4)


def test_training_and_autograd_run_the_plain_forward():
    """With autograd on (in eval mode, and in training with the same dropout masks) a
    converted model computes the plain values and gradients (in float64: twelve random
    blocks amplify float32 rounding to about 1 % of the gradients)."""
    plain = tiny_encoder("efficient_conformer_tiny").double()
    optimized = optimize_for_inference(copy.deepcopy(plain), kernels="default")
    feats, rel = torch.randn(2, 90, 80, dtype=torch.float64), torch.tensor([1.0, 0.7])
    for mode in ("eval", "train"):
        for model in (plain, optimized):
            model.train(mode == "train")
            model.zero_grad()
            torch.manual_seed(3)
            model(feats, rel).hidden_states[-1].square().sum().backward()
        for (name, want), have in zip(plain.named_parameters(), optimized.parameters()):
            torch.testing.assert_close(have.grad, want.grad, msg=f"{mode} {name}")


def test_kernel_choice_checks_the_private_op_and_falls_back(monkeypatch):
    with pytest.raises(ValueError, match="kernels must be one of"):
        resolve_kernels("mkl")
    monkeypatch.setattr(cpu_inference, "_ONEDNN_LINEAR", None)  # a torch without the op
    assert resolve_kernels("auto") == "default"
    with pytest.raises(ValueError, match="kernels='onednn' needs a torch built with oneDNN"):
        resolve_kernels("onednn")
    monkeypatch.setattr(cpu_inference, "cpu_vendor", lambda: "GenuineIntel")
    assert resolve_kernels("auto") == "default"


@needs_onednn
def test_auto_takes_onednn_on_other_makers_x86(monkeypatch):
    monkeypatch.setattr(cpu_inference, "cpu_vendor", lambda: "AuthenticAMD")
    assert resolve_kernels("auto") == ("onednn" if torch.backends.mkl.is_available() else "default")
    monkeypatch.setattr(cpu_inference, "cpu_vendor", lambda: "")
    assert resolve_kernels("auto") == "default"


@needs_onednn
def test_onednn_products_apply_only_to_float32_cpu_inference_with_row_major_weights():
    layer = torch.nn.Linear(16, 32)
    x = torch.randn(3, 16)
    applies = cpu_inference.onednn_linear_applies
    assert not applies(x, layer.weight, layer.bias)  # autograd on
    with torch.inference_mode():
        assert applies(x, layer.weight, layer.bias) and applies(x, layer.weight)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not applies(x, layer.weight, layer.bias)
        assert not applies(x.double(), layer.weight, layer.bias)
        assert not applies(x[0], layer.weight, layer.bias)  # 1-D
        column_major = layer.weight.t().contiguous().t()
        assert not applies(x, column_major, layer.bias)
        kernels = LinearKernels(onednn=True)
        torch.testing.assert_close(kernels.product(x, column_major, layer.bias), layer(x))  # the fallback
        with pytest.raises(RuntimeError, match="cannot be multiplied"):  # torch's clear error
            kernels.product(torch.randn(3, 15), layer.weight, layer.bias)


@needs_onednn
@pytest.mark.parametrize("name", TINY_BACKBONES)
def test_encoder_products_take_onednn_only_where_chosen(name, monkeypatch):
    """With kernels='onednn' every linear product of the encoder at inference is one
    oneDNN call: per block two expansions fused with their SiLU and six plain products
    (two contractions, the attention's input and output projections, the convolution
    module's two), and the front-end's projection; values as torch's products. With
    kernels='default', or with autograd on, no call."""
    calls = []
    onednn = cpu_inference._ONEDNN_LINEAR

    class Counting:
        def __call__(self, *args):
            calls.append(args[3])
            return onednn(*args)

        def binary(self, *args):
            calls.append("binary " + args[-1])
            return onednn.binary(*args)

    monkeypatch.setattr(cpu_inference, "_ONEDNN_LINEAR", Counting())
    plain = tiny_encoder(name)
    feats, rel = torch.randn(2, 90, 80), torch.tensor([1.0, 0.7])
    default = optimize_for_inference(copy.deepcopy(plain), kernels="default")
    with torch.no_grad():
        expected = default(feats, rel)
    assert calls == []
    optimized = optimize_for_inference(copy.deepcopy(plain), kernels="onednn")
    with torch.no_grad():
        out = optimized(feats, rel)
    blocks = len(plain.blocks)
    assert calls.count("swish") == 2 * blocks and calls.count("none") == 6 * blocks + 1
    assert len(calls) == 8 * blocks + 1
    for got, want in zip(out.hidden_states, expected.hidden_states):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    calls.clear()
    optimized(feats, rel).hidden_states[-1].sum().backward()
    assert calls == []


@needs_onednn
@pytest.mark.parametrize("query_block", [256, 3])
def test_attention_by_head_on_onednn_equals_relposmhaxl(query_block, monkeypatch):
    """Long inputs (the threshold lowered here) with oneDNN's products: the attention core
    runs per utterance, query block and head, with RelPosMHAXL's outputs and the batched
    path's, padded rows included; shorter inputs and default kernels take the batched one."""
    from speechbrain.nnet.attention import RelPosEncXL, RelPosMHAXL

    from qieemo_sb.encoders.attention import RelPositionSelfAttention

    torch.manual_seed(0)
    reference = RelPosMHAXL(embed_dim=16, num_heads=4, dropout=0.0).eval()
    attention = RelPositionSelfAttention(embed_dim=16, num_heads=4, query_block=query_block).eval()
    attention.load_state_dict(reference.state_dict(), strict=True)
    batched_attention = optimize_for_inference(copy.deepcopy(attention), kernels="default")
    optimize_for_inference(attention, kernels="onednn")
    x = torch.randn(2, 11, 16)
    padding = torch.arange(11).unsqueeze(0) >= torch.tensor([[11], [6]])
    pos_embs = RelPosEncXL(16).make_pe(11)
    expected, _ = reference(x, x, x, pos_embs=pos_embs, key_padding_mask=padding)
    by_head = []
    attend = attention._attend_by_head
    monkeypatch.setattr(attention, "_attend_by_head", lambda *args: by_head.append(1) or attend(*args))
    monkeypatch.setattr(cpu_inference, "ONEDNN_ATTENTION_MIN_FRAMES", 11)
    with torch.no_grad():
        batched = batched_attention(x, pos_embs, key_padding_mask=padding)
        got = attention(x, pos_embs, key_padding_mask=padding)
        alone = attention(x[:1], pos_embs)
        assert len(by_head) == 2
        monkeypatch.setattr(cpu_inference, "ONEDNN_ATTENTION_MIN_FRAMES", 12)  # shorter: batched
        attention(x, pos_embs)
    assert len(by_head) == 2
    valid = ~padding
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got, batched, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alone, reference(x[:1], x[:1], x[:1], pos_embs=pos_embs)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kernels", KERNEL_CHOICES)
def test_feed_forward_residual_is_the_blocks_sum(kernels):
    """residual(x, s) = x + s * FFN(x) done by the output product (a non-contiguous input
    too); under autocast the plain sum in float32."""
    from qieemo_sb.encoders.conformer_block import FeedForward

    torch.manual_seed(0)
    plain = FeedForward(d_model=16, d_ffn=32, dropout=0.1).eval()
    ffn = optimize_for_inference(copy.deepcopy(plain), kernels=kernels)
    x = torch.randn(7, 3, 16).transpose(0, 1)
    with torch.inference_mode():
        torch.testing.assert_close(ffn.residual(x, 0.25), x + 0.25 * plain(x))
        torch.testing.assert_close(ffn(x), plain(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = ffn.residual(x, 0.5)
            torch.testing.assert_close(mixed, torch.add(x, plain(x), alpha=0.5))
    assert mixed.dtype == torch.float32


@pytest.mark.parametrize("stride", [1, 2])
def test_channels_last_depthwise_convolution_equals_conv1d(stride):
    from qieemo_sb.encoders.convolution import ConvolutionModule

    torch.manual_seed(0)
    plain = ConvolutionModule(d_model=8, kernel_size=5, stride=stride).eval()
    module = optimize_for_inference(copy.deepcopy(plain), kernels="default")
    x = torch.randn(2, 9, 8)
    with torch.inference_mode():
        for lengths in (None, torch.tensor([9, 4])):
            torch.testing.assert_close(module(x, lengths), plain(x, lengths), atol=1e-6, rtol=1e-5)


def test_kept_tensors_follow_the_weights_and_stay_bounded(monkeypatch):
    """Under no_grad the encoder keeps one position table and each attention its
    projection: outputs equal the plain encoder's, also after the weights change, and
    nothing is kept beyond MAX_CACHED_POSITIONS frames."""
    from qieemo_sb.derived import forget_derived_tensors, held_derived_tensor

    plain = tiny_encoder("efficient_conformer_tiny")
    encoder = optimize_for_inference(copy.deepcopy(plain), kernels="default")
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)

    def check(frames):
        feats = torch.randn(1, frames, 80)
        plain.load_state_dict(encoder.state_dict())
        with torch.no_grad():
            kept, exact = encoder(feats, torch.ones(1)), plain(feats, torch.ones(1))
        for block in range(12):
            torch.testing.assert_close(kept.hidden_states[block], exact.hidden_states[block], atol=1e-4, rtol=1e-4)

    for frames in (90, 300, 120):
        check(frames)
        encoder(torch.randn(1, frames, 80), torch.ones(1)).hidden_states[-1].sum().backward()
        optimizer.step()  # new weights: every kept projection is stale
        optimizer.zero_grad()
    assert held_derived_tensor(encoder._derived, "positions").shape[1] == 2 * 256 - 1  # 150 frames -> 256
    monkeypatch.setattr(cpu_inference, "MAX_CACHED_POSITIONS", 64)
    forget_derived_tensors(encoder)
    check(300)  # 150 frames in blocks 1-3: beyond the limit, computed, not kept
    assert held_derived_tensor(encoder._derived, "positions").shape[1] == 2 * 64 - 1  # blocks 9-12 (38 frames)
    assert all("positions" not in block.mha._derived for block in encoder.blocks[:8])
    assert all("positions" in block.mha._derived for block in encoder.blocks[8:])


def test_linear_weights_take_the_kernels_layout_and_switch_back():
    encoder = tiny_encoder("conformer_tiny")
    optimize_for_inference(encoder, kernels="default")
    weights = cpu_inference._linear_weights(encoder)
    assert weights and all(w.stride() == (1, w.shape[0]) for w in weights)
    if cpu_inference._ONEDNN_LINEAR is not None:
        optimize_for_inference(encoder, kernels="onednn")
        assert all(w.is_contiguous() for w in cpu_inference._linear_weights(encoder))


def test_bfloat16_products_keep_float32_around_them_and_switch_back(monkeypatch):
    """precision="bf16": same state_dict, every product in bfloat16 (encoder and head, the
    head's plain Linear layers as BFloat16Linear), float32 outputs within bfloat16's rounding
    of the float32 model; fp32 again gives the plain outputs; training runs the plain forward;
    a warning where torch has no bfloat16 kernels."""
    encoder, head = emotion_model()
    plain = torch.nn.ModuleList([encoder, head])
    monkeypatch.setattr(cpu_inference, "bfloat16_is_fast", lambda device: False)
    with pytest.warns(UserWarning, match=r"precision='bf16' on cpu: torch has no bfloat16 kernels"):
        optimize_for_inference(copy.deepcopy(plain), kernels="default", precision="bf16")
    monkeypatch.setattr(cpu_inference, "bfloat16_is_fast", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = optimize_for_inference(copy.deepcopy(plain), kernels="default", precision="bf16")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in plain.state_dict().items())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m) is cpu_inference.BFloat16Linear for m in linears)
    feats, rel = torch.randn(2, 130, 80), torch.tensor([1.0, 0.7])
    with torch.inference_mode():
        want = plain[1](plain[0](feats, rel))
        have = model[1](model[0](feats, rel))
        hidden = model[0](feats, rel).hidden_states
    assert all(h.dtype == torch.float32 for h in hidden) and have.logits.dtype == torch.float32
    error = (have.embedding - want.embedding).norm() / want.embedding.norm()
    assert 1e-4 < error < 0.05  # bfloat16 products: rounded, not broken
    optimize_for_inference(model, kernels="default", precision="fp32")
    assert not any(type(m) is cpu_inference.BFloat16Linear for m in model.modules())
    with torch.inference_mode():
        torch.testing.assert_close(model[1](model[0](feats, rel)).logits, want.logits, atol=1e-5, rtol=1e-4)
    layer = cpu_inference.BFloat16Linear(8, 4)
    layer.kernels = LinearKernels(onednn=False, bfloat16=True)
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer.train()(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize_for_inference(model, precision="fp16")


@pytest.mark.parametrize("bfloat16_is_fast", [True, False])
def test_int8_quantizes_the_feed_forward_products_only(monkeypatch, bfloat16_is_fast):
    """precision="int8": the state_dict unchanged, the feed-forward modules' products in int8
    (packed once, reused), every other product in bfloat16 where torch has bfloat16 kernels
    and in float32 elsewhere, float32 outputs within int8's rounding of the float32 model; a
    model without feed-forward modules is refused untouched."""
    encoder, head = emotion_model()
    plain = torch.nn.ModuleList([encoder, head])
    monkeypatch.setattr(cpu_inference, "bfloat16_is_fast", lambda device: bfloat16_is_fast)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = optimize_for_inference(copy.deepcopy(plain), kernels="default", precision="int8")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in plain.state_dict().items())
    feed_forward = [m for m in model.modules() if isinstance(m, cpu_inference.InferenceFeedForward)]
    others = [m for m in model.modules() if hasattr(m, "kernels") and m not in feed_forward]
    assert feed_forward and all(m.kernels.int8 and not m.kernels.bfloat16 for m in feed_forward)
    assert others and all(m.kernels.bfloat16 == bfloat16_is_fast and not m.kernels.int8 for m in others)
    plain_linears = [m for m in model.modules() if type(m) in (torch.nn.Linear, cpu_inference.BFloat16Linear)]
    assert plain_linears and all((type(m) is cpu_inference.BFloat16Linear) == bfloat16_is_fast for m in plain_linears)
    feats, rel = torch.randn(2, 130, 80), torch.tensor([1.0, 0.7])
    with torch.inference_mode():
        want = plain[1](plain[0](feats, rel))
        have = model[1](model[0](feats, rel))
        packed = dict(feed_forward[0].kernels._weights)
        again = model[1](model[0](feats, rel))
    assert len(packed) == 2 * len(feed_forward)  # expansion and output product of each
    assert all(feed_forward[0].kernels._weights[k] is v for k, v in packed.items())
    torch.testing.assert_close(again.logits, have.logits)
    assert have.logits.dtype == torch.float32
    error = (have.embedding - want.embedding).norm() / want.embedding.norm()
    assert 1e-4 < error < 0.05
    optimize_for_inference(model, kernels="default", precision="fp32")
    with torch.inference_mode():
        torch.testing.assert_close(model[1](model[0](feats, rel)).logits, want.logits, atol=1e-5, rtol=1e-4)
    no_feed_forward = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="this model has none"):
        optimize_for_inference(no_feed_forward, precision="int8")
    assert type(no_feed_forward[0]) is torch.nn.Linear

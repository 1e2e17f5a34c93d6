"""Both backbones: padded-batch invariance, frame periods, sizes, fixed output structure."""

import pytest
import torch

from equivalence import assert_same_values_and_gradients
from qieemo_sb.backbones import load_backbone
from qieemo_sb.encoders.output import EncoderOutput

ALL_BACKBONES = ["efficient_conformer_tiny", "conformer_tiny", "efficient_conformer", "conformer"]
FRAME_PERIODS_MS = {
    "efficient_conformer": [20.0] * 3 + [40.0] * 4 + [80.0] * 5,
    "conformer": [40.0] * 12,
}


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    built = {}
    for name in ALL_BACKBONES:
        encoder = load_backbone(name)["encoder"]
        encoder.eval()
        built[name] = encoder
    return built


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_padded_batch_matches_one_by_one(encoders, name):
    encoder = encoders[name]
    # Odd lengths on purpose: they exercise every partial stride window.
    lengths = [163, 97, 251]
    feats = [torch.randn(n, 80) for n in lengths]
    max_len = max(lengths)
    batch = torch.zeros(len(lengths), max_len, 80)
    for i, f in enumerate(feats):
        batch[i, : f.shape[0]] = f
        # Non-zero padding: the encoder must ignore whatever sits there.
        batch[i, f.shape[0]:] = 3.0
    rel = torch.tensor(lengths, dtype=torch.float) / max_len
    with torch.no_grad():
        batched = encoder(batch, rel)
        singles = [encoder(f.unsqueeze(0), torch.ones(1)) for f in feats]
    assert len(batched.hidden_states) == 12
    for block in range(12):
        for i, single in enumerate(singles):
            n = int(single.lengths[block][0])
            assert int(batched.lengths[block][i]) == n
            assert single.hidden_states[block].shape[1] == n
            diff = (batched.hidden_states[block][i, :n] - single.hidden_states[block][0]).abs().max()
            assert diff <= 1e-4, f"{name} block {block + 1} utt {i}: {diff}"
            padded = batched.hidden_states[block][i, n:]
            assert padded.numel() == 0 or padded.abs().max() == 0


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_frame_periods_per_block(encoders, name):
    encoder = encoders[name]
    expected = FRAME_PERIODS_MS[name.replace("_tiny", "")]
    assert encoder.frame_periods_ms == expected
    # 4 s of 10 ms features: each block's frame count follows its period.
    with torch.no_grad():
        out = encoder(torch.randn(1, 400, 80), torch.ones(1))
    assert [h.shape[1] for h in out.hidden_states] == [int(4000 // p) for p in expected]
    assert [int(n) for n in out.lengths] == [int(4000 // p) for p in expected]


@pytest.mark.parametrize("name", ["efficient_conformer", "conformer"])
def test_full_size_parameter_count(encoders, name):
    count = sum(p.numel() for p in encoders[name].parameters())
    print(f"{name}: {count / 1e6:.2f}M encoder parameters")
    assert 28e6 <= count <= 36e6


def test_tiny_sizes(encoders):
    for name in ["efficient_conformer_tiny", "conformer_tiny"]:
        encoder = encoders[name]
        assert encoder.d_model == 64 and len(encoder.blocks) == 12
        assert sum(p.numel() for p in encoder.parameters()) < 2e6


def test_output_structure_is_fixed_in_train_and_eval(encoders):
    encoder = encoders["efficient_conformer_tiny"]
    feats, rel = torch.randn(2, 120, 80), torch.tensor([1.0, 0.6])
    for train in (True, False):
        encoder.train(train)
        out = encoder(feats, rel)
        assert isinstance(out, EncoderOutput)
        assert len(out.hidden_states) == len(out.lengths) == len(out.subsampling) == 12
    encoder.eval()
    assert out.subsampling == [2, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8]
    assert out.lengths[-1].tolist() == [15, 9]


def test_empty_utterance_is_a_clear_error(encoders):
    with pytest.raises(ValueError, match="outside"):
        encoders["conformer_tiny"](torch.randn(2, 50, 80), torch.tensor([1.0, 0.0]))


def test_block_strides_must_match_block_count():
    from qieemo_sb.encoders.conformer import ConformerEncoder

    with pytest.raises(ValueError, match="block_strides"):
        ConformerEncoder(d_model=16, num_blocks=3, d_ffn=32, nhead=2, block_strides=[1, 2])


def test_backbone_yaml_errors():
    with pytest.raises(ValueError, match="unknown backbone 'wav2vec'"):
        load_backbone("wav2vec")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_backbone("/nonexistent/missing.yaml")


def test_tiny_backbone_learns():
    """A few optimiser steps on a toy target lower the loss: gradients flow through every block."""
    encoder = load_backbone("conformer_tiny", {"dropout": 0.0})["encoder"]
    assert encoder.blocks[0].dropout_mha.p == 0.0
    feats = torch.randn(4, 80, 80)
    target = torch.randn(4, 64)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        out = encoder(feats, torch.ones(4))
        loss = ((out.hidden_states[-1].mean(dim=1) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("query_block", [256, 3])
def test_attention_equals_speechbrain_relposmhaxl(query_block):
    """Same parameter names and outputs as RelPosMHAXL, whatever the query blocks."""
    from speechbrain.nnet.attention import RelPosEncXL, RelPosMHAXL

    from qieemo_sb.encoders.attention import RelPositionSelfAttention

    torch.manual_seed(0)
    reference = RelPosMHAXL(embed_dim=16, num_heads=4, dropout=0.0).eval()
    attention = RelPositionSelfAttention(embed_dim=16, num_heads=4, query_block=query_block)
    attention.load_state_dict(reference.state_dict(), strict=True)
    assert attention.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 11, 16)
    padding = torch.arange(11).unsqueeze(0) >= torch.tensor([[11], [6]])
    pos_embs = RelPosEncXL(16).make_pe(11)
    expected, _ = reference(x, x, x, pos_embs=pos_embs, key_padding_mask=padding)
    got = attention.eval()(x, pos_embs, key_padding_mask=padding)
    valid = ~padding
    assert torch.allclose(got[valid], expected[valid], atol=1e-6)
    expected_alone, _ = reference(x[:1], x[:1], x[:1], pos_embs=pos_embs)
    assert torch.allclose(attention(x[:1], pos_embs), expected_alone, atol=1e-6)


def test_attention_trains_through_every_parameter():
    from speechbrain.nnet.attention import RelPosEncXL

    from qieemo_sb.encoders.attention import RelPositionSelfAttention

    attention = RelPositionSelfAttention(embed_dim=8, num_heads=2, dropout=0.5, query_block=2)
    attention(torch.randn(2, 5, 8), RelPosEncXL(8).make_pe(5)).square().sum().backward()
    for name, parameter in attention.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="divisible"):
        RelPositionSelfAttention(embed_dim=10, num_heads=3)


def test_feed_forward_equals_the_sequential_it_replaces():
    """Same checkpoint keys, outputs and gradients as Sequential(LayerNorm,
    PositionalwiseFeedForward, Dropout)."""
    from qieemo_sb.encoders.conformer_block import FeedForward

    torch.manual_seed(0)
    ffn = FeedForward(d_model=16, d_ffn=32, dropout=0.0)
    assert sorted(ffn.state_dict()) == [
        "0.bias", "0.weight", "1.ffn.0.bias", "1.ffn.0.weight", "1.ffn.3.bias", "1.ffn.3.weight"]
    x = torch.randn(3, 7, 16, requires_grad=True)
    reference = torch.nn.Sequential.forward(ffn, x)
    assert_same_values_and_gradients(ffn(x), reference, [x, *ffn.parameters()])


def test_unpadded_batch_takes_the_mask_free_path_with_the_same_result(encoders):
    """A batch without padding skips the masks; given all-full lengths, the masked
    path must agree (it is what a padded batch runs)."""
    from qieemo_sb.masking import masked_avg_pool1d

    x = torch.randn(2, 9, 4)
    full = torch.tensor([9, 9])
    for factor in (1, 2, 4):
        torch.testing.assert_close(masked_avg_pool1d(x, None, factor), masked_avg_pool1d(x, full, factor))
    block = encoders["efficient_conformer_tiny"].blocks[3]  # a strided block
    assert block.stride == 2
    pos = encoders["efficient_conformer_tiny"].positional_encoding.make_pe(9)
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        unpadded, unpadded_lengths = block(x, full, pos)
        # A third, padded row forces the masked path on the first two.
        padded, _ = block(torch.cat([x, torch.zeros(1, 9, 64)]), torch.tensor([9, 9, 4]), pos)
    assert unpadded_lengths.tolist() == [5, 5]
    torch.testing.assert_close(unpadded, padded[:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_frontend_projection_reads_the_channel_major_layout(num_layers):
    """The checkpoint's meaning: padded frames zeroed before each convolution, [B, C, T, F]
    flattened channel-major, then the projection; the inference form computes the same."""
    from qieemo_sb.cpu_inference import optimize_for_inference
    from qieemo_sb.encoders.subsampling import Conv2dSubsampling

    torch.manual_seed(0)
    frontend = Conv2dSubsampling(input_size=20, d_model=8, num_layers=num_layers, channels=4, dropout=0.0)
    feats, lengths = torch.randn(2, 23, 20, requires_grad=True), torch.tensor([23, 11])

    def reference(feats):
        x = feats.unsqueeze(1)
        out_lengths = lengths
        for conv in frontend.convs:
            keep = torch.arange(x.shape[2])[None, :] < out_lengths[:, None]
            x = torch.relu(conv(x * keep[:, None, :, None]))
            out_lengths = (out_lengths + 1) // 2
        batch, channels, time, freq = x.shape
        return frontend.projection(x.permute(0, 2, 1, 3).reshape(batch, time, channels * freq)), out_lengths

    out, out_lengths = frontend(feats, lengths)
    expected, expected_lengths = reference(feats)
    assert torch.equal(out_lengths, expected_lengths)
    assert_same_values_and_gradients(out, expected, [feats, *frontend.parameters()])
    optimize_for_inference(frontend, kernels="default")  # channels-last, the kept permuted weight
    with torch.inference_mode():
        torch.testing.assert_close(frontend(feats, lengths)[0], expected.detach())


def test_attention_reads_the_centre_of_a_longer_position_table():
    from speechbrain.nnet.attention import RelPosEncXL

    from qieemo_sb.encoders.attention import RelPositionSelfAttention

    torch.manual_seed(0)
    attention = RelPositionSelfAttention(embed_dim=16, num_heads=2).eval()
    x, encoding = torch.randn(2, 7, 16), RelPosEncXL(16)
    exact = attention(x, encoding.make_pe(7))
    for table in (7, 8, 30):
        torch.testing.assert_close(attention(x, encoding.make_pe(table)), exact)
        torch.testing.assert_close(attention(x[:, :3], encoding.make_pe(table)),
                                   attention(x[:, :3], encoding.make_pe(3)))
    for bad in (encoding.make_pe(6), encoding.make_pe(9)[:, 1:]):
        with pytest.raises(ValueError, match=r"pos_embs must be \[1, 2 \* n - 1, 16\] with n >= 7"):
            attention(x, bad)


def test_residual_forms_share_parameters_and_both_report_normalized_blocks():
    """Eq 5's normalized residual (full backbones) and the pre-LN stream (tiny ones) load
    the same checkpoint; block 1 reads the same input in both, later blocks differ, and
    every reported block output is its LayerNorm's (per-frame mean 0, std 1 at init)."""
    torch.manual_seed(0)
    pre_ln = load_backbone("efficient_conformer_tiny")["encoder"].eval()
    paper = load_backbone("efficient_conformer_tiny", {"normalized_residual": True})["encoder"].eval()
    assert not pre_ln.normalized_residual and paper.normalized_residual
    paper.load_state_dict(pre_ln.state_dict(), strict=True)
    feats = torch.randn(2, 150, 80)
    with torch.no_grad():
        outs = [encoder(feats, torch.tensor([1.0, 0.7])) for encoder in (pre_ln, paper)]
    first = [out.hidden_states[0] for out in outs]
    assert torch.allclose(first[0], first[1], atol=1e-6)
    for block in range(1, 12):
        assert (outs[0].hidden_states[block] - outs[1].hidden_states[block]).abs().max() > 0.1
    for out in outs:
        for hidden, lengths in zip(out.hidden_states, out.lengths):
            frames = hidden[0, : int(lengths[0])]
            assert frames.mean(-1).abs().max() < 1e-4
            assert (frames.std(-1, unbiased=False) - 1).abs().max() < 1e-3

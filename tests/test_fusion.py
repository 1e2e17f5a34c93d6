"""MMF, CMA and the classifier head: reference equations, masking, gradients."""

import math

import pytest
import torch

from equivalence import assert_same_values_and_gradients
from qieemo_sb.backbones import load_backbone
from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.modules.classifier import EmotionClassifier, MaskedMeanPooling
from qieemo_sb.modules.cma import CrossModalAttention
from qieemo_sb.modules.mmf import MultiBlockFusion


def reference_attention_row(query, keys, values):
    """ReLU(softmax(q K^T / sqrt(d)) V) for one query, written element by element."""
    d_att = query.shape[-1]
    scores = torch.tensor([float(query @ key) / math.sqrt(d_att) for key in keys])
    weights = torch.exp(scores - scores.max())
    weights = weights / weights.sum()
    return torch.relu(sum(w * v for w, v in zip(weights, values)))


@torch.no_grad()
def reference_cma(cma, emotion, ppg):
    """Eqs 6-8 for one utterance with no padding at all."""
    q = emotion @ cma.query.weight.T + cma.query.bias  # eq 6
    k = ppg @ cma.key.weight.T + cma.key.bias
    v = ppg @ cma.value.weight.T + cma.value.bias
    q_att = torch.stack([reference_attention_row(row, k, v) for row in q])  # eq 7
    return torch.stack([reference_attention_row(row, k, v) for row in q_att])  # eq 8


def test_cma_matches_equations_and_ignores_padded_keys():
    cma = CrossModalAttention(query_size=6, key_size=5, d_att=4)
    emotion_lengths, ppg_lengths = [3, 2], [4, 2]
    emotion = torch.randn(2, 3, 6)
    ppg = torch.randn(2, 4, 5)
    ppg[1, 2:] = 100.0  # padding with large values must not matter
    out, (att1, att2) = cma(emotion, torch.tensor(emotion_lengths), ppg, torch.tensor(ppg_lengths))
    assert out.shape == (2, 3, 4)
    for b in range(2):
        n, t = emotion_lengths[b], ppg_lengths[b]
        expected = reference_cma(cma, emotion[b, :n], ppg[b, :t])
        torch.testing.assert_close(out[b, :n].detach(), expected, atol=1e-5, rtol=1e-5)
        assert out[b, n:].abs().sum() == 0
        for weights in (att1, att2):
            assert weights[b, :, t:].abs().sum() == 0
            torch.testing.assert_close(weights[b].sum(-1), torch.ones(3))


@pytest.fixture(scope="module")
def tiny_encoder_output():
    torch.manual_seed(0)
    encoder = load_backbone("efficient_conformer_tiny")["encoder"].eval()
    with torch.no_grad():
        return encoder(torch.randn(3, 230, 80), torch.tensor([1.0, 0.61, 0.3]))


def test_mmf_six_blocks_aligns_to_last_block_rate(tiny_encoder_output):
    mmf = MultiBlockFusion(d_model=64, d_emo=32)
    emotion, lengths = mmf(tiny_encoder_output)
    # Blocks 7 (40 ms) and 8-12 (80 ms) fused at the last block's 80 ms rate.
    assert emotion.shape == (3, tiny_encoder_output.hidden_states[-1].shape[1], 32)
    assert torch.equal(lengths, tiny_encoder_output.lengths[-1])
    assert emotion[2, int(lengths[2]):].abs().sum() == 0


def test_mmf_gradients_reach_every_block_weight(tiny_encoder_output):
    mmf = MultiBlockFusion(d_model=64, d_emo=32, dropout=0.0)
    emotion, lengths = mmf(tiny_encoder_output)
    MaskedMeanPooling()(emotion, lengths).pow(2).sum().backward()
    grad = mmf.block_logits.grad
    assert grad is not None and grad.shape == (6,)
    assert (grad.abs() > 0).all(), grad
    torch.testing.assert_close(mmf.block_weights.sum(), torch.tensor(1.0))


def test_mmf_single_block_is_ppg_only(tiny_encoder_output):
    mmf = MultiBlockFusion(d_model=64, blocks=[12], d_emo=32, time_strides=[1, 2])
    emotion, lengths = mmf(tiny_encoder_output)
    last = tiny_encoder_output.lengths[-1]
    assert torch.equal(lengths, (last + 1) // 2)
    assert emotion.shape == (3, (tiny_encoder_output.hidden_states[-1].shape[1] + 1) // 2, 32)
    assert mmf.block_weights.tolist() == [1.0]


def test_mmf_padded_batch_matches_one_by_one():
    torch.manual_seed(1)
    encoder = load_backbone("efficient_conformer_tiny")["encoder"].eval()
    mmf = MultiBlockFusion(d_model=64, blocks=[1, 5, 12], d_emo=16, time_strides=[2, 1]).eval()
    lengths = [150, 77]
    feats = torch.randn(2, 150, 80)
    with torch.no_grad():
        batched, batched_lengths = mmf(encoder(feats, torch.tensor(lengths) / 150.0))
        for i, n in enumerate(lengths):
            single, single_lengths = mmf(encoder(feats[i : i + 1, :n], torch.ones(1)))
            m = int(single_lengths[0])
            assert int(batched_lengths[i]) == m
            assert (batched[i, :m] - single[0]).abs().max() <= 1e-4


def test_mmf_projection_reads_the_channel_major_layout(tiny_encoder_output):
    """Channels-last convolutions with a permuted projection weight compute the
    checkpoint's meaning: weighted blocks stacked as [B, K, T, D], convolutions,
    each frame's [channels, features] flattened channel-major, the projection."""
    torch.manual_seed(0)
    mmf = MultiBlockFusion(d_model=64, blocks=[7, 9, 12], d_emo=16, time_strides=[1, 2], dropout=0.0)
    hidden = [h.clone().requires_grad_() for h in tiny_encoder_output.hidden_states]
    encoder_out = tiny_encoder_output._replace(hidden_states=hidden)

    def reference():
        aligned, lengths = mmf.align(encoder_out)
        x = torch.stack([w * h for w, h in zip(mmf.block_weights, aligned)], dim=1)
        for conv, t_stride in zip(mmf.convs, mmf.time_strides):
            keep = torch.arange(x.shape[2])[None, :] < lengths[:, None]
            x = torch.relu(conv(x * keep[:, None, :, None]))
            lengths = (lengths + t_stride - 1) // t_stride
        batch, channels, time, features = x.shape
        out = mmf.projection(x.permute(0, 2, 1, 3).reshape(batch, time, channels * features))
        keep = torch.arange(time)[None, :] < lengths[:, None]
        return out * keep[..., None], lengths

    (emotion, lengths), (expected, expected_lengths) = mmf(encoder_out), reference()
    assert torch.equal(lengths, expected_lengths)
    assert_same_values_and_gradients(emotion, expected, [*hidden[6:], *mmf.parameters()])
    with torch.inference_mode():  # the kept permuted weight, and one clip: no masks
        torch.testing.assert_close(mmf(encoder_out)[0], expected.detach())
        single = EncoderOutput([h[:1, : int(n[0])] for h, n in zip(hidden, encoder_out.lengths)],
                               [n[:1] for n in encoder_out.lengths], encoder_out.subsampling)
        n = int(expected_lengths[0])
        torch.testing.assert_close(mmf(single)[0][0], expected[0, :n].detach())


def test_mmf_block_errors(tiny_encoder_output):
    with pytest.raises(ValueError, match="beyond the encoder's 12 blocks"):
        MultiBlockFusion(d_model=64, blocks=[12, 13])(tiny_encoder_output)
    with pytest.raises(ValueError, match="1-based"):
        MultiBlockFusion(d_model=64, blocks=[0, 12])
    odd = EncoderOutput(
        [torch.zeros(1, 6, 8), torch.zeros(1, 4, 8)],
        [torch.tensor([6]), torch.tensor([4])],
        [2, 3],
    )
    with pytest.raises(ValueError, match="cannot be pooled"):
        MultiBlockFusion(d_model=8, blocks=[1, 2])(odd)


def test_head_learns_a_separable_toy_task(tiny_encoder_output):
    """MMF -> CMA -> pooling -> classifier fits 3 utterances with 3 labels."""
    torch.manual_seed(0)
    mmf = MultiBlockFusion(d_model=64, d_emo=32, dropout=0.0)
    cma = CrossModalAttention(query_size=32, key_size=64, d_att=32)
    head = EmotionClassifier(input_size=32, n_classes=3, dropout=0.0)
    params = [*mmf.parameters(), *cma.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    targets = torch.tensor([0, 1, 2])
    ppg, ppg_lengths = tiny_encoder_output.hidden_states[-1], tiny_encoder_output.lengths[-1]
    for _ in range(60):
        emotion, lengths = mmf(tiny_encoder_output)
        attended, _ = cma(emotion, lengths, ppg, ppg_lengths)
        logits = head(MaskedMeanPooling()(attended, lengths))
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert logits.argmax(-1).tolist() == [0, 1, 2]
    assert loss.item() < 0.3

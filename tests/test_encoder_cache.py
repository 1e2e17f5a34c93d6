"""Stage 2's frozen-encoder cache: same results as encoding every batch, keys that invalidate."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from qieemo_sb.encoder_cache import EncoderOutputCache
from qieemo_sb.encoders.output import EncoderOutput


def _encoder_output(rows, frames):
    hidden = [torch.arange(len(rows) * frames * 2, dtype=torch.float32).reshape(len(rows), frames, 2) * b
              for b in (1, 2, 3)]
    return EncoderOutput(hidden, [torch.full((len(rows),), frames)] * 3, [1, 1, 2])


def test_keys_follow_weights_settings_and_audio_files(tmp_path):
    encoder, normalize, features = torch.nn.Linear(2, 2), torch.nn.Identity(), torch.nn.Identity()
    cache = EncoderOutputCache(tmp_path / "cache", blocks=[2], dtype="float32")
    first = cache.bind(encoder=encoder, normalize=normalize, compute_features=features)
    assert cache.bind(encoder=encoder, normalize=normalize, compute_features=features) == first
    with torch.no_grad():
        encoder.weight[0, 0] += 1e-3
    assert cache.bind(encoder=encoder, normalize=normalize, compute_features=features) != first
    features.pad_to_30s = True  # a feature setting (Whisper's 30 s inputs) is part of the key
    assert cache.bind(encoder=encoder, normalize=normalize, compute_features=features) != first
    assert EncoderOutputCache(tmp_path / "cache", blocks=[1], dtype="float32").bind(
        encoder=encoder, normalize=normalize, compute_features=features) != cache.folder

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600), 16000)
    calls = []

    def encode(rows):
        calls.append(list(rows))
        return _encoder_output(rows, 4)

    out = cache.encoded(["a"], [wav], encode)
    assert out.hidden_states[0] is None and out.lengths[0] is None
    assert torch.equal(out.hidden_states[2], _encoder_output([0], 4).hidden_states[2])
    cache.encoded(["a"], [wav], encode)
    assert (cache.hits, cache.misses, calls) == (1, 1, [[0]])
    sf.write(wav, np.zeros(3200), 16000)  # an edited file is encoded again
    os.utime(wav, ns=(1, 1))
    cache.encoded(["a"], [wav], encode)
    assert cache.misses == 2 and len(calls) == 2
    assert cache.size_bytes() > 0

    # An unreadable entry is encoded again, and a batch mixes read and encoded rows.
    entry = next(cache.folder.glob("*.pt"))
    entry.write_bytes(b"truncated")
    out = cache.encoded(["b", "a"], [tmp_path / "b.wav", wav], encode)
    assert out.hidden_states[1].shape == (2, 4, 2)


def test_half_precision_entries_round_to_the_encoder_outputs(tmp_path):
    cache = EncoderOutputCache(tmp_path, blocks=[1, 2], dtype="float16")
    cache.bind(encoder=torch.nn.Linear(2, 2), normalize=torch.nn.Identity(), compute_features=torch.nn.Identity())
    rows = [0, 1]
    exact = _encoder_output(rows, 5)
    out = cache.encoded(["x", "y"], ["x.wav", "y.wav"], lambda r: exact)
    for block in (0, 1, 2):
        assert out.hidden_states[block].dtype == torch.float32
        torch.testing.assert_close(out.hidden_states[block], exact.hidden_states[block], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="dtype must be one of"):
        EncoderOutputCache(tmp_path, blocks=[1], dtype="int8")
    with pytest.raises(ValueError, match="beyond the encoder's 3 blocks"):
        late = EncoderOutputCache(tmp_path, blocks=[4])
        late.bind(encoder=torch.nn.Linear(2, 2), normalize=torch.nn.Identity(), compute_features=torch.nn.Identity())
        late.encoded(["z"], ["z.wav"], lambda r: _encoder_output(r, 2))

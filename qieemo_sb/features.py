"""Features of a padded batch with each utterance's exact length.

Example
-------
>>> from speechbrain.lobes.features import Fbank
>>> feature_frames(Fbank(), torch.tensor([16000, 8000])).tolist()
[101, 51]
"""

from typing import Tuple

import torch
from speechbrain.lobes.features import Fbank
from torch import nn


def feature_frames(compute_features: nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """Feature frames the extractor makes from clips of ``samples`` samples.

    SpeechBrain's ``Fbank`` (a centred STFT): ``samples // hop + 1``. Any other
    extractor says it itself, with a ``num_frames(samples)`` method.

    Arguments
    ---------
    compute_features : torch.nn.Module
        The feature extractor.
    samples : torch.Tensor
        ``[batch]`` clip lengths in samples.

    Returns
    -------
    torch.Tensor
        ``[batch]`` frame counts.
    """
    if isinstance(compute_features, Fbank):
        hop = compute_features.compute_STFT.hop_length  # in samples
        return torch.div(samples, hop, rounding_mode="floor") + 1
    num_frames = getattr(compute_features, "num_frames", None)
    if num_frames is None:
        raise TypeError(
            f"{type(compute_features).__name__} has no num_frames(samples) method: the frame count of "
            "each clip cannot be told (SpeechBrain's Fbank is counted here; Whisper's features have the method)"
        )
    return num_frames(samples)


def fbank_with_lengths(
    compute_features: torch.nn.Module,
    normalize: torch.nn.Module,
    wavs: torch.Tensor,
    wav_lens: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalized features of a padded batch, with their exact relative lengths.

    A centred STFT gives ``samples // hop + 1`` frames. Scaling the waveform's
    relative length to the padded frame count can be one frame off that, and
    the extra (or missing) frame changes the utterance's result with the
    batch it is in. Counting each utterance's frames from its samples makes
    a padded batch give what each utterance gives alone. Features are made in
    float32 even under mixed-precision autocast (log-mel and normalizer
    statistics lose too much in 16 bits).

    Arguments
    ---------
    compute_features : torch.nn.Module
        SpeechBrain ``Fbank``, or an extractor with a ``num_frames`` method
        (Whisper's features); see :func:`feature_frames`.
    normalize : torch.nn.Module
        Feature normalizer, called as ``normalize(feats, wav_lens)``.
    wavs : torch.Tensor
        ``[batch, samples]`` zero-padded waveforms.
    wav_lens : torch.Tensor
        ``[batch]`` relative lengths of ``wavs``.

    Returns
    -------
    feats : torch.Tensor
        ``[batch, frames, n_mels]``.
    feat_lens : torch.Tensor
        ``[batch]`` relative lengths of ``feats``.

    Example
    -------
    >>> from qieemo_sb.masking import relative_to_absolute_lengths
    >>> wavs = torch.randn(2, 16000)
    >>> feats, feat_lens = fbank_with_lengths(Fbank(), lambda x, lens: x, wavs, torch.tensor([1.0, 0.5]))
    >>> feats.shape[1], relative_to_absolute_lengths(feat_lens, feats.shape[1]).tolist()
    (101, [101, 51])
    """
    with torch.autocast(device_type=wavs.device.type, enabled=False):
        feats = normalize(compute_features(wavs.float()), wav_lens)
    samples = torch.round(wav_lens.float() * wavs.shape[1])
    return feats, feature_frames(compute_features, samples) / feats.shape[1]

"""Reading audio for the emotion recipe and inference: any rate, any channels.

``load_audio`` reads wav/flac/ogg (anything libsndfile reads), averages the
channels to mono and resamples to the model's rate. A file that cannot be
read, holds no samples or holds NaN/inf is a :class:`AudioError` naming it.

Example
-------
>>> import tempfile, numpy as np, soundfile as sf
>>> path = tempfile.mkdtemp() + "/stereo.wav"
>>> t = np.arange(44100) / 44100
>>> sf.write(path, np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1) * 0.5, 44100)
>>> load_audio(path, sample_rate=16000).shape
torch.Size([16000])
>>> audio_duration(path)
1.0
"""

from pathlib import Path
from typing import Union

import numpy as np
import soundfile
import torch
import torchaudio


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file."""


def audio_duration(path: Union[str, Path]) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot read audio ({error})") from error
    return info.frames / info.samplerate


def load_audio(path: Union[str, Path], sample_rate: int = 16000, min_duration: float = 0.0) -> torch.Tensor:
    """Reads ``path`` as a mono float32 ``[samples]`` tensor at ``sample_rate``.

    Arguments
    ---------
    path : str or Path
        An audio file libsndfile reads (wav, flac, ogg, ...).
    sample_rate : int
        Output rate; other rates are resampled (torchaudio's sinc filter).
    min_duration : float
        Shorter audio (seconds) is an :class:`AudioError`.

    Returns
    -------
    torch.Tensor
        ``[samples]`` waveform, channels averaged.
    """
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: cannot read audio ({error})") from error
    if data.size == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    wav = torch.from_numpy(data.mean(axis=1))
    if rate != sample_rate:
        wav = torchaudio.functional.resample(wav, orig_freq=rate, new_freq=sample_rate)
    duration = wav.shape[0] / sample_rate
    if duration < min_duration:
        raise AudioError(f"{path}: {duration:.3f} s of audio is shorter than the {min_duration} s minimum")
    return wav

"""Backbone 3: a pretrained Whisper encoder behind the Qieemo encoder contract.

Whisper's encoder is a ready-made ASR encoder (stage 1 is skipped): its
log-mel features, its conv front-end (20 ms frames) and its transformer
blocks, loaded with ``transformers`` from a local folder in Hugging Face
format (``config.json`` + weights) or a hub id. The contract is the one of
the conformer backbones (:class:`~qieemo_sb.encoders.conformer.EncoderOutput`):
every block's output with its valid lengths, so MMF, CMA and pooling never
see padding.

Whisper was trained on 30 s inputs: shorter clips are padded to 30 s and the
encoder attends over the padding too. ``real_length=False`` (the default) does
exactly that and cuts every block's output to the clip's real frames
(50 per second); ``real_length=True`` runs the encoder on the real frames only
(positions ``0 .. T-1``, padded frames of a batch masked out of attention),
which is several times faster on short clips but feeds the model inputs it
was not trained on (``benchmarks/whisper_real_length.py`` measures both the
time and the change in hidden states). Either way a clip longer than 30 s is
cut to its first 30 s, Whisper's limit.

Example
-------
>>> from transformers import WhisperConfig
>>> config = WhisperConfig(d_model=32, encoder_layers=4, encoder_attention_heads=2,
...                        encoder_ffn_dim=64, num_mel_bins=80).to_dict()
>>> encoder = WhisperEncoder(config=config, real_length=True)
>>> features = WhisperFeatures(n_mels=80, pad_to_30s=False)
>>> wavs = torch.randn(2, 16000)
>>> feats = features(wavs)
>>> out = encoder(feats, torch.tensor([1.0, 0.5]))
>>> feats.shape[1], [tuple(h.shape) for h in out.hidden_states][:2], out.lengths[0].tolist()
(100, [(2, 50, 32), (2, 50, 32)], [50, 25])
>>> last_half(encoder.num_blocks)
[3, 4]
"""

from typing import Any, Dict, List, Optional

import torch
from speechbrain.processing.features import InputNormalization
from torch import nn

from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.masking import (
    ceil_div,
    lengths_to_padding_mask,
    relative_to_absolute_lengths,
    zero_padding,
)

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
#: Whisper's input: 30 s, 3000 feature frames, 1500 encoder frames.
MAX_SAMPLES = 30 * SAMPLE_RATE
MAX_FRAMES = MAX_SAMPLES // HOP


def _transformers():
    try:
        import transformers
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "backbone 3 (Whisper) needs the transformers package: pip install -e '.[whisper]'"
        ) from error
    return transformers


class WhisperFeatures(nn.Module):
    """Whisper's log-mel features, time-major, as ``WhisperFeatureExtractor`` computes them.

    Power spectrum (400-point Hann STFT, 10 ms hop) -> Slaney mel filters ->
    ``log10`` -> floored at the clip's maximum minus 8 -> ``(x + 4) / 4``. The
    waveform is zero-padded on the right, as Whisper pads to 30 s, and the
    maximum is taken over the first 3000 frames of each row, so a clip gives
    the same features alone or in a zero-padded batch.

    Arguments
    ---------
    n_mels : int
        Mel bins (80; 128 for large-v3): the model's ``num_mel_bins``.
    pad_to_30s : bool
        True: always 3000 frames (Whisper's input); False: the batch's frames.

    Example
    -------
    >>> features = WhisperFeatures(n_mels=80, pad_to_30s=False)
    >>> features(torch.randn(2, 8000)).shape, features.num_frames(torch.tensor([8000, 4000])).tolist()
    (torch.Size([2, 50, 80]), [50, 25])
    """

    def __init__(self, n_mels: int = 80, pad_to_30s: bool = True):
        super().__init__()
        filters = _transformers().audio_utils.mel_filter_bank(
            num_frequency_bins=1 + N_FFT // 2,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("mel_filters", torch.from_numpy(filters).float().T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.n_mels, self.pad_to_30s = n_mels, pad_to_30s

    @staticmethod
    def num_frames(samples: torch.Tensor) -> torch.Tensor:
        """Valid feature frames of clips of ``samples`` samples (at most 3000)."""
        return torch.div(samples.clamp(max=MAX_SAMPLES), HOP, rounding_mode="floor")

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        """``[batch, samples]`` zero-padded 16 kHz waveforms -> ``[batch, frames, n_mels]``."""
        wavs = wavs[:, :MAX_SAMPLES]
        frames = MAX_FRAMES if self.pad_to_30s else wavs.shape[1] // HOP
        # Zeros after the signal, as far as any kept frame's window reaches.
        padded = nn.functional.pad(wavs, (0, frames * HOP + N_FFT - wavs.shape[1]))
        spectrum = torch.stft(padded, N_FFT, HOP, window=self.window, return_complex=True)
        power = spectrum[..., :frames].abs() ** 2
        log_mel = torch.clamp(self.mel_filters @ power, min=1e-10).log10()
        # Frames of zeros are log10(1e-10) = -10: they never raise the maximum.
        maximum = log_mel.amax(dim=(1, 2), keepdim=True)
        log_mel = torch.maximum(log_mel, maximum - 8.0)
        return ((log_mel + 4.0) / 4.0).transpose(1, 2)


def identity_normalizer(n_mels: int) -> InputNormalization:
    """A global normalizer with mean 0 and std 1 (the contract's ``normalize`` for Whisper).

    Whisper's features carry their own normalization; the identity keeps the
    backbone contract (and its checkpoint file) the same as the conformers'.
    Kept in eval mode by the recipes, so it never updates.

    Example
    -------
    >>> x = torch.randn(1, 4, 80)
    >>> torch.equal(identity_normalizer(80).eval()(x, torch.ones(1)), x)
    True
    """
    normalizer = InputNormalization(norm_type="global")
    normalizer._load_statistics_dict(
        {"count": 1, "glob_mean": torch.zeros(n_mels), "glob_std": torch.ones(n_mels)}
    )
    return normalizer


def all_blocks(num_blocks: int) -> List[int]:
    """1-based indices of every block (the MMF default for Whisper).

    Example
    -------
    >>> all_blocks(6)
    [1, 2, 3, 4, 5, 6]
    """
    return list(range(1, num_blocks + 1))


def last_half(num_blocks: int) -> List[int]:
    """1-based indices of the last half of the blocks (the paper's choice for 12 blocks).

    Example
    -------
    >>> last_half(6), last_half(32)[:2]
    ([4, 5, 6], [17, 18])
    """
    return list(range(num_blocks // 2 + 1, num_blocks + 1))


def portable_config(source: str) -> Dict[str, Any]:
    """The model's ``WhisperConfig`` as a dict that names no file or machine.

    ``qieemo export`` writes it in place of ``source``, so that the exported
    folder rebuilds the encoder (then loads its own weights) anywhere.
    """
    config = _transformers().WhisperConfig.from_pretrained(str(source)).to_diff_dict()
    for key in ("_name_or_path", "transformers_version", "architectures"):
        config.pop(key, None)
    return config


class WhisperEncoder(nn.Module):
    """A Whisper encoder returning every block's output and valid lengths.

    Arguments
    ---------
    source : str, optional
        Local folder in Hugging Face format or hub id of a Whisper model.
    config : dict, optional
        A ``WhisperConfig`` as a dict, instead of ``source`` (random weights
        unless a checkpoint is loaded: this is how an exported model rebuilds
        the encoder before loading its own ``encoder.ckpt``).
    pretrained : bool
        With ``source``: load its weights (False: its architecture, random
        weights: the no-pretraining ablation).
    real_length : bool
        Run on the clips' real frames instead of 30 s inputs (see the module
        docstring); the features must then be ``WhisperFeatures(pad_to_30s=False)``.

    Example
    -------
    >>> from transformers import WhisperConfig
    >>> config = WhisperConfig(d_model=16, encoder_layers=2, encoder_attention_heads=2,
    ...                        encoder_ffn_dim=32).to_dict()
    >>> out = WhisperEncoder(config=config)(torch.zeros(1, 3000, 80), torch.tensor([0.1]))
    >>> out.hidden_states[-1].shape, out.lengths[-1].tolist(), out.subsampling
    (torch.Size([1, 150, 16]), [150], [2, 2])
    """

    def __init__(
        self,
        source: Optional[str] = None,
        config: Optional[Dict[str, Any]] = None,
        pretrained: bool = True,
        real_length: bool = False,
    ):
        super().__init__()
        if (source is None) == (config is None):
            raise ValueError(
                "WhisperEncoder needs exactly one of source (a local Whisper folder or hub id) and config"
            )
        transformers = _transformers()
        if source is not None and pretrained:
            model = transformers.WhisperModel.from_pretrained(str(source), dtype=torch.float32)
            self.whisper = model.get_encoder()
        else:
            if source is not None:
                config = transformers.WhisperConfig.from_pretrained(str(source)).to_dict()
            self.whisper = transformers.models.whisper.modeling_whisper.WhisperEncoder(
                transformers.WhisperConfig(**config)
            )
        # Fused attention whatever this transformers version defaults to.
        self.whisper.config._attn_implementation = "sdpa"
        self.real_length = real_length
        self.num_blocks = self.whisper.config.encoder_layers
        self.d_model = self.whisper.config.d_model
        self.n_mels = self.whisper.config.num_mel_bins
        self.max_positions = self.whisper.config.max_source_positions
        self.subsampling = [2] * self.num_blocks
        self.frame_periods_ms = [20.0] * self.num_blocks

    def forward(self, feats: torch.Tensor, wav_lens: torch.Tensor) -> EncoderOutput:
        """Encodes a padded batch of Whisper features.

        Arguments
        ---------
        feats : torch.Tensor
            ``[batch, frames, n_mels]`` from :class:`WhisperFeatures` (3000
            frames unless ``real_length``).
        wav_lens : torch.Tensor
            ``[batch]`` SpeechBrain relative lengths of ``feats``.

        Returns
        -------
        EncoderOutput
            Every block's output cut to the batch's longest valid length, zero
            on padded frames (the last one after Whisper's final LayerNorm).
        """
        frames = feats.shape[1]
        if not self.real_length and frames != 2 * self.max_positions:
            raise ValueError(
                f"Whisper expects {2 * self.max_positions} feature frames (30 s), got {frames}: use "
                "WhisperFeatures(pad_to_30s=True), or real_length=True with pad_to_30s=False"
            )
        if frames > 2 * self.max_positions:
            raise ValueError(f"at most {2 * self.max_positions} feature frames (30 s), got {frames}")
        lengths = relative_to_absolute_lengths(wav_lens, frames)
        whisper = self.whisper
        x = feats.transpose(1, 2)
        if self.real_length:
            # Padded frames zeroed before each conv, as a clip alone sees them.
            x = nn.functional.gelu(whisper.conv1(zero_padding(x, lengths, time_dim=2)))
            x = nn.functional.gelu(whisper.conv2(zero_padding(x, lengths, time_dim=2)))
        else:
            x = nn.functional.gelu(whisper.conv2(nn.functional.gelu(whisper.conv1(x))))
        lengths = ceil_div(lengths, 2)
        x = x.transpose(1, 2)
        x = x + whisper.embed_positions.weight[: x.shape[1]]
        x = nn.functional.dropout(x, p=whisper.dropout, training=self.training)
        attention_mask = None
        if self.real_length and bool((lengths < x.shape[1]).any()):
            padding = lengths_to_padding_mask(lengths, x.shape[1])
            attention_mask = torch.zeros(padding.shape, dtype=x.dtype, device=x.device)
            attention_mask = attention_mask.masked_fill(padding, torch.finfo(x.dtype).min)[:, None, None, :]
        hidden_states = []
        for layer in whisper.layers:
            x = layer(x, attention_mask)
            hidden_states.append(x)
        hidden_states[-1] = whisper.layer_norm(x)
        valid = int(lengths.max())
        hidden_states = [zero_padding(h[:, :valid], lengths) for h in hidden_states]
        return EncoderOutput(hidden_states, [lengths] * self.num_blocks, list(self.subsampling))

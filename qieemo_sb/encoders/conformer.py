"""Conformer encoder returning every block's output: both Qieemo backbones.

Backbone 1 (progressive downsampling, Efficient Conformer) and backbone 2
(plain conformer) are this one class with different ``frontend_layers`` and
``block_strides``; the backbone YAMLs in ``qieemo_sb/hparams/backbones`` set
them.
"""

from typing import Optional, Sequence

import torch
from speechbrain.nnet.attention import RelPosEncXL
from torch import nn

from qieemo_sb.encoders.conformer_block import ConformerBlock
from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.encoders.subsampling import Conv2dSubsampling
from qieemo_sb.masking import relative_to_absolute_lengths


class ConformerEncoder(nn.Module):
    """Conv2d front-end followed by conformer blocks, some of them strided.

    Arguments
    ---------
    input_size : int
        Feature dimension (80-d fbank).
    d_model : int
        Model dimension.
    num_blocks : int
        Number of conformer blocks.
    d_ffn : int
        Feed-forward hidden size.
    nhead : int
        Attention heads.
    kernel_size : int
        Depthwise convolution kernel.
    frontend_layers : int
        Stride-2 Conv2d layers of the front-end (1: 2x, 2: 4x).
    frontend_channels : int
        Channels of the front-end convolutions.
    block_strides : sequence of int, optional
        Time stride of each block (``num_blocks`` entries); default all 1.
    dropout : float
        Dropout everywhere.
    normalized_residual : bool
        True: each block reads the previous block's output, normalized by its
        final LayerNorm (paper eq 5, Gulati et al.'s conformer). False: the
        blocks add to one un-normalized residual stream (pre-LN) and each
        block's final LayerNorm only normalizes the output it reports. Same
        parameters either way. A small model trained briefly on little data
        needs False: with True its deep blocks settle on outputs that do not
        depend on the audio (see ``benchmarks/encoder_content.py``).
    feature_hop_ms : float
        Hop of the input features, to report frame periods.

    Example
    -------
    >>> encoder = ConformerEncoder(
    ...     d_model=32, num_blocks=4, d_ffn=64, nhead=2, kernel_size=3,
    ...     frontend_layers=1, frontend_channels=8, block_strides=[1, 2, 1, 2],
    ... )
    >>> out = encoder(torch.rand(2, 100, 80), torch.tensor([1.0, 0.5]))
    >>> [tuple(h.shape) for h in out.hidden_states]
    [(2, 50, 32), (2, 25, 32), (2, 25, 32), (2, 13, 32)]
    >>> [n.tolist() for n in out.lengths]
    [[50, 25], [25, 13], [25, 13], [13, 7]]
    >>> encoder.frame_periods_ms
    [20.0, 40.0, 40.0, 80.0]
    """

    def __init__(
        self,
        input_size: int = 80,
        d_model: int = 256,
        num_blocks: int = 12,
        d_ffn: int = 2048,
        nhead: int = 4,
        kernel_size: int = 15,
        frontend_layers: int = 2,
        frontend_channels: int = 256,
        block_strides: Optional[Sequence[int]] = None,
        dropout: float = 0.1,
        normalized_residual: bool = True,
        feature_hop_ms: float = 10.0,
    ):
        super().__init__()
        block_strides = list(block_strides or [1] * num_blocks)
        if len(block_strides) != num_blocks or min(block_strides) < 1:
            raise ValueError(
                f"block_strides must hold {num_blocks} positive ints (one per "
                f"block), got {block_strides}"
            )
        self.frontend = Conv2dSubsampling(
            input_size=input_size,
            d_model=d_model,
            num_layers=frontend_layers,
            channels=frontend_channels,
            dropout=dropout,
        )
        self.positional_encoding = RelPosEncXL(d_model)
        self.blocks = nn.ModuleList(
            ConformerBlock(
                d_model=d_model,
                d_ffn=d_ffn,
                nhead=nhead,
                kernel_size=kernel_size,
                stride=stride,
                dropout=dropout,
            )
            for stride in block_strides
        )
        self.subsampling = []
        factor = self.frontend.subsampling
        for stride in block_strides:
            factor *= stride
            self.subsampling.append(factor)
        self.frame_periods_ms = [f * feature_hop_ms for f in self.subsampling]
        self.d_model = d_model
        self.normalized_residual = normalized_residual

    def forward(self, feats: torch.Tensor, wav_lens: torch.Tensor) -> EncoderOutput:
        """Encodes a padded batch of features.

        Arguments
        ---------
        feats : torch.Tensor
            ``[batch, time, input_size]`` (normalized fbank).
        wav_lens : torch.Tensor
            ``[batch]`` SpeechBrain relative lengths of ``feats``.

        Returns
        -------
        EncoderOutput
            All block outputs with their valid lengths.
        """
        lengths = relative_to_absolute_lengths(wav_lens, feats.shape[1])
        x, lengths = self.frontend(feats, lengths)
        pos_embs = self._position_embeddings(x.shape[1], x.dtype)
        hidden_states, block_lengths = [], []
        for block in self.blocks:
            time_in = x.shape[1]
            stream, lengths = block.residual_stream(x, lengths, pos_embs)
            out = block.output(stream, lengths)
            x = out if self.normalized_residual else stream
            if x.shape[1] != time_in:  # a strided block: new rate, new positions
                pos_embs = self._position_embeddings(x.shape[1], x.dtype)
            hidden_states.append(out)
            block_lengths.append(lengths)
        return EncoderOutput(hidden_states, block_lengths, list(self.subsampling))

    def _position_embeddings(self, time: int, dtype: torch.dtype) -> torch.Tensor:
        """Relative position embeddings ``[1, 2 * time - 1, d_model]``."""
        return self.positional_encoding.make_pe(time).to(dtype)

"""Convolutional front-end: fbank frames -> ``d_model`` frames at a lower rate."""

import torch
from torch import nn

from qieemo_sb.masking import ceil_div, lengths_if_padded, zero_padding


class Conv2dSubsampling(nn.Module):
    """Stack of stride-2 3x3 Conv2d + ReLU layers, then a linear projection.

    Each layer halves time (keeping a partial last window: ``ceil(T / 2)``)
    and frequency. Padded frames are set to zero before every convolution, so
    the valid frames of an utterance see exactly the zero padding they would
    see alone: a padded batch gives the per-utterance outputs.

    The projection reads the last layer's ``[channels, frequency]`` features
    of each frame flattened channel-major.

    Arguments
    ---------
    input_size : int
        Feature dimension of the input (80 for the fbank of the backbones).
    d_model : int
        Output dimension.
    num_layers : int
        Number of stride-2 layers: 1 for a 2x front-end, 2 for 4x.
    channels : int
        Output channels of each convolution.
    dropout : float
        Dropout after the projection.

    Example
    -------
    >>> frontend = Conv2dSubsampling(input_size=80, d_model=64, num_layers=2, channels=8)
    >>> out, lengths = frontend(torch.rand(2, 101, 80), torch.tensor([101, 50]))
    >>> out.shape, lengths.tolist()
    (torch.Size([2, 26, 64]), [26, 13])
    """

    def __init__(
        self,
        input_size: int,
        d_model: int,
        num_layers: int = 2,
        channels: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.convs = nn.ModuleList(
            nn.Conv2d(
                1 if index == 0 else channels,
                channels,
                kernel_size=3,
                stride=2,
                padding=1,
            )
            for index in range(num_layers)
        )
        out_freq = input_size
        for _ in range(num_layers):
            out_freq = (out_freq + 1) // 2
        self.projection = nn.Linear(channels * out_freq, d_model)
        self.dropout = nn.Dropout(dropout)
        self.subsampling = 2**num_layers

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        """Subsamples the features.

        Arguments
        ---------
        feats : torch.Tensor
            ``[batch, time, input_size]``.
        lengths : torch.Tensor
            ``[batch]`` valid frame counts.

        Returns
        -------
        out : torch.Tensor
            ``[batch, ceil(time / subsampling), d_model]``.
        lengths : torch.Tensor
            ``[batch]`` valid output frame counts.
        """
        x = feats.unsqueeze(1)  # [B, 1, T, F]
        mask_lengths = lengths_if_padded(lengths, feats.shape[1])  # None: nothing to zero
        for conv in self.convs:
            x = torch.relu(conv(zero_padding(x, mask_lengths, time_dim=2)))
            lengths = ceil_div(lengths, 2)
            mask_lengths = None if mask_lengths is None else lengths
        return self.dropout(self.project(x)), lengths

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, channels, time, frequency]`` -> ``[batch, time, d_model]``."""
        return self.projection(x.transpose(1, 2).flatten(2))

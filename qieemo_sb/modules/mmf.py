"""MMF: multi-block fusion of encoder block outputs into emotion features E (paper II.B)."""

from typing import List, Sequence, Tuple

import torch
from torch import nn

from qieemo_sb.encoders.output import EncoderOutput
from qieemo_sb.masking import ceil_div, lengths_if_padded, masked_avg_pool1d, zero_padding
from qieemo_sb.modules.standardization import FrameStandardization


class MultiBlockFusion(nn.Module):
    """Weighted stack of chosen blocks -> Conv2D stack -> emotion features E.

    0. Optionally (``standardize``), each chosen block's features are
       standardised over valid frames (:class:`FrameStandardization`).
    1. Each chosen block output is average-pooled (over valid frames) to the
       frame rate of the slowest chosen block, normally the last block, whose
       rate the PPG features h^l have.
    2. Each is scaled by a learned weight (softmax over the chosen blocks) and
       the K blocks are stacked as channels: ``[batch, K, time, d_model]``.
    3. Conv2D layers (3x3 by default, ReLU) with their own time and feature
       strides; padded frames are zeroed before each layer.
    4. Channels x remaining features are projected to ``d_emo``:
       ``E = [batch, n, d_emo]``.

    With ``blocks=[12]`` this is the "PPG only" ablation (no multi-block
    fusion).

    The projection reads each frame's ``[channels, features]`` flattened
    channel-major.

    Arguments
    ---------
    d_model : int
        Dimension of the block outputs.
    blocks : sequence of int
        1-based indices of the fused blocks (default: the last six of 12).
    d_emo : int
        Dimension of E.
    conv_channels : sequence of int
        Output channels of each Conv2D layer.
    time_strides : sequence of int
        Time stride of each layer (``n = ceil(time / prod(time_strides))``).
    feature_strides : sequence of int
        Feature-axis stride of each layer.
    kernel_size : int
        Odd Conv2D kernel size.
    dropout : float
        Dropout after each layer and on E.
    standardize : bool
        Standardise each chosen block's features first (running statistics).

    Example
    -------
    >>> from qieemo_sb.encoders.output import EncoderOutput
    >>> hidden = [torch.rand(2, 8, 16)] * 2 + [torch.rand(2, 4, 16)] * 2
    >>> lengths = [torch.tensor([8, 5])] * 2 + [torch.tensor([4, 3])] * 2
    >>> encoder_out = EncoderOutput(hidden, lengths, [2, 2, 4, 4])
    >>> mmf = MultiBlockFusion(
    ...     d_model=16, blocks=[2, 3, 4], d_emo=8,
    ...     conv_channels=[4], time_strides=[1], feature_strides=[2],
    ... )
    >>> emotion, emotion_lengths = mmf(encoder_out)
    >>> emotion.shape, emotion_lengths.tolist()
    (torch.Size([2, 4, 8]), [4, 3])
    """

    def __init__(
        self,
        d_model: int,
        blocks: Sequence[int] = (7, 8, 9, 10, 11, 12),
        d_emo: int = 256,
        conv_channels: Sequence[int] = (32, 32),
        time_strides: Sequence[int] = (1, 1),
        feature_strides: Sequence[int] = (2, 2),
        kernel_size: int = 3,
        dropout: float = 0.1,
        standardize: bool = False,
    ):
        super().__init__()
        self.blocks = [int(b) for b in blocks]
        if not self.blocks or min(self.blocks) < 1:
            raise ValueError(f"blocks must be 1-based block indices, got {blocks}")
        if not len(conv_channels) == len(time_strides) == len(feature_strides):
            raise ValueError(
                "conv_channels, time_strides and feature_strides need one entry "
                f"per layer, got {conv_channels}, {time_strides}, {feature_strides}"
            )
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        # Zeros: the fusion starts as the plain average of the chosen blocks.
        self.block_logits = nn.Parameter(torch.zeros(len(self.blocks)))
        self.standardize = (
            nn.ModuleList(FrameStandardization(d_model) for _ in self.blocks) if standardize else None
        )
        self.convs = nn.ModuleList()
        self.time_strides = [int(s) for s in time_strides]
        in_channels, features = len(self.blocks), d_model
        for channels, t_stride, f_stride in zip(
            conv_channels, self.time_strides, feature_strides
        ):
            self.convs.append(
                nn.Conv2d(
                    in_channels,
                    channels,
                    kernel_size=kernel_size,
                    stride=(t_stride, f_stride),
                    padding=kernel_size // 2,
                )
            )
            in_channels, features = channels, -(-features // f_stride)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(in_channels * features, d_emo)

    @property
    def block_weights(self) -> torch.Tensor:
        """``[K]`` softmax weights of the fused blocks (they sum to 1)."""
        return torch.softmax(self.block_logits, dim=0)

    def align(self, encoder_out: EncoderOutput) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Brings the chosen blocks to the slowest one's frame rate.

        Returns the list of K ``[batch, time, d_model]`` tensors and their
        shared ``[batch]`` lengths.
        """
        num_blocks = len(encoder_out.hidden_states)
        if max(self.blocks) > num_blocks:
            raise ValueError(
                f"MMF blocks {self.blocks} ask for a block beyond the encoder's "
                f"{num_blocks} blocks"
            )
        indices = [b - 1 for b in self.blocks]
        target = max(encoder_out.subsampling[i] for i in indices)
        aligned, target_lengths = [], None
        for k, i in enumerate(indices):
            factor, remainder = divmod(target, encoder_out.subsampling[i])
            if remainder:
                raise ValueError(
                    f"block {i + 1} (subsampling {encoder_out.subsampling[i]}) "
                    f"cannot be pooled to the rate of subsampling {target}"
                )
            hidden, lengths = encoder_out.hidden_states[i], encoder_out.lengths[i]
            if self.standardize is not None:
                hidden = self.standardize[k](hidden, lengths)
            aligned.append(masked_avg_pool1d(hidden, lengths, factor))
            lengths = ceil_div(lengths, factor)
            if target_lengths is None:
                target_lengths = lengths
            elif not torch.compiler.is_exporting() and not torch.equal(lengths, target_lengths):
                raise ValueError(
                    f"block {i + 1} pools to lengths {lengths.tolist()}, not "
                    f"{target_lengths.tolist()}: the encoder's lengths are "
                    "inconsistent with its subsampling"
                )
        return aligned, target_lengths

    def forward(self, encoder_out: EncoderOutput) -> Tuple[torch.Tensor, torch.Tensor]:
        """Fuses the chosen blocks.

        Arguments
        ---------
        encoder_out : EncoderOutput
            The encoder's block outputs, lengths and subsampling.

        Returns
        -------
        emotion : torch.Tensor
            ``[batch, n, d_emo]`` emotion features E, zero on padded frames.
        lengths : torch.Tensor
            ``[batch]`` valid frame counts of E.
        """
        aligned, lengths = self.align(encoder_out)
        x = self.stack_blocks([w * h for w, h in zip(self.block_weights, aligned)])
        mask_lengths = lengths_if_padded(lengths, x.shape[2])  # None: nothing to zero
        for conv, t_stride in zip(self.convs, self.time_strides):
            x = self.dropout(torch.relu(conv(zero_padding(x, mask_lengths, time_dim=2))))
            lengths = ceil_div(lengths, t_stride)
            mask_lengths = None if mask_lengths is None else lengths
        x = self.project(x)
        return zero_padding(self.dropout(x), mask_lengths), lengths

    def stack_blocks(self, weighted: List[torch.Tensor]) -> torch.Tensor:
        """K ``[batch, time, d_model]`` -> ``[batch, K, time, d_model]``, the blocks as channels."""
        return torch.stack(weighted, dim=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, channels, time, features]`` -> ``[batch, time, d_emo]``."""
        return self.projection(x.transpose(1, 2).flatten(2))

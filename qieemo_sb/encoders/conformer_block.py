"""One conformer block (paper eqs 1-5), optionally downsampling by its conv module."""

import torch
from speechbrain.nnet.activations import Swish
from speechbrain.nnet.attention import PositionalwiseFeedForward
from torch import nn

from qieemo_sb.encoders.attention import RelPositionSelfAttention
from qieemo_sb.encoders.convolution import ConvolutionModule
from qieemo_sb.masking import (
    ceil_div,
    lengths_if_padded,
    lengths_to_padding_mask,
    masked_avg_pool1d,
    zero_padding,
)


class FeedForward(nn.Sequential):
    """LayerNorm, then SpeechBrain's ``PositionalwiseFeedForward`` (Swish), then dropout.

    The layers (and so the checkpoint keys) of ``Sequential(LayerNorm,
    PositionalwiseFeedForward, Dropout)``, applied to ``[batch, time,
    d_model]`` directly, without ``PositionalwiseFeedForward``'s
    ``[time, batch, ...]`` round trip.

    Arguments
    ---------
    d_model : int
        Input and output dimension.
    d_ffn : int
        Hidden size.
    dropout : float
        Dropout after the Swish and on the output.

    Example
    -------
    >>> ffn = FeedForward(d_model=16, d_ffn=32, dropout=0.0)
    >>> x = torch.rand(2, 5, 16)
    >>> torch.allclose(ffn(x), nn.Sequential.forward(ffn, x), atol=1e-6)
    True
    """

    def __init__(self, d_model: int, d_ffn: int, dropout: float = 0.1):
        super().__init__(
            nn.LayerNorm(d_model),
            PositionalwiseFeedForward(
                d_ffn=d_ffn, input_size=d_model, dropout=dropout, activation=Swish
            ),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, time, d_model]`` -> ``[batch, time, d_model]``."""
        norm, feed_forward, output_dropout = self
        return output_dropout(feed_forward.ffn(norm(x)))


class ConformerBlock(nn.Module):
    """Macaron FFN, relative-position MHSA, convolution, FFN, final LayerNorm.

    ``h = x + FFN1(x)/2; h = h + MHSA(h); h = h + Conv(h); H = LN(h + FFN2(h)/2)``
    (eqs 1-5 of the paper). With ``stride > 1`` this is an Efficient Conformer
    downsampling block: the depthwise convolution is strided and the residual
    around it is average-pooled over valid frames with the same stride, so the
    block's output (and everything after it) runs at a lower frame rate.

    Arguments
    ---------
    d_model : int
        Model dimension.
    d_ffn : int
        Hidden size of the two feed-forward modules.
    nhead : int
        Attention heads.
    kernel_size : int
        Depthwise convolution kernel.
    stride : int
        Time stride of the block (1: none).
    dropout : float
        Dropout of every sub-module.

    Example
    -------
    >>> from speechbrain.nnet.attention import RelPosEncXL
    >>> block = ConformerBlock(d_model=16, d_ffn=32, nhead=2, kernel_size=3, stride=2)
    >>> x, lengths = torch.rand(2, 7, 16), torch.tensor([7, 3])
    >>> out, out_lengths = block(x, lengths, RelPosEncXL(16).make_pe(7))
    >>> out.shape, out_lengths.tolist()
    (torch.Size([2, 4, 16]), [4, 2])
    """

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        nhead: int,
        kernel_size: int = 15,
        stride: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.stride = stride
        self.ffn1 = FeedForward(d_model, d_ffn, dropout)
        self.norm_mha = nn.LayerNorm(d_model)
        self.mha = RelPositionSelfAttention(
            embed_dim=d_model, num_heads=nhead, dropout=dropout
        )
        self.dropout_mha = nn.Dropout(dropout)
        self.conv = ConvolutionModule(
            d_model=d_model, kernel_size=kernel_size, stride=stride, dropout=dropout
        )
        self.ffn2 = FeedForward(d_model, d_ffn, dropout)
        self.norm_out = nn.LayerNorm(d_model)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, pos_embs: torch.Tensor
    ):
        """Runs the block: eqs 1-5, ``LN(residual_stream(x))``.

        Arguments
        ---------
        x : torch.Tensor
            ``[batch, time, d_model]``.
        lengths : torch.Tensor
            ``[batch]`` valid frame counts.
        pos_embs : torch.Tensor
            ``[1, 2 * n - 1, d_model]`` relative positional embeddings,
            ``n >= time`` (the attention uses the centre ``2 * time - 1`` rows).

        Returns
        -------
        out : torch.Tensor
            ``[batch, ceil(time / stride), d_model]``, zero on padded frames.
        lengths : torch.Tensor
            ``[batch]`` valid frame counts of ``out``.
        """
        stream, lengths = self.residual_stream(x, lengths, pos_embs)
        return self.output(stream, lengths), lengths

    def residual_stream(
        self, x: torch.Tensor, lengths: torch.Tensor, pos_embs: torch.Tensor
    ):
        """Eqs 1-4 and the residual sum of eq 5, before its LayerNorm.

        Arguments and returns as :meth:`forward`, but the output is not
        normalized and its padded frames are not zeroed (nothing reads them:
        attention, convolution and pooling mask them).
        """
        # A batch without padding (one clip at inference) needs no mask.
        mask_lengths = lengths_if_padded(lengths, x.shape[1])
        pad_mask = None if mask_lengths is None else lengths_to_padding_mask(lengths, x.shape[1])
        x = x + 0.5 * self.ffn1(x)
        x = x + self.dropout_mha(self.mha(self.norm_mha(x), pos_embs, key_padding_mask=pad_mask))
        conv_out = self.conv(x, mask_lengths)
        if self.stride > 1:
            x = masked_avg_pool1d(x, mask_lengths, self.stride)
            lengths = ceil_div(lengths, self.stride)
        x = x + conv_out
        return x + 0.5 * self.ffn2(x), lengths

    def output(self, stream: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The block's output, eq 5's LayerNorm of :meth:`residual_stream`'s
        ``[batch, time, d_model]``, zero on padded frames."""
        return zero_padding(self.norm_out(stream), lengths_if_padded(lengths, stream.shape[1]))

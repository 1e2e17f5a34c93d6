"""One conformer block (paper eqs 1-5), optionally downsampling by its conv module."""

import torch
from speechbrain.nnet.activations import Swish
from speechbrain.nnet.attention import PositionalwiseFeedForward
from torch import nn

from qieemo_sb.encoders.attention import RelPositionSelfAttention
from qieemo_sb.encoders.convolution import ConvolutionModule
from qieemo_sb.encoders.functional import (
    dropout,
    layer_norm,
    linear,
    linear_silu,
    onednn_product,
    use_onednn_linear,
)
from qieemo_sb.masking import (
    ceil_div,
    lengths_if_padded,
    lengths_to_padding_mask,
    masked_avg_pool1d,
    zero_padding,
)


class FeedForward(nn.Sequential):
    """LayerNorm, then SpeechBrain's ``PositionalwiseFeedForward`` (Swish), then dropout.

    The parameters (and so the checkpoint keys) of
    ``Sequential(LayerNorm, PositionalwiseFeedForward, Dropout)``, with a
    forward that computes the same thing on ``[batch, time, d_model]``
    without the ``[time, batch, ...]`` round trip of
    ``PositionalwiseFeedForward``, and with the Swish applied in place when
    no gradient is recorded (inference): the ``d_ffn``-wide hidden tensor is
    the largest one of the block. Measured on 2 CPU threads (d_model 256,
    d_ffn 2048): 12 % faster at 251 frames, 22 % at 63.
    :meth:`residual` gives a block's ``x + scale * FFN(x)`` with the sum
    done by the output projection itself. Both call the layers' functional
    forms (:mod:`qieemo_sb.encoders.functional`); where its products take
    oneDNN (:data:`~qieemo_sb.encoders.functional.PREFER_ONEDNN_LINEAR`),
    the expansion and its Swish are one call
    (:func:`~qieemo_sb.encoders.functional.linear_silu`).

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
    >>> torch.allclose(ffn.residual(x, 0.5), x + 0.5 * ffn(x), atol=1e-6)
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
        return self._output(self._hidden(x))

    def residual(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """``x + scale * self(x)``, ``[batch, time, d_model]``.

        The output projection accumulates onto ``x + scale * bias`` in one
        GEMM (``addmm_``), which saves a pass over the output and a temporary;
        not when the output dropout is on (training with ``dropout > 0``),
        under mixed precision (autocast gives the hidden tensor another dtype)
        or where the product takes oneDNN's kernel, which has no such form.
        """
        hidden = self._hidden(x)
        output_dropout, contract = self[2], self[1].ffn[3]
        dropping = output_dropout.training and output_dropout.p > 0
        if dropping or not hidden.dtype == x.dtype == contract.weight.dtype:
            return torch.add(x, self._output(hidden), alpha=scale)
        if use_onednn_linear(hidden, contract.weight, contract.bias):  # checked once, not again in _output
            return torch.add(x, onednn_product(hidden, contract.weight, contract.bias), alpha=scale)
        out = torch.add(x, contract.bias, alpha=scale).contiguous()
        out.view(-1, out.shape[-1]).addmm_(
            hidden.view(-1, hidden.shape[-1]), contract.weight.t(), alpha=scale
        )
        return out

    @property
    def expand(self) -> nn.Linear:
        """The ``d_model -> d_ffn`` projection (``1.ffn.0`` in the checkpoint)."""
        return self[1].ffn[0]

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``Swish(expand(LayerNorm(x)))`` with its dropout: ``[batch, time, d_ffn]``."""
        norm, feed_forward, _ = self
        expand, _, hidden_dropout, _ = feed_forward.ffn
        # Swish is built with beta 1: a plain SiLU.
        return dropout(hidden_dropout, linear_silu(layer_norm(norm, x), expand))

    def _output(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output projection and its dropout: ``[batch, time, d_model]``."""
        _, feed_forward, output_dropout = self
        return dropout(output_dropout, linear(feed_forward.ffn[3], hidden))


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
        """Runs the block.

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
        # One check per block: a batch without padding (one clip at
        # inference) skips every mask below (mask_lengths None).
        mask_lengths = lengths_if_padded(lengths, x.shape[1])
        padded = mask_lengths is not None
        pad_mask = lengths_to_padding_mask(lengths, x.shape[1]) if padded else None
        x = self.ffn1.residual(x, 0.5)
        attended = self.mha(layer_norm(self.norm_mha, x), pos_embs, key_padding_mask=pad_mask)
        x = x + dropout(self.dropout_mha, attended)
        conv_out = self.conv(x, mask_lengths)
        if self.stride > 1:
            x = masked_avg_pool1d(x, mask_lengths, self.stride)
            lengths = ceil_div(lengths, self.stride)
            mask_lengths = lengths if padded else None
        x = layer_norm(self.norm_out, self.ffn2.residual(x + conv_out, 0.5))
        return zero_padding(x, mask_lengths), lengths

"""Conformer convolution module, optionally strided (progressive downsampling)."""

from typing import Optional

import torch
from speechbrain.nnet.activations import Swish
from torch import nn

from qieemo_sb.masking import zero_padding


class ConvolutionModule(nn.Module):
    """LayerNorm, pointwise conv + GLU, depthwise conv, LayerNorm, Swish, linear.

    As SpeechBrain's conformer convolution module (LayerNorm rather than
    BatchNorm after the depthwise conv), with two changes:

    - padded frames are zeroed right before the depthwise convolution, so
      they never leak into valid frames of a padded batch;
    - the depthwise convolution may have a stride (Efficient Conformer's
      progressive downsampling): the output then has ``ceil(T / stride)``
      frames.

    Arguments
    ---------
    d_model : int
        Input and output dimension.
    kernel_size : int
        Odd kernel size of the depthwise convolution.
    stride : int
        Stride of the depthwise convolution.
    dropout : float
        Dropout on the output.

    Example
    -------
    >>> module = ConvolutionModule(d_model=16, kernel_size=5, stride=2)
    >>> module(torch.rand(2, 9, 16), torch.tensor([9, 4])).shape
    torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        kernel_size: int = 15,
        stride: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.layer_norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(
            d_model,
            d_model,
            kernel_size=kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=d_model,
        )
        self.after_conv = nn.Sequential(
            nn.LayerNorm(d_model),
            Swish(),
            nn.Linear(d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """``[batch, time, d_model]`` -> ``[batch, ceil(time / stride), d_model]``.

        ``lengths`` (``[batch]`` valid frame counts of ``x``) marks the frames
        zeroed before the depthwise convolution; None: no frame is padded.
        """
        out = nn.functional.glu(self.pointwise_in(self.layer_norm(x)), dim=-1)
        out = zero_padding(out, lengths)
        out = self.depthwise(out.transpose(1, 2)).transpose(1, 2)
        return self.after_conv(out)

"""The one structure every Qieemo encoder returns.

Example
-------
>>> import torch
>>> out = EncoderOutput([torch.zeros(1, 4, 8)], [torch.tensor([3])], [4])
>>> out.hidden_states[-1].shape, out.subsampling
(torch.Size([1, 4, 8]), [4])
"""

from typing import List, NamedTuple

import torch


class EncoderOutput(NamedTuple):
    """What every Qieemo encoder returns, whatever its configuration.

    Attributes
    ----------
    hidden_states : list of torch.Tensor
        One ``[batch, time_i, d_model]`` tensor per block, in order, each the
        block's output after its final LayerNorm (eq 5); zero on padded frames.
    lengths : list of torch.Tensor
        ``[batch]`` int64 valid frame counts of each block's output.
    subsampling : list of int
        Input feature frames per output frame of each block (its frame period
        is ``subsampling * feature hop``).
    """

    hidden_states: List[torch.Tensor]
    lengths: List[torch.Tensor]
    subsampling: List[int]

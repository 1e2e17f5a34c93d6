"""Per-feature standardisation of an encoder block's valid frames."""

import torch
from torch import nn

from qieemo_sb.masking import lengths_to_padding_mask


class FrameStandardization(nn.Module):
    """Batch normalisation over batch and time that ignores padded frames.

    Encoder blocks can be dominated by a few large features (Whisper's
    intermediate blocks) or by a nearly clip-independent offset (a briefly
    trained encoder), which leaves little for the head to read. Each feature
    is brought to zero mean and unit variance over the valid frames of the
    batch in training and with running statistics at evaluation, the way the
    layer probe standardises its pooled features. No affine parameters: the
    next layer scales.

    Arguments
    ---------
    num_features : int
        Features per frame.
    momentum : float
        Running-statistics momentum (as ``torch.nn.BatchNorm1d``).

    Example
    -------
    >>> norm = FrameStandardization(num_features=3)
    >>> x = 5 + 0.01 * torch.randn(2, 6, 3)
    >>> y = norm(x, torch.tensor([6, 4]))
    >>> y.shape, bool(y[1, 4:].eq(0).all()), round(float(y[0].std()), 1) > 0.5
    (torch.Size([2, 6, 3]), True, True)
    """

    def __init__(self, num_features: int, momentum: float = 0.1):
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, momentum=momentum, affine=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[batch, time, features]`` with ``[batch]`` valid lengths -> same shape, zero on padding."""
        valid = ~lengths_to_padding_mask(lengths, x.shape[1])
        if self.training:  # statistics of the valid frames only
            out = x.new_zeros(x.shape)
            out[valid] = self.norm(x[valid])
            return out
        # Running statistics act frame by frame: no data-dependent shapes (export).
        return self.norm(x.transpose(1, 2)).transpose(1, 2) * valid.unsqueeze(-1)

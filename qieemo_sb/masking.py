"""Length and padding helpers shared by the encoders and the fusion modules.

Every module of the library carries the valid length of each sequence as an
integer tensor of frame counts ``[batch]`` beside the padded tensor
``[batch, time, ...]``; these helpers convert between that and masks, and pool
or average without letting padded frames in. Keeping padded frames out is what
makes a padded batch give the same outputs as the utterances one by one.

Example
-------
>>> import torch
>>> lengths = torch.tensor([3, 1])
>>> lengths_to_padding_mask(lengths, max_len=4)
tensor([[False, False, False,  True],
        [False,  True,  True,  True]])
>>> x = torch.arange(8.0).view(2, 4, 1)
>>> masked_mean(x, lengths).squeeze(-1)
tensor([1., 4.])
"""

from typing import Optional

import torch


def relative_to_absolute_lengths(
    relative_lengths: torch.Tensor, max_len: int
) -> torch.Tensor:
    """Converts SpeechBrain relative lengths (in ``(0, 1]``) to frame counts.

    Rounds like SpeechBrain's own transformer masks do, and refuses lengths
    that leave an utterance with no frame at all, which would otherwise turn
    into NaN much later (a softmax over no key).

    Arguments
    ---------
    relative_lengths : torch.Tensor
        ``[batch]`` lengths relative to ``max_len``.
    max_len : int
        Padded length of the time axis.

    Returns
    -------
    torch.Tensor
        ``[batch]`` int64 frame counts, each in ``[1, max_len]``.

    Example
    -------
    >>> relative_to_absolute_lengths(torch.tensor([1.0, 0.5]), max_len=10)
    tensor([10,  5])
    """
    if relative_lengths.dim() != 1:
        raise ValueError(
            "relative lengths must be a 1-d tensor [batch], got shape "
            f"{tuple(relative_lengths.shape)}"
        )
    lengths = torch.round(relative_lengths.float() * max_len).long()
    if torch.compiler.is_exporting():  # a traced graph has no host-side check
        return lengths
    if (lengths < 1).any() or (lengths > max_len).any():
        raise ValueError(
            f"relative lengths {relative_lengths.tolist()} give frame counts "
            f"{lengths.tolist()} outside [1, {max_len}]: an utterance is empty "
            "or the lengths are not relative to this batch"
        )
    return lengths


def lengths_to_padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Returns a ``[batch, max_len]`` bool mask, True on padded frames.

    Example
    -------
    >>> lengths_to_padding_mask(torch.tensor([2]), max_len=3)
    tensor([[False, False,  True]])
    """
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


def lengths_if_padded(lengths: torch.Tensor, max_len: int) -> Optional[torch.Tensor]:
    """``lengths`` when some sequence is shorter than ``max_len``, else None.

    None tells the masking helpers that nothing is padded (one clip at
    inference): they then skip their masks. One host check per call; a graph
    traced for export (ONNX) always masks.

    Example
    -------
    >>> lengths_if_padded(torch.tensor([3, 2]), 3)
    tensor([3, 2])
    >>> lengths_if_padded(torch.tensor([3, 3]), 3) is None
    True
    """
    if torch.compiler.is_exporting():
        return lengths
    return lengths if int(lengths.min()) < max_len else None


def zero_padding(
    x: torch.Tensor, lengths: Optional[torch.Tensor], time_dim: int = 1
) -> torch.Tensor:
    """Sets the padded frames of ``x`` to zero; batch is axis 0, time ``time_dim``.

    ``lengths`` None means that no frame is padded: ``x`` is returned as is.

    Example
    -------
    >>> zero_padding(torch.ones(2, 3), torch.tensor([3, 1]))
    tensor([[1., 1., 1.],
            [1., 0., 0.]])
    >>> zero_padding(torch.ones(1, 2, 3, 1), torch.tensor([2]), time_dim=2).flatten().tolist()
    [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    """
    if lengths is None:
        return x
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[time_dim] = x.shape[time_dim]
    mask = lengths_to_padding_mask(lengths, x.shape[time_dim])
    return x.masked_fill(mask.view(shape), 0.0)


def ceil_div(lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """Length after a stride-``factor`` step that keeps a partial last window.

    Example
    -------
    >>> ceil_div(torch.tensor([1, 4, 5]), 2)
    tensor([1, 2, 3])
    """
    return torch.div(lengths + factor - 1, factor, rounding_mode="floor")


def masked_avg_pool1d(
    x: torch.Tensor, lengths: Optional[torch.Tensor], factor: int
) -> torch.Tensor:
    """Averages each run of ``factor`` frames over its valid frames only.

    The last, partial window of an utterance is the mean of the frames it
    has, whatever padding follows it in the batch (PyTorch's AvgPool1d with
    ``ceil_mode`` would count the batch's padded frames in).

    Arguments
    ---------
    x : torch.Tensor
        ``[batch, time, features]``.
    lengths : torch.Tensor or None
        ``[batch]`` valid frame counts; None: no frame is padded.
    factor : int
        Pooling window and stride.

    Returns
    -------
    torch.Tensor
        ``[batch, ceil(time / factor), features]``; padded output frames are 0.

    Example
    -------
    >>> x = torch.tensor([[1.0, 3.0, 5.0, 7.0, 9.0]]).unsqueeze(-1)
    >>> masked_avg_pool1d(x, torch.tensor([3]), 2).squeeze(-1)
    tensor([[2., 5., 0.]])
    >>> masked_avg_pool1d(x, None, 2).squeeze(-1)  # no padding: the last window is 9 alone
    tensor([[2., 6., 9.]])
    """
    if factor == 1:
        return zero_padding(x, lengths)
    if lengths is None:  # ceil_mode divides the partial last window by its own size
        return torch.nn.functional.avg_pool1d(
            x.transpose(1, 2), factor, factor, ceil_mode=True
        ).transpose(1, 2)
    batch, time, features = x.shape
    out_time = (time + factor - 1) // factor
    valid = (~lengths_to_padding_mask(lengths, time)).to(x.dtype)
    pad = out_time * factor - time
    summed = torch.nn.functional.pad(x * valid.unsqueeze(-1), (0, 0, 0, pad))
    counts = torch.nn.functional.pad(valid, (0, pad))
    summed = summed.view(batch, out_time, factor, features).sum(dim=2)
    counts = counts.view(batch, out_time, factor).sum(dim=2, keepdim=True)
    return summed / counts.clamp(min=1.0)


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames: ``[batch, time, features] -> [batch, features]``.

    Example
    -------
    >>> masked_mean(torch.ones(2, 5, 3), torch.tensor([5, 2])).shape
    torch.Size([2, 3])
    """
    valid = (~lengths_to_padding_mask(lengths, x.shape[1])).to(x.dtype)
    summed = (x * valid.unsqueeze(-1)).sum(dim=1)
    return summed / valid.sum(dim=1, keepdim=True).clamp(min=1.0)

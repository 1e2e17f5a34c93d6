"""Training-time regularisers of the emotion head: random crops of the encoder
output and an exponential moving average of the head's weights."""

import copy

import torch
from torch import nn

from qieemo_sb.encoders.output import EncoderOutput


class RandomTimeCrop(nn.Module):
    """Keeps one random stretch of each utterance, the same stretch in every block.

    Each utterance keeps ``share`` of its valid frames, starting at a random
    point; blocks with other frame rates (progressive downsampling) cut the
    same span of time, in whole frames of the slowest block. Acts like a new
    clip per epoch for a head trained on cached (fixed) encoder outputs.
    Identity in eval mode.

    Arguments
    ---------
    share : float
        Share of each utterance's frames kept, in (0, 1].

    Example
    -------
    >>> crop = RandomTimeCrop(share=0.5)
    >>> hidden = [torch.rand(2, 8, 4), torch.rand(2, 4, 4)]
    >>> out = crop(EncoderOutput(hidden, [torch.tensor([8, 6]), torch.tensor([4, 3])], [1, 2]))
    >>> [lengths.tolist() for lengths in out.lengths]
    [[4, 4], [2, 2]]
    >>> crop.eval()(EncoderOutput(hidden, out.lengths, [1, 2])).hidden_states[0] is hidden[0]
    True
    """

    def __init__(self, share: float):
        super().__init__()
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share = share

    def forward(self, encoder_out: EncoderOutput) -> EncoderOutput:
        """Crops every block of ``encoder_out`` (blocks given as None stay None)."""
        if not self.training or self.share == 1.0:
            return encoder_out
        present = [i for i, h in enumerate(encoder_out.hidden_states) if h is not None]
        # The span is drawn in frames of the slowest block and scaled to the
        # others, so MMF still pools every block to the same lengths.
        slowest = max(present, key=lambda i: encoder_out.subsampling[i])
        coarse_lengths = encoder_out.lengths[slowest]
        kept = torch.clamp(torch.round(coarse_lengths * self.share), min=1).long()
        start_share = torch.rand(coarse_lengths.shape[0], device=coarse_lengths.device)
        start = torch.minimum((start_share * coarse_lengths).long(), coarse_lengths - kept)
        hidden_states, lengths = list(encoder_out.hidden_states), list(encoder_out.lengths)
        for i in present:
            factor, remainder = divmod(encoder_out.subsampling[slowest], encoder_out.subsampling[i])
            if remainder:
                raise ValueError(
                    f"block {i + 1} (subsampling {encoder_out.subsampling[i]}) is not a whole "
                    f"multiple of the slowest block's rate ({encoder_out.subsampling[slowest]})"
                )
            hidden, length = encoder_out.hidden_states[i], encoder_out.lengths[i]
            first = start * factor
            block_kept = torch.minimum(length, (start + kept) * factor) - first
            frames = torch.arange(int(block_kept.max()), device=hidden.device)
            index = torch.minimum(first[:, None] + frames[None, :], (length - 1)[:, None])
            cropped = torch.gather(hidden, 1, index[:, :, None].expand(-1, -1, hidden.shape[2]))
            hidden_states[i] = cropped * (frames[None, :] < block_kept[:, None])[:, :, None]
            lengths[i] = block_kept
        return EncoderOutput(hidden_states, lengths, encoder_out.subsampling)


class WeightAverage(nn.Module):
    """An exponential moving average of a model's weights, for evaluation.

    ``averaged`` is a copy of the model (same class, same state-dict keys)
    whose parameters follow ``avg <- decay * avg + (1 - decay) * weight`` after
    each :meth:`update`; buffers (running statistics) are copied. On a few
    hundred clips the head's scores swing from epoch to epoch; the average
    is steadier.

    Arguments
    ---------
    model : torch.nn.Module
        The model being trained (copied once, at construction).
    decay : float
        Share of the average kept at each update, in [0, 1).

    Example
    -------
    >>> model = nn.Linear(2, 1)
    >>> average = WeightAverage(model, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(2.0)
    >>> average.update(model)
    >>> torch.allclose(average.averaged.weight, model.weight - 1.0)
    True
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.averaged = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Moves the average towards ``model``'s current weights."""
        for average, current in zip(self.averaged.parameters(), model.parameters()):
            average.lerp_(current.detach(), 1.0 - self.decay)
        for average, current in zip(self.averaged.buffers(), model.buffers()):
            average.copy_(current)

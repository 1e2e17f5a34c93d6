"""An emotion per window of a long recording, each stretch of audio encoded once.

Windows of a timeline overlap (3 s every 1 s by default), so encoding each
window on its own encodes every second about ``window / hop`` times. Here the
recording is encoded in chunks of ``chunk`` seconds, each with ``context``
seconds of audio on either side whose outputs are dropped, and each window's
head input is cut from the kept block outputs: the frames of every block that
fall in the window. The encoder then sees each window inside its neighbouring
audio (as in a conversation) rather than alone, so a window's label may
differ from the per-window path's. Memory holds one chunk and the block
outputs of windows not classified yet, whatever the recording's length.

Example
-------
>>> window_starts(total=10, size=4, step=3)
[0, 3, 6]
>>> window_starts(total=10, size=4, step=4)  # a last window ends at the end
[0, 4, 6]
"""

import math
from typing import Iterator, List, NamedTuple

import torch

from qieemo_sb.encoders.output import EncoderOutput


def window_starts(total: int, size: int, step: int) -> List[int]:
    """Start samples of windows of ``size`` every ``step`` over ``total`` samples; a last
    window ends at ``total`` so that every sample is covered (``size <= total``)."""
    starts = list(range(0, total - size + 1, step))
    if starts[-1] + size < total:
        starts.append(total - size)
    return starts


class Chunk(NamedTuple):
    """One stretch of a recording to encode: samples at the model's rate.

    Attributes
    ----------
    start : int
        First sample of ``audio`` in the recording (the context before the core included).
    core_start, core_end : int
        The samples whose encoder outputs are kept.
    audio : torch.Tensor
        ``[samples]`` the chunk's audio, context included.
    last : bool
        Whether the chunk reaches the end of the recording.
    """

    start: int
    core_start: int
    core_end: int
    audio: torch.Tensor
    last: bool


def chunk_grid(total: int, chunk: int, context: int) -> Iterator[tuple]:
    """``(start, core_start, core_end, end)`` of the chunks covering ``total`` samples.

    ``chunk`` and ``context`` are in samples, multiples of the coarsest encoder
    frame, so that every chunk's frames fall on the recording's frame grid.

    Example
    -------
    >>> list(chunk_grid(total=25, chunk=10, context=2))
    [(0, 0, 10, 12), (8, 10, 20, 22), (18, 20, 25, 25)]
    """
    for core_start in range(0, total, chunk):
        core_end = min(total, core_start + chunk)
        yield max(0, core_start - context), core_start, core_end, min(total, core_end + context)


class BlockFrames:
    """Every block's outputs over a stretch of consecutive frames of one recording.

    Block ``b`` holds frames ``first[b] .. end[b]`` (frame ``j`` of block ``b``
    covers samples ``j * period[b] ..``); frames are appended as chunks are
    encoded and forgotten once no window needs them.

    Arguments
    ---------
    periods : list of int
        Samples per frame of each block.

    Example
    -------
    >>> frames = BlockFrames([2])
    >>> frames.append([torch.arange(5.0).view(5, 1)], [0])
    >>> frames.forget_before([2])
    >>> frames.first, frames.end, frames.window(0, 3, 2).flatten().tolist()
    ([2], [5], [3.0, 4.0])
    """

    def __init__(self, periods: List[int]):
        self.periods = periods
        self.first = [0] * len(periods)
        self.frames: List[List[torch.Tensor]] = [[] for _ in periods]
        self.end = [0] * len(periods)

    def append(self, block_frames: List[torch.Tensor], starts: List[int]) -> None:
        """Adds ``[frames, dim]`` per block, whose first frame is ``starts[b]`` (the current end)."""
        for block, (frames, start) in enumerate(zip(block_frames, starts)):
            if start != self.end[block]:
                raise ValueError(f"block {block + 1}: frames from {start} do not follow frame {self.end[block]}")
            self.frames[block].append(frames)
            self.end[block] += frames.shape[0]

    def window(self, block: int, start: int, count: int) -> torch.Tensor:
        """``[count, dim]``: frames ``start .. start + count`` of ``block``."""
        if start < self.first[block] or start + count > self.end[block]:
            raise ValueError(
                f"block {block + 1}: frames {start}-{start + count} are not held ({self.first[block]}-{self.end[block]})"
            )
        held = torch.cat(self.frames[block]) if len(self.frames[block]) > 1 else self.frames[block][0]
        self.frames[block] = [held]
        return held[start - self.first[block] : start - self.first[block] + count]

    def forget_before(self, frames: List[int]) -> None:
        """Drops each block's frames before ``frames[b]``."""
        for block, keep_from in enumerate(frames):
            drop = min(keep_from, self.end[block]) - self.first[block]
            if drop <= 0:
                continue
            held = torch.cat(self.frames[block]) if len(self.frames[block]) > 1 else self.frames[block][0]
            self.frames[block] = [held[drop:]]
            self.first[block] += drop


def window_frames(feature_frames: int, subsampling: List[int], periods: List[int], start: int,
                  total_frames: List[int]) -> List[tuple]:
    """Per block, ``(first frame, count)`` of a window starting at sample ``start``.

    The count is what the encoder gives the window alone
    (``ceil(feature_frames / subsampling)``); the first frame is the one at the
    window's start, moved back where the recording's frames end sooner.

    Example
    -------
    >>> window_frames(301, subsampling=[2, 4], periods=[320, 640], start=16000, total_frames=[10**9] * 2)
    [(50, 151), (25, 76)]
    """
    spans = []
    for factor, period, total in zip(subsampling, periods, total_frames):
        count = min(math.ceil(feature_frames / factor), total)
        first = min(round(start / period), total - count)
        spans.append((first, count))
    return spans


def head_input(frames: BlockFrames, spans: List[List[tuple]], subsampling: List[int]) -> EncoderOutput:
    """The :class:`EncoderOutput` of a batch of windows cut from ``frames`` (``spans`` per window, per block)."""
    hidden, lengths = [], []
    for block in range(len(subsampling)):
        counts = {window[block][1] for window in spans}
        if len(counts) != 1:
            raise ValueError(f"block {block + 1}: windows of different frame counts {sorted(counts)}")
        hidden.append(torch.stack([frames.window(block, *window[block]) for window in spans]))
        lengths.append(torch.full((len(spans),), counts.pop(), dtype=torch.long, device=hidden[-1].device))
    return EncoderOutput(hidden, lengths, list(subsampling))

"""Block outputs of a frozen encoder, computed once per clip and kept on disk.

While stage 2 keeps the encoder frozen (the whole run, or its first epochs),
the encoder gives each clip the same block outputs every epoch and in every
fold. :class:`EncoderOutputCache` stores, per clip, the outputs of the blocks
the emotion head reads (MMF's blocks and the last block, CMA's keys) on
their valid frames, and hands them back as an
:class:`~qieemo_sb.encoders.conformer.EncoderOutput`: one encoder pass per
clip for a whole multi-fold run.

Layout: ``<folder>/<weights key>/<clip key>.pt``.

- The weights key is a SHA-1 of the encoder weights, the normalizer
  statistics, the feature extractor's settings, the stored blocks and the
  dtype: other weights (another stage-1 run, a fine-tuned encoder) or other
  options (Whisper's ``real_length``) never read entries made by these.
- The clip key is a SHA-1 of the utterance id, the audio path, its size and
  its modification time: an edited file is encoded again.

Entries are written to a temporary name and renamed, so an interrupted run
leaves no truncated entry, and parallel runs can share a folder.

In the returned ``EncoderOutput`` the blocks that are not stored are
``None`` (hidden states and lengths); the head never reads them.

Example
-------
>>> import tempfile, torch
>>> from qieemo_sb.encoders.output import EncoderOutput
>>> encoder, normalize = torch.nn.Linear(4, 4), torch.nn.Identity()
>>> def encode(rows):  # stands for the encoder on those rows of the batch
...     hidden = [torch.ones(len(rows), 3, 4) * (b + 1) for b in range(3)]
...     return EncoderOutput(hidden, [torch.tensor([3, 2])[rows]] * 3, [4, 4, 8])
>>> cache = EncoderOutputCache(tempfile.mkdtemp(), blocks=[2], dtype="float32")
>>> _ = cache.bind(encoder=encoder, normalize=normalize, compute_features=torch.nn.Identity())
>>> out = cache.encoded(["a", "b"], ["a.wav", "b.wav"], encode)
>>> [None if h is None else tuple(h.shape) for h in out.hidden_states], out.lengths[2].tolist()
([None, (2, 3, 4), (2, 3, 4)], [3, 2])
>>> again = cache.encoded(["b"], ["b.wav"], encode)
>>> cache.hits, cache.misses, again.hidden_states[1].shape
(1, 2, torch.Size([1, 2, 4]))
"""

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from qieemo_sb.distributed import unwrap
from qieemo_sb.encoders.output import EncoderOutput

logger = logging.getLogger(__name__)

_PLAIN = (bool, int, float, str)
# Not settings: the mode (the encoder runs in eval mode), where Hugging Face
# weights were read from (the weights are in the key), and SpeechBrain's
# lazy-initialisation flag (it flips on the first forward pass).
_NOT_SETTINGS = {"training", "name_or_path", "first_call"}


def module_settings(module: nn.Module) -> List[Tuple[str, object]]:
    """The plain attributes (not weights) of ``module`` and its submodules.

    Settings such as Whisper's ``real_length`` or ``pad_to_30s`` change the
    features without changing any tensor, so the cache key needs them.

    Example
    -------
    >>> module_settings(nn.Dropout(0.25))
    [('Dropout.inplace', False), ('Dropout.p', 0.25)]
    """
    settings = []
    for prefix, sub in module.named_modules():
        for name, value in sorted(vars(sub).items()):
            if name.startswith("_") or name in _NOT_SETTINGS:
                continue
            plain = isinstance(value, _PLAIN) or (
                isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value)
            )
            if plain:
                where = f"{type(sub).__name__}{'.' + prefix if prefix else ''}"
                settings.append((f"{where}.{name}", value))
    return settings


DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def weights_digest(*modules: nn.Module) -> "hashlib._Hash":
    """SHA-1 over the parameters and buffers (names and values) of ``modules``."""
    digest = hashlib.sha1()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest


def clip_key(utt_id: str, path: Union[str, Path]) -> str:
    """SHA-1 of an utterance id, its audio path and the file's size and mtime."""
    digest = hashlib.sha1(f"{utt_id}\0{Path(path).resolve()}".encode())
    try:
        stat = os.stat(path)
        digest.update(f"\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    except OSError:  # not a file (tests, in-memory audio): the id and path decide
        pass
    return digest.hexdigest()


class EncoderOutputCache:
    """On-disk cache of the block outputs the emotion head reads.

    Arguments
    ---------
    folder : str or Path
        Where entries are kept (shared by folds and runs: the keys keep them
        apart).
    blocks : sequence of int, optional
        1-based blocks to store (MMF's); the last block is always stored
        (CMA's keys and values). None stores every block, so that runs
        fusing other blocks (the ablations, a block search) share one pass.
    dtype : str
        ``float16`` (half the disk, about 1e-3 relative rounding),
        ``bfloat16`` or ``float32`` (exactly the encoder's outputs).
    """

    def __init__(self, folder: Union[str, Path], *, blocks: Optional[Sequence[int]], dtype: str = "float16"):
        if dtype not in DTYPES:
            raise ValueError(f"encoder cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.root = Path(folder)
        self.blocks = None if blocks is None else sorted({int(b) for b in blocks})
        if self.blocks is not None and (not self.blocks or self.blocks[0] < 1):
            raise ValueError(f"encoder cache blocks must be 1-based block indices, got {list(blocks)}")
        self.dtype_name, self.dtype = dtype, DTYPES[dtype]
        self.folder: Optional[Path] = None
        self.hits = self.misses = 0

    def bind(self, *, encoder: nn.Module, normalize: nn.Module, compute_features: nn.Module) -> Path:
        """Keys the cache by these weights and settings; returns the entry folder.

        Call it whenever the weights may have changed (each stage start).
        """
        encoder = unwrap(encoder)  # the same key under torchrun's DDP wrapper
        digest = weights_digest(encoder, normalize)
        # Settings that change the outputs without changing a tensor (Whisper's
        # 30 s padding, real_length) are part of the key, as for the probe.
        settings = (module_settings(compute_features), module_settings(encoder))
        digest.update(json.dumps(settings, default=repr).encode())
        digest.update(repr((self.blocks, self.dtype_name)).encode())
        self.folder = self.root / digest.hexdigest()[:20]
        return self.folder

    def reset_counts(self) -> None:
        """Zeroes the hit and miss counters."""
        self.hits = self.misses = 0

    def size_bytes(self) -> int:
        """Bytes on disk of the entries of the bound weights."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.folder.glob("*.pt"))

    def _stored_blocks(self, num_blocks: int) -> List[int]:
        if self.blocks is None:
            return list(range(1, num_blocks + 1))
        if self.blocks[-1] > num_blocks:
            raise ValueError(
                f"encoder cache blocks {self.blocks} ask for a block beyond the encoder's {num_blocks} blocks"
            )
        return sorted(set(self.blocks) | {num_blocks})

    def _store(self, path: Path, out: EncoderOutput, row: int) -> dict:
        blocks = self._stored_blocks(len(out.hidden_states))
        entry = {
            "num_blocks": len(out.hidden_states),
            "subsampling": list(out.subsampling),
            "blocks": {
                b: out.hidden_states[b - 1][row, : int(out.lengths[b - 1][row])].detach().to("cpu", self.dtype).clone()
                for b in blocks
            },
        }
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        torch.save(entry, partial)
        os.replace(partial, path)
        return entry

    def encoded(
        self,
        ids: Sequence[str],
        paths: Sequence[Union[str, Path]],
        encode: Callable[[List[int]], EncoderOutput],
    ) -> EncoderOutput:
        """The batch's block outputs, from the cache or from ``encode``.

        Arguments
        ---------
        ids : sequence of str
            Utterance ids of the batch rows.
        paths : sequence of str or Path
            Their audio files.
        encode : callable
            ``encode(rows)`` runs the encoder on those rows of the batch (a
            list of row indices) and returns their ``EncoderOutput``; called
            once per batch, with the rows not yet cached.

        Returns
        -------
        EncoderOutput
            The stored blocks padded to the batch's longest valid length (zero
            after each row's frames, in float32); ``None`` for the others.
        """
        if self.folder is None:
            raise RuntimeError("EncoderOutputCache.bind(...) must be called before encoded(...)")
        self.folder.mkdir(parents=True, exist_ok=True)
        files = [self.folder / f"{clip_key(utt, path)}.pt" for utt, path in zip(ids, paths)]
        entries: List[Optional[dict]] = []
        for file in files:
            entry = None
            if file.is_file():
                try:
                    entry = torch.load(file, map_location="cpu", weights_only=True)
                except Exception as error:  # unreadable (another writer's crash, a full disk): recompute
                    logger.warning("encoder cache entry %s unreadable (%s): encoding again", file, error)
            entries.append(entry)
        todo = [row for row, entry in enumerate(entries) if entry is None]
        self.hits += len(entries) - len(todo)
        self.misses += len(todo)
        if todo:
            with torch.no_grad():
                out = encode(todo)
            for position, row in enumerate(todo):
                entries[row] = self._store(files[row], out, position)
        return self._assemble(entries)

    @staticmethod
    def _assemble(entries: Sequence[dict]) -> EncoderOutput:
        num_blocks, subsampling = entries[0]["num_blocks"], entries[0]["subsampling"]
        hidden: List[Optional[torch.Tensor]] = [None] * num_blocks
        lengths: List[Optional[torch.Tensor]] = [None] * num_blocks
        for block in entries[0]["blocks"]:
            frames = [entry["blocks"][block] for entry in entries]
            lengths[block - 1] = torch.tensor([len(f) for f in frames])
            padded = torch.zeros(len(frames), max(len(f) for f in frames), frames[0].shape[-1])
            for row, f in enumerate(frames):
                padded[row, : len(f)] = f
            hidden[block - 1] = padded
        return EncoderOutput(hidden, lengths, list(subsampling))

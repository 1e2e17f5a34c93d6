"""Layer probe (paper Table I): how much emotion each encoder block carries.

1. :func:`extract_block_features`: one pass of the frozen encoder per
   utterance gives every block's output; each is averaged over its valid
   frames, so an utterance is stored as ``[num_blocks, d_model]``. The
   features are cached in a file keyed by the encoder weights, the
   normalizer statistics and the feature/encoder settings (such as
   Whisper's ``real_length``), so a re-run (another fold, other probe
   settings) does not recompute them.
2. :func:`train_probe`: for one block and fold, features standardised with the
   training set's mean and std, then Linear(hidden) -> ReLU -> Linear(classes)
   (the paper's "256-dimensional linear layers") trained full-batch with
   AdamW; the epoch with the best validation score is kept and tested.

Example
-------
>>> torch.manual_seed(0) and None
>>> x = torch.randn(40, 8); y = (x[:, 0] > 0).long()
>>> scores = train_probe(x[:30], y[:30], x[30:35], y[30:35], x[35:], y[35:],
...                      n_classes=2, hidden_size=16, epochs=50, lr=0.01)
>>> sorted(scores)[:3], scores["wa"] >= 0.6
(['best_epoch', 'confusion', 'f1'], True)
"""

import json
import logging
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from speechbrain.utils.distributed import ddp_barrier
from torch import nn
from tqdm import tqdm

from qieemo_sb.audio import load_audio
from qieemo_sb.distributed import gather_lists, rank_and_world_size
from qieemo_sb.encoder_cache import EncoderOutputCache, module_settings, weights_digest
from qieemo_sb.features import fbank_with_lengths
from qieemo_sb.masking import masked_mean
from qieemo_sb.metrics import classification_metrics
from qieemo_sb.modules.classifier import EmotionClassifier

logger = logging.getLogger(__name__)


def features_key(
    encoder: nn.Module,
    normalize: nn.Module,
    *,
    compute_features: Optional[nn.Module] = None,
    sample_rate: Optional[int] = None,
) -> str:
    """SHA-1 of what the block features depend on (the cache key).

    The encoder weights, the normalizer statistics, and the settings of the
    feature extractor and the encoder (:func:`module_settings`) with the
    sample rate.
    """
    digest = weights_digest(encoder, normalize)
    settings = {"sample_rate": sample_rate, "encoder": module_settings(encoder)}
    if compute_features is not None:
        settings["compute_features"] = module_settings(compute_features)
    digest.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def _file_size(path: Path) -> str:
    """``path``'s size on disk, in human units."""
    size, unit = float(path.stat().st_size), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"


@torch.no_grad()
def extract_block_features(
    wavs: Dict[str, str],
    *,
    compute_features: Callable,
    normalize: nn.Module,
    encoder: nn.Module,
    sample_rate: int,
    cache_file: Union[str, Path],
    batch_size: int = 8,
    durations: Optional[Dict[str, float]] = None,
    device: str = "cpu",
    progress: bool = True,
    encoder_cache: Optional[EncoderOutputCache] = None,
) -> Dict[str, torch.Tensor]:
    """Mean-pooled output of every block, ``{id: [num_blocks, d_model]}``.

    Logs how many utterances came from the cache and how many were
    computed, and the cache file with its size. Under torchrun each process
    encodes its share of the missing utterances; all get every feature and
    the main process writes the cache file.

    Arguments
    ---------
    wavs : dict
        Utterance id -> audio path.
    compute_features, normalize, encoder :
        The backbone's objects (``normalize`` already holds its statistics).
    sample_rate : int
        The backbone's sample rate.
    cache_file : str or Path
        Where the features are kept; reused when the encoder weights, the
        normalizer statistics and the settings (see :func:`features_key`)
        are the ones that made them.
    batch_size : int
        Utterances per encoder pass (sorted by duration: little padding; the
        encoder's outputs do not depend on padding).
    durations : dict, optional
        Id -> seconds, to sort the batches.
    device : str
        Where the encoder runs.
    progress : bool
        Show a progress bar (on stderr) over the utterances to encode.
    encoder_cache : EncoderOutputCache, optional
        Block outputs per clip, shared with stage-2 training (an encoder
        pass only for clips it does not hold); it must store every block.
    """
    cache_file = Path(cache_file)
    key = features_key(
        encoder,
        normalize,
        compute_features=compute_features if isinstance(compute_features, nn.Module) else None,
        sample_rate=sample_rate,
    )
    cached = {}
    if cache_file.is_file():
        stored = torch.load(cache_file, map_location="cpu", weights_only=True)
        if stored.get("key") == key:
            cached = stored["features"]
        else:
            logger.info("%s was made with other weights or settings: recomputing", cache_file)
    todo = [utt for utt in wavs if utt not in cached]
    hits = len(wavs) - len(todo)
    logger.info(
        "block features of %d utterances: %d in the cache, %d to compute (cache: %s)",
        len(wavs), hits, len(todo), cache_file,
    )
    if durations is not None:
        todo.sort(key=lambda utt: durations[utt])
    rank, world_size = rank_and_world_size()
    mine = todo[rank::world_size]
    encoder.eval().to(device)
    normalize.eval().to(device)
    if encoder_cache is not None:
        if encoder_cache.blocks is not None:
            raise ValueError("the probe reads every block: its encoder cache needs blocks=None")
        encoder_cache.bind(encoder=encoder, normalize=normalize, compute_features=compute_features)
    bar = tqdm(
        total=len(mine),
        desc=f"block features ({hits} cached, {len(todo)} to compute)",
        unit="clip",
        file=sys.stderr,
        disable=not progress or not mine,
    )
    for start in range(0, len(mine), batch_size):
        ids = mine[start : start + batch_size]
        signals = [load_audio(wavs[utt], sample_rate=sample_rate) for utt in ids]
        longest = max(len(s) for s in signals)
        batch = torch.zeros(len(ids), longest)
        for row, signal in enumerate(signals):
            batch[row, : len(signal)] = signal
        rel_lens = torch.tensor([len(s) / longest for s in signals])
        batch, rel_lens = batch.to(device), rel_lens.to(device)

        def encode(rows):
            feats, feat_lens = fbank_with_lengths(compute_features, normalize, batch[rows], rel_lens[rows])
            return encoder(feats, feat_lens)

        if encoder_cache is None:
            out = encode(list(range(len(ids))))
        else:
            out = encoder_cache.encoded(ids, [wavs[utt] for utt in ids], encode)
        pooled = torch.stack(
            [masked_mean(h, lengths) for h, lengths in zip(out.hidden_states, out.lengths)],
            dim=1,
        ).cpu()
        for row, utt in enumerate(ids):
            cached[utt] = pooled[row].clone()
        bar.update(len(ids))
    bar.close()
    if world_size > 1:
        cached.update(gather_lists([(utt, cached[utt]) for utt in mine]))
    if todo and rank == 0:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "features": cached}, cache_file)
    ddp_barrier()
    size = _file_size(cache_file) if cache_file.is_file() else "not written"
    logger.info(
        "block features: %d from the cache, %d computed; cache %s (%s)",
        hits, len(todo), cache_file, size,
    )
    return {utt: cached[utt] for utt in wavs}


def train_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    valid_x: torch.Tensor,
    valid_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    n_classes: int,
    hidden_size: int = 256,
    epochs: int = 200,
    lr: float = 0.001,
    dropout: float = 0.1,
    select_by: str = "wa",
) -> Dict:
    """Trains one probe; returns the test scores of its best validation epoch.

    ``*_x`` are ``[n, dim]`` features, ``*_y`` ``[n]`` class indices. The
    returned dict is :func:`qieemo_sb.metrics.classification_metrics` plus
    ``best_epoch`` and ``valid`` (the validation score it was chosen by).
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-5)
    train_x, valid_x, test_x = [(x - mean) / std for x in (train_x, valid_x, test_x)]
    probe = EmotionClassifier(
        input_size=train_x.shape[1], n_classes=n_classes, hidden_size=hidden_size, dropout=dropout
    )
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.01)
    best: Tuple[float, int, Optional[dict]] = (-1.0, 0, None)
    for epoch in range(1, epochs + 1):
        probe.train()
        optimizer.zero_grad()
        nn.functional.cross_entropy(probe(train_x), train_y).backward()
        optimizer.step()
        probe.eval()
        with torch.no_grad():
            valid_pred = probe(valid_x).argmax(-1)
        score = classification_metrics(valid_y.tolist(), valid_pred.tolist(), n_classes)[select_by]
        if score > best[0]:
            state = {k: v.clone() for k, v in probe.state_dict().items()}
            best = (score, epoch, state)
    probe.load_state_dict(best[2])
    probe.eval()
    with torch.no_grad():
        test_pred = probe(test_x).argmax(-1)
    scores = classification_metrics(test_y.tolist(), test_pred.tolist(), n_classes)
    scores.update(best_epoch=best[1], valid=best[0])
    return scores


def probe_table(blocks: Sequence[int], summary: Dict, title: str) -> str:
    """Markdown table: one row per block, mean +- std over folds (percent)."""
    lines = [
        f"# {title}",
        "",
        "Test scores (%) of a probe on each block's mean-pooled output; mean +- sample "
        "std over folds. Bold: best block by WA.",
        "",
        "| block | WA | UA | WF1 |",
        "|---|---|---|---|",
    ]
    best = max(blocks, key=lambda b: summary[str(b)]["mean"]["wa"])
    for block in blocks:
        mean, std = summary[str(block)]["mean"], summary[str(block)]["std"]
        cells = [f"{100 * mean[k]:.2f} +- {100 * std[k]:.2f}" for k in ("wa", "ua", "wf1")]
        name = f"**{block}**" if block == best else str(block)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""Layer probe (paper Table I): how much emotion each encoder block carries.

1. :func:`extract_block_features`: one pass of the frozen encoder per
   utterance gives every block's output; each is averaged over its valid
   frames, so an utterance is stored as ``[num_blocks, d_model]``. The
   features are cached in a file keyed by the encoder weights, so a re-run
   (another fold, other probe settings) does not recompute them.
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

import hashlib
import logging
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from qieemo_sb.audio import load_audio
from qieemo_sb.masking import fbank_with_lengths, masked_mean
from qieemo_sb.metrics import classification_metrics
from qieemo_sb.modules.classifier import EmotionClassifier

logger = logging.getLogger(__name__)


def features_key(encoder: nn.Module, normalize: nn.Module) -> str:
    """SHA-1 of the encoder weights and the normalizer statistics (the cache key)."""
    digest = hashlib.sha1()
    tensors = sorted(encoder.state_dict().items())
    tensors += [("glob_mean", normalize.glob_mean), ("glob_std", normalize.glob_std)]
    for name, tensor in tensors:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


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
) -> Dict[str, torch.Tensor]:
    """Mean-pooled output of every block, ``{id: [num_blocks, d_model]}``.

    Arguments
    ---------
    wavs : dict
        Utterance id -> audio path.
    compute_features, normalize, encoder :
        The backbone's objects (``normalize`` already holds its statistics).
    sample_rate : int
        The backbone's sample rate.
    cache_file : str or Path
        Where the features are kept; reused when the encoder weights and the
        normalizer statistics are the ones that made them.
    batch_size : int
        Utterances per encoder pass (sorted by duration: little padding; the
        encoder's outputs do not depend on padding).
    durations : dict, optional
        Id -> seconds, to sort the batches.
    device : str
        Where the encoder runs.
    """
    cache_file = Path(cache_file)
    key = features_key(encoder, normalize)
    cached = {}
    if cache_file.is_file():
        stored = torch.load(cache_file, map_location="cpu", weights_only=True)
        if stored.get("key") == key:
            cached = stored["features"]
        else:
            logger.info("%s was made with other weights: recomputing", cache_file)
    todo = [utt for utt in wavs if utt not in cached]
    if durations is not None:
        todo.sort(key=lambda utt: durations[utt])
    encoder.eval().to(device)
    normalize.eval().to(device)
    for start in range(0, len(todo), batch_size):
        ids = todo[start : start + batch_size]
        signals = [load_audio(wavs[utt], sample_rate=sample_rate) for utt in ids]
        longest = max(len(s) for s in signals)
        batch = torch.zeros(len(ids), longest)
        for row, signal in enumerate(signals):
            batch[row, : len(signal)] = signal
        rel_lens = torch.tensor([len(s) / longest for s in signals])
        batch, rel_lens = batch.to(device), rel_lens.to(device)
        feats, feat_lens = fbank_with_lengths(compute_features, normalize, batch, rel_lens)
        out = encoder(feats, feat_lens)
        pooled = torch.stack(
            [masked_mean(h, lengths) for h, lengths in zip(out.hidden_states, out.lengths)],
            dim=1,
        ).cpu()
        for row, utt in enumerate(ids):
            cached[utt] = pooled[row].clone()
    if todo:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "features": cached}, cache_file)
        logger.info("block features of %d utterances computed, cached in %s", len(todo), cache_file)
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

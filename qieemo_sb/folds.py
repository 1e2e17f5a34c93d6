"""Results of an emotion run: per-fold test files and the cross-fold tables.

Each fold's run writes, in its output folder (``fold_<k>/``):

- ``test_metrics.json``: WA, UA, WF1, macro-F1, per-class scores, confusion,
  the label order, the utterance ids with their target and predicted class
  indices (for pooling), and run facts (epoch kept, seconds). It is written
  last, so its presence means the fold is finished.
- ``test_predictions.csv``: id, target, prediction and one probability per class.

:func:`summarize_folds` then writes, in the experiment folder:

- ``results.json``: every fold's scores, their mean and sample standard
  deviation (ddof=1), and the scores of all folds' predictions pooled;
- ``results.md``: the same as a table (percentages);
- ``confusion.png``: the pooled confusion matrix (counts, and row-normalised
  colours).

Example
-------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for k, predictions in ((1, [0, 1, 1]), (2, [0, 0, 1])):
...     _ = write_fold_results(root / f"fold_{k}", ids=["a", "b", "c"], targets=[0, 1, 1],
...                            predictions=predictions, probabilities=[[0.5, 0.5]] * 3,
...                            labels=["neu", "ang"])
>>> summary = summarize_folds(root, folds=[1, 2], title="demo")
>>> round(summary["mean"]["wa"], 4), round(summary["pooled"]["wa"], 4)
(0.8333, 0.8333)
>>> sorted(p.name for p in root.iterdir() if p.is_file())
['confusion.png', 'results.json', 'results.md']
"""

import csv
import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from qieemo_sb.metrics import aggregate_folds, classification_metrics, pooled_metrics
from qieemo_sb.plots import plot_confusion

FOLD_RESULTS = "test_metrics.json"
FOLD_PREDICTIONS = "test_predictions.csv"
TABLE_SCORES = (("wa", "WA"), ("ua", "UA"), ("wf1", "WF1"), ("macro_f1", "macro-F1"))


def write_fold_results(
    folder: Union[str, Path],
    *,
    ids: Sequence[str],
    targets: Sequence[int],
    predictions: Sequence[int],
    probabilities: Sequence[Sequence[float]],
    labels: Sequence[str],
    run_facts: Optional[Dict] = None,
) -> Dict:
    """Writes a fold's ``test_predictions.csv`` then ``test_metrics.json``.

    Returns the scores (``classification_metrics`` plus the fields above).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not len(ids) == len(targets) == len(predictions) == len(probabilities):
        raise ValueError("ids, targets, predictions and probabilities differ in length")
    with open(folder / FOLD_PREDICTIONS, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "target", "prediction", *[f"p_{lab}" for lab in labels]])
        for utt, target, predicted, probs in zip(ids, targets, predictions, probabilities):
            writer.writerow(
                [utt, labels[target], labels[predicted], *[f"{p:.5f}" for p in probs]]
            )
    scores = classification_metrics(targets, predictions, len(labels))
    scores.update(
        labels=list(labels),
        ids=list(ids),
        targets=[int(t) for t in targets],
        predictions=[int(p) for p in predictions],
        **(run_facts or {}),
    )
    (folder / FOLD_RESULTS).write_text(json.dumps(scores, indent=1), encoding="utf-8")
    return scores


def read_fold_results(folder: Union[str, Path]) -> Optional[Dict]:
    """A finished fold's scores, or None if the fold has not finished."""
    path = Path(folder) / FOLD_RESULTS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def results_table(summary: Dict) -> str:
    """``results.md``: one row per fold, mean +- std over folds, pooled."""
    names = [title for _, title in TABLE_SCORES]
    lines = [
        f"# {summary['title']}",
        "",
        f"Test scores (%) of {len(summary['folds'])} folds; mean +- sample std over folds, "
        "and all folds' predictions pooled.",
        "",
        "| fold | test utterances | " + " | ".join(names) + " | epoch kept | seconds |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    for fold, scores in summary["folds"].items():
        cells = [_percent(scores[key]) for key, _ in TABLE_SCORES]
        lines.append(
            f"| {fold} | {len(scores['targets'])} | " + " | ".join(cells)
            + f" | {scores.get('epoch', '')} | {scores.get('seconds', '')} |"
        )
    mean, std = summary["mean"], summary["std"]
    cells = [f"{_percent(mean[key])} +- {_percent(std[key])}" for key, _ in TABLE_SCORES]
    lines.append("| **mean** | | " + " | ".join(cells) + " | | |")
    pooled = summary["pooled"]
    cells = [_percent(pooled[key]) for key, _ in TABLE_SCORES]
    lines.append(f"| pooled | {int(np.sum(pooled['support']))} | " + " | ".join(cells) + " | | |")
    lines += ["", "Pooled confusion matrix (rows: target, columns: prediction):", ""]
    labels = summary["labels"]
    lines.append("| | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---|" * len(labels))
    for label, row in zip(labels, pooled["confusion"]):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def summarize_folds(
    experiment_folder: Union[str, Path], *, folds: Sequence, title: str
) -> Dict:
    """Reads every ``fold_<k>/test_metrics.json`` and writes the tables.

    Arguments
    ---------
    experiment_folder : str or Path
        Holds the ``fold_<k>`` folders; gets results.json, results.md and
        confusion.png.
    folds : sequence
        The folds to summarise; each must be finished.
    title : str
        Heading of results.md (e.g. the experiment name).

    Returns
    -------
    dict
        The content of results.json.
    """
    root = Path(experiment_folder)
    per_fold = {}
    for fold in folds:
        scores = read_fold_results(root / f"fold_{fold}")
        if scores is None:
            raise FileNotFoundError(f"fold {fold} has not finished: no {root / f'fold_{fold}' / FOLD_RESULTS}")
        per_fold[str(fold)] = scores
    labels = next(iter(per_fold.values()))["labels"]
    for fold, scores in per_fold.items():
        if scores["labels"] != labels:
            raise ValueError(f"fold {fold} has labels {scores['labels']}, fold 1 {labels}")
    summary = {
        "title": title,
        "labels": labels,
        "folds": per_fold,
        **aggregate_folds(list(per_fold.values())),
        "pooled": pooled_metrics(
            [s["targets"] for s in per_fold.values()],
            [s["predictions"] for s in per_fold.values()],
            len(labels),
        ),
    }
    (root / "results.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (root / "results.md").write_text(results_table(summary), encoding="utf-8")
    plot_confusion(
        np.array(summary["pooled"]["confusion"]),
        labels,
        root / "confusion.png",
        title=f"{title}: pooled over {len(per_fold)} folds",
    )
    return summary

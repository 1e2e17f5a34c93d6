"""Emotion classification metrics as the field reports them, without scikit-learn.

- WA (weighted accuracy): overall accuracy.
- UA (unweighted accuracy): mean per-class recall over the classes that occur
  in the targets (scikit-learn's ``balanced_accuracy_score``).
- WF1: F1 averaged with class support as weights (``f1_score(average="weighted")``).
- macro-F1: plain mean of per-class F1 over the classes that occur in the
  targets or the predictions (``f1_score(average="macro")``). A class that is
  never predicted has precision 0 and F1 0, as scikit-learn's ``zero_division=0``.
- the confusion matrix, rows = targets, columns = predictions.

All scores are fractions in [0, 1]. Over leave-one-session-out folds, report
the mean and the sample standard deviation over folds
(:func:`aggregate_folds`) and the scores of all folds' predictions pooled
(:func:`pooled_metrics`).

Example
-------
>>> scores = classification_metrics([0, 0, 1, 2], [0, 1, 1, 1], n_classes=3)
>>> round(scores["wa"], 4), round(scores["ua"], 4)
(0.5, 0.5)
>>> scores["confusion"]
[[1, 1, 0], [0, 1, 0], [0, 1, 0]]
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

#: The scalar scores of :func:`classification_metrics`, in report order.
SCORE_NAMES = ("wa", "ua", "wf1", "macro_f1")


def confusion_matrix(
    targets: Sequence[int], predictions: Sequence[int], n_classes: int
) -> np.ndarray:
    """``[n_classes, n_classes]`` counts, rows = targets, columns = predictions.

    Example
    -------
    >>> confusion_matrix([0, 1, 1], [0, 0, 1], n_classes=2).tolist()
    [[1, 0], [1, 1]]
    """
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if targets.shape != predictions.shape:
        raise ValueError(
            f"{targets.size} targets but {predictions.size} predictions"
        )
    for name, labels in (("target", targets), ("prediction", predictions)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {n_classes}), got "
                f"{sorted(set(labels.tolist()))}"
            )
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predictions), 1)
    return matrix


def metrics_from_confusion(matrix: np.ndarray) -> Dict:
    """WA, UA, WF1, macro-F1 and per-class scores from a confusion matrix.

    Example
    -------
    >>> scores = metrics_from_confusion(np.array([[2, 0], [1, 1]]))
    >>> round(scores["wf1"], 4), scores["recall"]
    (0.7333, [1.0, 0.5])
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    if total == 0:
        raise ValueError("no utterances to score: the confusion matrix is empty")
    correct = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    precision = np.divide(
        correct, predicted, out=np.zeros_like(correct), where=predicted > 0
    )
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall,
        denominator,
        out=np.zeros_like(correct),
        where=denominator > 0,
    )
    occurring = support > 0
    in_report = occurring | (predicted > 0)
    return {
        "wa": float(correct.sum() / total),
        "ua": float(recall[occurring].mean()),
        "wf1": float((f1 * support).sum() / total),
        "macro_f1": float(f1[in_report].mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.astype(np.int64).tolist(),
        "confusion": matrix.astype(np.int64).tolist(),
    }


def classification_metrics(
    targets: Sequence[int], predictions: Sequence[int], n_classes: int
) -> Dict:
    """All scores of one set of predictions (see the module docstring)."""
    return metrics_from_confusion(confusion_matrix(targets, predictions, n_classes))


def aggregate_folds(fold_scores: Sequence[Dict]) -> Dict[str, Dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0 for one fold) over folds.

    Example
    -------
    >>> folds = [{"wa": 0.5, "ua": 0.4, "wf1": 0.5, "macro_f1": 0.3},
    ...          {"wa": 0.7, "ua": 0.6, "wf1": 0.5, "macro_f1": 0.5}]
    >>> summary = aggregate_folds(folds)
    >>> round(summary["mean"]["wa"], 4), round(summary["std"]["wa"], 4)
    (0.6, 0.1414)
    """
    if not fold_scores:
        raise ValueError("no fold scores to aggregate")
    summary = {"mean": {}, "std": {}}
    for name in SCORE_NAMES:
        values = np.array([scores[name] for scores in fold_scores], dtype=np.float64)
        summary["mean"][name] = float(values.mean())
        summary["std"][name] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return summary


def pooled_metrics(
    fold_targets: Sequence[Sequence[int]],
    fold_predictions: Sequence[Sequence[int]],
    n_classes: int,
) -> Dict:
    """Scores of every fold's test predictions taken together."""
    return classification_metrics(
        np.concatenate([np.asarray(t) for t in fold_targets]),
        np.concatenate([np.asarray(p) for p in fold_predictions]),
        n_classes,
    )


def embedding_collapse(embeddings: torch.Tensor, *, tolerance: float = 1e-5) -> Dict[str, float]:
    """How much of a set of pooled embeddings ignores the input.

    A head whose units all sit in ReLU's dead zone, or that reads encoder
    blocks that hardly depend on the audio, gives (nearly) one embedding to
    every clip: its accuracy is then the majority class's, whatever it
    learnt. Logged with the validation scores.

    Arguments
    ---------
    embeddings : torch.Tensor
        ``[clips, dim]`` embeddings of distinct clips.
    tolerance : float
        Distances (and standard deviations) below ``tolerance`` times the
        embeddings' mean norm count as zero.

    Returns
    -------
    dict
        ``constant_units``: share of the dimensions that do not vary over the
        clips; ``zero_embeddings``: share of clips whose embedding is all
        zero; ``duplicate_embeddings``: share of clips whose embedding equals
        another clip's.

    Example
    -------
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    >>> embedding_collapse(x)
    {'constant_units': 0.5, 'zero_embeddings': 0.25, 'duplicate_embeddings': 0.5}
    """
    x = embeddings.detach().double().cpu()
    if x.dim() != 2 or len(x) < 2:
        raise ValueError(f"embedding_collapse needs [clips >= 2, dim] embeddings, got {tuple(x.shape)}")
    scale = max(float(x.norm(dim=1).mean()), 1e-12)
    distances = torch.cdist(x, x).fill_diagonal_(float("inf"))
    return {
        "constant_units": float((x.std(dim=0) <= tolerance * scale).double().mean()),
        "zero_embeddings": float((x.abs().amax(dim=1) == 0).double().mean()),
        "duplicate_embeddings": float((distances.amin(dim=1) <= tolerance * scale).double().mean()),
    }


class EmotionMetricStats:
    """Collects utterance ids, predictions and targets over batches.

    Arguments
    ---------
    n_classes : int
        Number of classes.

    Example
    -------
    >>> import torch
    >>> stats = EmotionMetricStats(n_classes=2)
    >>> stats.append(["a", "b"], torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    >>> stats.summarize()["wa"]
    0.5
    """

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.clear()

    def clear(self):
        """Forgets everything collected."""
        self.ids: List[str] = []
        self.predictions: List[int] = []
        self.targets: List[int] = []

    def append(self, ids: Sequence[str], scores, targets):
        """Adds a batch.

        Arguments
        ---------
        ids : sequence of str
            Utterance ids.
        scores : torch.Tensor or array
            ``[batch, n_classes]`` scores (logits or log-probabilities), or
            ``[batch]`` predicted class indices.
        targets : torch.Tensor or array
            ``[batch]`` (or ``[batch, 1]``) class indices.
        """
        scores = np.asarray(_to_numpy(scores))
        predictions = scores.argmax(axis=-1) if scores.ndim == 2 else scores
        targets = np.asarray(_to_numpy(targets)).reshape(-1)
        if not len(ids) == len(predictions) == len(targets):
            raise ValueError(
                f"{len(ids)} ids, {len(predictions)} predictions and "
                f"{len(targets)} targets in one batch"
            )
        self.ids.extend(ids)
        self.predictions.extend(int(p) for p in predictions)
        self.targets.extend(int(t) for t in targets)

    def summarize(self, field: Optional[str] = None):
        """All scores, or the one named by ``field`` (SpeechBrain's convention)."""
        scores = classification_metrics(self.targets, self.predictions, self.n_classes)
        return scores if field is None else scores[field]


def _to_numpy(values):
    return values.detach().cpu().numpy() if torch.is_tensor(values) else values

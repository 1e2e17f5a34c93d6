"""Metrics against hand-computed values."""

import numpy as np
import pytest
import torch

from qieemo_sb.metrics import (
    EmotionMetricStats,
    aggregate_folds,
    classification_metrics,
    confusion_matrix,
    pooled_metrics,
)

# Class 3 occurs once and is never predicted.
TARGETS = [0, 0, 0, 1, 1, 2, 2, 3]
PREDICTIONS = [0, 0, 1, 1, 1, 2, 0, 1]


def test_hand_computed_scores():
    scores = classification_metrics(TARGETS, PREDICTIONS, n_classes=4)
    assert scores["confusion"] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0]]
    assert scores["wa"] == pytest.approx(5 / 8)
    # recalls 2/3, 1, 1/2, 0
    assert scores["ua"] == pytest.approx((2 / 3 + 1 + 1 / 2 + 0) / 4)
    # precisions 2/3, 1/2, 1, 0 (never predicted) -> F1 2/3, 2/3, 2/3, 0
    assert scores["precision"] == pytest.approx([2 / 3, 1 / 2, 1.0, 0.0])
    assert scores["f1"] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 0.0])
    assert scores["wf1"] == pytest.approx((3 + 2 + 2) * (2 / 3) / 8)
    assert scores["macro_f1"] == pytest.approx(0.5)
    assert scores["support"] == [3, 2, 2, 1]


def test_class_absent_from_targets_and_predictions_is_left_out():
    # Class 2 never occurs: UA and macro-F1 average over classes 0 and 1 only.
    scores = classification_metrics([0, 1, 1], [0, 1, 0], n_classes=3)
    assert scores["ua"] == pytest.approx((1 + 0.5) / 2)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_fold_aggregation_and_pooling():
    fold_a = ([0, 1, 1, 1], [0, 1, 1, 0])  # WA 0.75
    fold_b = ([0, 0, 1, 1], [1, 0, 1, 1])  # WA 0.75
    fold_c = ([0, 1], [1, 0])  # WA 0
    per_fold = [classification_metrics(t, p, 2) for t, p in (fold_a, fold_b, fold_c)]
    summary = aggregate_folds(per_fold)
    assert summary["mean"]["wa"] == pytest.approx(0.5)
    assert summary["std"]["wa"] == pytest.approx(np.std([0.75, 0.75, 0.0], ddof=1))
    pooled = pooled_metrics([fold_a[0], fold_b[0], fold_c[0]], [fold_a[1], fold_b[1], fold_c[1]], 2)
    assert pooled["wa"] == pytest.approx(6 / 10)
    assert pooled["confusion"] == [[2, 2], [2, 4]]


def test_metric_stats_accumulates_batches():
    stats = EmotionMetricStats(n_classes=4)
    log_probs = torch.nn.functional.one_hot(torch.tensor(PREDICTIONS), 4).float().log_softmax(-1)
    stats.append([f"u{i}" for i in range(4)], log_probs[:4], torch.tensor(TARGETS[:4]).unsqueeze(1))
    stats.append([f"u{i}" for i in range(4, 8)], log_probs[4:], torch.tensor(TARGETS[4:]))
    assert stats.summarize("wa") == pytest.approx(5 / 8)
    assert stats.summarize()["confusion"][3] == [0, 1, 0, 0]
    assert len(stats.ids) == 8


def test_metric_errors():
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], n_classes=2)
    with pytest.raises(ValueError, match="3 targets but 2 predictions"):
        confusion_matrix([0, 1, 1], [0, 1], n_classes=2)
    with pytest.raises(ValueError, match="empty"):
        classification_metrics([], [], n_classes=2)
    with pytest.raises(ValueError, match="no fold scores"):
        aggregate_folds([])

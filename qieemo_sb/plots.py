"""PNG figures of the emotion recipe: confusion matrix, probe score per block.

Matplotlib's file-only backend (Agg): no display is needed.

Example
-------
>>> import tempfile, numpy as np
>>> folder = tempfile.mkdtemp()
>>> plot_confusion(np.array([[3, 1], [0, 4]]), ["neu", "ang"], folder + "/c.png", title="t")
>>> plot_block_scores([1, 2, 3], [0.4, 0.5, 0.45], [0.02, 0.03, 0.01], folder + "/b.png",
...                   ylabel="WA", title="probe")
"""

from pathlib import Path
from typing import Sequence, Union

import numpy as np


def _pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported on the first plot: every
    fold's training process imports this module, and few of them plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    matrix: np.ndarray, labels: Sequence[str], path: Union[str, Path], *, title: str
) -> None:
    """Counts in the cells, colours by row share (recall) so classes compare."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(len(labels)):
        for col in range(len(labels)):
            colour = "white" if shares[row, col] > 0.6 else "black"
            axes.text(col, row, f"{matrix[row, col]}\n{100 * shares[row, col]:.0f}%",
                      ha="center", va="center", color=colour, fontsize=9)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("prediction")
    axes.set_ylabel("target")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the target's utterances")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_block_scores(
    blocks: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    path: Union[str, Path],
    *,
    ylabel: str,
    title: str,
) -> None:
    """Mean +- std (over folds) of a score for each encoder block."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.5))
    mean, std = 100 * np.asarray(mean), 100 * np.asarray(std)
    axes.errorbar(blocks, mean, yerr=std, marker="o", capsize=3)
    best = int(np.argmax(mean))
    axes.annotate(f"{mean[best]:.1f}", (blocks[best], mean[best]), textcoords="offset points",
                  xytext=(0, 8), ha="center")
    axes.set_xticks(list(blocks))
    axes.set_xlabel("encoder block")
    axes.set_ylabel(f"{ylabel} (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

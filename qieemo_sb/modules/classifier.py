"""Utterance pooling and the emotion classifier head."""

import torch
from speechbrain.nnet.linear import Linear
from torch import nn

from qieemo_sb.masking import masked_mean


class MaskedMeanPooling(nn.Module):
    """Mean over valid frames: ``[batch, time, dim], [batch] -> [batch, dim]``.

    Example
    -------
    >>> pool = MaskedMeanPooling()
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> pool(x, torch.tensor([2]))
    tensor([[2.]])
    """

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Returns the ``[batch, dim]`` mean of the first ``lengths`` frames."""
        return masked_mean(x, lengths)


class EmotionClassifier(nn.Module):
    """Linear(hidden) -> ReLU -> Dropout -> Linear(n_classes); returns logits.

    Arguments
    ---------
    input_size : int
        Dimension of the pooled utterance embedding.
    n_classes : int
        Number of emotion classes.
    hidden_size : int
        Hidden layer size (256 in the paper).
    dropout : float
        Dropout before the output layer.

    Example
    -------
    >>> head = EmotionClassifier(input_size=32, n_classes=4)
    >>> head(torch.rand(3, 32)).shape
    torch.Size([3, 4])
    """

    def __init__(
        self,
        input_size: int,
        n_classes: int = 4,
        hidden_size: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.hidden = Linear(n_neurons=hidden_size, input_size=input_size)
        self.dropout = nn.Dropout(dropout)
        self.output = Linear(n_neurons=n_classes, input_size=hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, input_size]`` -> ``[batch, n_classes]`` logits."""
        return self.output(self.dropout(torch.relu(self.hidden(x))))

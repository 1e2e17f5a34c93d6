"""Calling a layer's functional form with its parameters, not the layer.

The encoder blocks call their LayerNorms, Linears and Dropouts this way: an
``nn.Module`` call costs a few microseconds of Python (hooks, dispatch)
that a 2-thread CPU spends serially, and classifying a clip made 313 of
them (61 now). Forward hooks registered on such a sub-layer do not run.
"""

import torch
from torch import nn


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` without the module call.

    Example
    -------
    >>> norm = nn.LayerNorm(4)
    >>> x = torch.randn(2, 3, 4)
    >>> torch.equal(layer_norm(norm, x), norm(x))
    True
    """
    return nn.functional.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` without the module call.

    Example
    -------
    >>> layer = nn.Linear(4, 2)
    >>> x = torch.randn(3, 4)
    >>> torch.equal(linear(layer, x), layer(x))
    True
    """
    return nn.functional.linear(x, layer.weight, layer.bias)


def dropout(layer: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` without the module call: ``x`` itself when nothing is dropped
    (the layer in eval mode, or ``p == 0``). The layer's own mode counts, so
    dropout kept on at inference (Monte Carlo dropout) still works.

    Example
    -------
    >>> x = torch.ones(4)
    >>> dropout(nn.Dropout(0.5).eval(), x) is x
    True
    >>> sorted(set(dropout(nn.Dropout(0.5), torch.ones(1000)).tolist()))
    [0.0, 2.0]
    """
    if not layer.training or layer.p == 0:
        return x
    return nn.functional.dropout(x, layer.p, True, layer.inplace)

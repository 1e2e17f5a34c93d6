"""Calling a layer's functional form with its parameters, not the layer, and a
fused linear + SiLU for CPU inference.

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


def _mkldnn_linear_pointwise():
    """oneDNN's inner product with a fused element-wise op (what Inductor's CPU
    backend turns ``silu(linear(x))`` into), or None without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # a build without the op
        return None


_LINEAR_POINTWISE = _mkldnn_linear_pointwise()

#: Whether the feed-forward modules take :func:`fused_linear_silu` where it
#: applies (:func:`use_fused_linear_silu`). On where it was measured faster:
#: CPUs whose best kernels are AVX2 (an AMD EPYC, Zen 3: ``classify_file`` 5-9 %
#: faster); off elsewhere (an AVX-512 Intel Xeon measured oneDNN's product
#: slower than MKL's at 63 and 126 rows). Set it before building a
#: ``QieemoClassifier``, which then keeps the expansions' weights row-major.
PREFER_FUSED_LINEAR_SILU = (
    _LINEAR_POINTWISE is not None and torch.backends.cpu.get_cpu_capability() == "AVX2"
)


def fused_linear_silu_applies(x: torch.Tensor, layer: nn.Linear) -> bool:
    """Whether :func:`fused_linear_silu` can compute ``silu(layer(x))``: no autograd
    graph and no autocast, float32 on the CPU, a row-major weight with a bias,
    and a torch built with oneDNN.

    Example
    -------
    >>> layer = nn.Linear(4, 8)
    >>> x = torch.randn(3, 4)
    >>> fused_linear_silu_applies(x, layer)  # autograd on: the plain ops
    False
    >>> with torch.no_grad():
    ...     fused_linear_silu_applies(x, layer) == torch.backends.mkldnn.is_available()
    True
    """
    weight = layer.weight
    return (
        _LINEAR_POINTWISE is not None
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and weight.is_contiguous()
        and layer.bias is not None
    )


def use_fused_linear_silu(x: torch.Tensor, layer: nn.Linear) -> bool:
    """:data:`PREFER_FUSED_LINEAR_SILU` and :func:`fused_linear_silu_applies`."""
    return PREFER_FUSED_LINEAR_SILU and fused_linear_silu_applies(x, layer)


def fused_linear_silu(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``silu(layer(x))`` ``[..., in] -> [..., out]`` in one oneDNN call, where
    :func:`fused_linear_silu_applies`: the bias and the SiLU are applied to each
    output tile while it is in cache, instead of a bias copy before the product
    and a pass over the whole output after it (the ``d_ffn``-wide hidden tensor
    of a feed-forward module is the largest one of a conformer block).

    Example
    -------
    >>> layer = nn.Linear(4, 8)
    >>> x = torch.randn(2, 3, 4)
    >>> with torch.no_grad():
    ...     fused = fused_linear_silu(x, layer)
    ...     torch.allclose(fused, nn.functional.silu(layer(x)), atol=1e-6)
    True
    """
    if not fused_linear_silu_applies(x, layer):
        raise ValueError(
            "fused_linear_silu needs no autograd, no autocast, float32 CPU tensors, a "
            "row-major weight with a bias and oneDNN (check fused_linear_silu_applies)"
        )
    return _LINEAR_POINTWISE(x, layer.weight, layer.bias, "swish", [], "")


def linear_silu(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``silu(layer(x))``, ``[..., in] -> [..., out]``: one oneDNN call where
    :func:`use_fused_linear_silu` (checked once), else the product and a SiLU,
    in place when autograd keeps nothing (SiLU's backward needs its input).

    Example
    -------
    >>> layer = nn.Linear(4, 8)
    >>> x = torch.randn(2, 3, 4)
    >>> torch.allclose(linear_silu(x, layer), nn.functional.silu(layer(x)), atol=1e-6)
    True
    """
    if use_fused_linear_silu(x, layer):
        return _LINEAR_POINTWISE(x, layer.weight, layer.bias, "swish", [], "")
    out = linear(layer, x)
    return nn.functional.silu(out, inplace=not out.requires_grad)

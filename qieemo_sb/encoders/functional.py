"""Calling a layer's functional form with its parameters, not the layer, and
the choice of matrix-product kernel at CPU inference.

The encoder blocks call their LayerNorms, Linears and Dropouts this way: an
``nn.Module`` call costs a few microseconds of Python (hooks, dispatch)
that a 2-thread CPU spends serially, and classifying a clip made 313 of
them (61 now). Forward hooks registered on such a sub-layer do not run.

Their linear products (:func:`linear_product`) take oneDNN's inner product
instead of torch's default, MKL's GEMM, where :data:`PREFER_ONEDNN_LINEAR`:
MKL runs its best kernels only on Intel CPUs.
"""

import platform
from typing import Optional

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
    """oneDNN's inner product with an optional fused element-wise op (what
    Inductor's CPU backend turns ``silu(linear(x))`` into), or None without oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # a build without the op
        return None


def cpu_vendor() -> str:
    """The CPU maker's identification string (``GenuineIntel``, ``AuthenticAMD``,
    ...) as Linux's ``/proc/cpuinfo`` or Windows' processor name gives it; ``""``
    where neither tells.

    Example
    -------
    >>> isinstance(cpu_vendor(), str)
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    processor = platform.processor()  # Windows: "... Family 25 ..., AuthenticAMD"
    return next((vendor for vendor in ("GenuineIntel", "AuthenticAMD", "HygonGenuine")
                 if vendor in processor), "")


_LINEAR_POINTWISE = _mkldnn_linear_pointwise()

#: Whether linear products at CPU inference take oneDNN's inner product
#: (:func:`linear_product`, :func:`linear_silu`) rather than torch's default,
#: MKL's GEMM. On for x86 CPUs not made by Intel, where MKL does not run its
#: widest kernels: on an AMD EPYC Zen 5 (AVX-512, 2 threads) oneDNN's products
#: of the feed-forward's shapes were 1.6-2.6x faster at 63-250 rows (MKL's
#: about 150 GFLOP/s, oneDNN's 210-370). On a Zen 3 (AVX2, where both run
#: AVX2 kernels) its fused expansion + SiLU made ``classify_file`` 5-9 % faster
#: but its feed-forward contraction alone was 10 % slower (2.81 against 2.55
#: ms at 251 rows); all products on oneDNN were not measured there. Off on Intel CPUs
#: (on an AVX-512 Xeon oneDNN's product was the slower one at 63 and 126
#: rows) and where the CPU's maker is unknown or torch has no MKL. A user may
#: set it before building a ``QieemoClassifier``, which keeps the linear
#: weights row-major where it is on (oneDNN's layout), column-major for MKL
#: where it is off.
PREFER_ONEDNN_LINEAR = (
    _LINEAR_POINTWISE is not None
    and torch.backends.mkl.is_available()
    and cpu_vendor() not in ("", "GenuineIntel")
)


def onednn_linear_applies(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> bool:
    """Whether oneDNN's inner product can compute ``x @ weight.T + bias``: no
    autograd graph and no autocast, float32 on the CPU, a row-major
    ``[out, in]`` weight that fits ``x`` (and the bias), and a torch built
    with oneDNN.

    Example
    -------
    >>> layer = nn.Linear(4, 8)
    >>> x = torch.randn(3, 4)
    >>> onednn_linear_applies(x, layer.weight, layer.bias)  # autograd on: the plain ops
    False
    >>> with torch.no_grad():
    ...     onednn_linear_applies(x, layer.weight) == torch.backends.mkldnn.is_available()
    True
    """
    return (
        _LINEAR_POINTWISE is not None
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
        and x.device.type == "cpu"
        and x.dim() >= 2
        and x.dtype == weight.dtype == torch.float32
        and weight.dim() == 2
        and weight.is_contiguous()
        and x.shape[-1] == weight.shape[1]  # else torch's product gives its clear error
        and (bias is None or (bias.dtype == torch.float32 and bias.device.type == "cpu"
                              and bias.shape == weight.shape[:1]))
    )


def use_onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> bool:
    """:data:`PREFER_ONEDNN_LINEAR` and :func:`onednn_linear_applies`."""
    return PREFER_ONEDNN_LINEAR and onednn_linear_applies(x, weight, bias)


def linear_product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, ``[..., in] -> [..., out]``, by oneDNN's
    inner product where :func:`use_onednn_linear`.

    Example
    -------
    >>> x, weight, bias = torch.randn(2, 3, 4), torch.randn(8, 4), torch.randn(8)
    >>> torch.allclose(linear_product(x, weight, bias), x @ weight.T + bias, atol=1e-5)
    True
    """
    if use_onednn_linear(x, weight, bias):
        return onednn_product(x, weight, bias)
    return nn.functional.linear(x, weight, bias)


def onednn_product(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    addend: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``x @ weight.T + bias`` (plus ``addend``, ``[..., out]``, added to each
    output tile while it is in cache) as one oneDNN call, for callers that
    checked :func:`onednn_linear_applies` (or :func:`use_onednn_linear`).

    Example
    -------
    >>> x, weight, addend = torch.randn(3, 4), torch.randn(5, 4), torch.randn(3, 5)
    >>> with torch.no_grad():
    ...     product = x @ weight.T + addend
    ...     not onednn_linear_applies(x, weight) or torch.allclose(
    ...         onednn_product(x, weight, addend=addend), product, atol=1e-5)
    True
    """
    if addend is None:
        return _LINEAR_POINTWISE(x, weight, bias, "none", [], "")
    return _LINEAR_POINTWISE.binary(x, addend, weight, bias, "add")


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` without the module call (:func:`linear_product`).

    Example
    -------
    >>> layer = nn.Linear(4, 2)
    >>> x = torch.randn(3, 4)
    >>> torch.allclose(linear(layer, x), layer(x), atol=1e-6)
    True
    """
    return linear_product(x, layer.weight, layer.bias)


def linear_silu(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``silu(layer(x))``, ``[..., in] -> [..., out]``: where :func:`use_onednn_linear`,
    one oneDNN call that applies the bias and the SiLU to each output tile
    while it is in cache (the ``d_ffn``-wide hidden tensor of a feed-forward
    module is the largest one of a conformer block); else the product and a
    SiLU, in place when autograd keeps nothing (SiLU's backward needs its input).

    Example
    -------
    >>> layer = nn.Linear(4, 8)
    >>> x = torch.randn(2, 3, 4)
    >>> torch.allclose(linear_silu(x, layer), nn.functional.silu(layer(x)), atol=1e-6)
    True
    """
    if use_onednn_linear(x, layer.weight, layer.bias):
        return _LINEAR_POINTWISE(x, layer.weight, layer.bias, "swish", [], "")
    out = nn.functional.linear(x, layer.weight, layer.bias)
    return nn.functional.silu(out, inplace=not out.requires_grad)

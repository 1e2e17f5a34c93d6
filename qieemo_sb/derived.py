"""Tensors derived from parameters, computed once while the parameters stay the same.

At inference the weights do not change between calls, so a tensor computed
from weights alone (a weight in another layout, a projected position table)
need not be recomputed for every clip. :func:`derived_tensor` keeps such a
tensor in a plain dict of the module (not a buffer: it is never saved in a
checkpoint) and returns it again as long as every source is the same tensor
object, with the same storage and version counter, as when it was computed:
an in-place change (an optimizer step, ``load_state_dict``), a move to another
device or dtype, a replaced parameter or a copy of the module gives a fresh
computation. The entry holds its sources, so a source cannot be freed and
another tensor take its place unnoticed. With autograd on (training, frozen
parts included) it always recomputes: a tensor cached under
``torch.inference_mode`` may not enter a graph. Writes through ``.data``
(``param.data.copy_(...)``) bypass the version counter: after one, call
:func:`forget_derived_tensors` on the model.

Example
-------
>>> import torch
>>> weight = torch.nn.Parameter(torch.ones(2, 3))
>>> cache = {}
>>> with torch.no_grad():
...     first = derived_tensor(cache, "t", [weight], lambda: weight.t().contiguous())
...     again = derived_tensor(cache, "t", [weight], lambda: weight.t().contiguous())
...     _ = weight.mul_(2)  # an in-place update: the cached value is stale
...     updated = derived_tensor(cache, "t", [weight], lambda: weight.t().contiguous())
>>> again is first, updated is first, updated[0, 0].item()
(True, False, 2.0)
"""

from typing import Callable, Dict, Hashable, Optional, Sequence

import torch


def derived_tensor(
    cache: Dict[str, tuple],
    name: str,
    sources: Sequence[torch.Tensor],
    compute: Callable[[], torch.Tensor],
    extra_key: Hashable = None,
) -> torch.Tensor:
    """``compute()``, reused while ``sources`` are unchanged and autograd is off.

    Arguments
    ---------
    cache : dict
        The owning module's cache (a plain attribute, so neither
        ``state_dict`` nor ``.to()`` see it).
    name : str
        Entry of ``cache``.
    sources : sequence of torch.Tensor
        The tensors ``compute`` reads.
    compute : callable
        Builds the tensor from ``sources`` (and ``extra_key``) alone.
    extra_key : hashable, optional
        Anything else the result depends on (a length, say).

    Returns
    -------
    torch.Tensor
        The cached or freshly computed tensor.
    """
    if torch.is_grad_enabled():
        return compute()
    # The storage address tells a moved or reassigned parameter (``.data =``)
    # apart, the version counter an in-place update. Tensors made under
    # inference_mode have no version counter (nothing may update them in
    # place outside it).
    state = (
        tuple((s.data_ptr(), None if s.is_inference() else s._version, s.dtype, s.device, s.shape)
              for s in sources),
        extra_key,
    )
    entry = cache.get(name)
    if entry is not None:
        held, held_state, value = entry
        if len(held) == len(sources) and all(a is b for a, b in zip(held, sources)) and held_state == state:
            return value
    value = compute()
    cache[name] = (tuple(sources), state, value)
    return value


def held_derived_tensor(cache: Dict[str, tuple], name: str) -> Optional[torch.Tensor]:
    """The tensor ``cache`` holds under ``name`` (whether still valid or not), or None."""
    entry = cache.get(name)
    return None if entry is None else entry[2]


def forget_derived_tensors(module: torch.nn.Module) -> None:
    """Empties the derived-tensor caches (``_derived`` dicts) of ``module`` and its submodules.

    Example
    -------
    >>> layer = torch.nn.Linear(2, 3)
    >>> layer._derived = {}
    >>> with torch.no_grad():
    ...     _ = derived_tensor(layer._derived, "t", [layer.weight], lambda: layer.weight.t().contiguous())
    >>> forget_derived_tensors(torch.nn.Sequential(layer))
    >>> len(layer._derived)
    0
    """
    for submodule in module.modules():
        cache = submodule.__dict__.get("_derived")
        if cache is not None:
            cache.clear()

"""Registry of bound methods: ``method=`` names -> functions.

A method computes bounds on ``C @ out`` for a spec matrix ``C`` ``[B, M, K]``
(``C is None`` means the outputs themselves, ``M = K``)::

    fn(bnet, x, threat, noise, C) -> (lower [B, M], upper [B, M])

Every method other than ``"ibp"`` must return the elementwise best of itself
and IBP, so none can lose to IBP.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

BoundFn = Callable[..., tuple[Tensor, Tensor]]
_METHODS: dict[str, BoundFn] = {}


def register_method(name: str, fn: BoundFn) -> None:
    _METHODS[name] = fn


def get_method(name: str) -> BoundFn:
    if name not in _METHODS:
        raise ValueError(f"unknown bound method {name!r}; available: {sorted(_METHODS)}")
    return _METHODS[name]


def available_methods() -> list[str]:
    return sorted(_METHODS)


def spec_interval(C: Tensor | None, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds of ``C @ v`` for ``v`` in ``[lower, upper]`` (``[B, K]``); ``C``: ``[B, M, K]``.

    Written as ``C+ l + C- u`` so a margin ``e_y - e_j`` gives exactly ``l_y - u_j``.
    """
    if C is None:
        return lower, upper
    pos, neg = C.clamp(min=0), C.clamp(max=0)
    lo = torch.einsum("bmk,bk->bm", pos, lower) + torch.einsum("bmk,bk->bm", neg, upper)
    hi = torch.einsum("bmk,bk->bm", pos, upper) + torch.einsum("bmk,bk->bm", neg, lower)
    return lo, hi


def ibp(bnet, x: Tensor, threat, noise: Tensor | None, C: Tensor | None):
    """S-IBP: interval propagation through the unrolled (layer, time) graph."""
    lower, upper = bnet.interval_scores(x, threat, noise)
    return spec_interval(C, lower, upper)


register_method("ibp", ibp)

"""Registry of bound methods: ``method=`` names -> functions.

A method computes bounds on ``C @ out`` for a spec matrix ``C`` ``[B, M, K]``
(``C is None`` means the outputs themselves, ``M = K``)::

    fn(bnet, x, threat, noise, C, **kw) -> (lower [B, M], upper [B, M])

Every method other than ``"ibp"`` must return the elementwise best of itself
and IBP, so none can lose to IBP.

A method may accept the keyword ``need_upper: bool = True``: when called with
``need_upper=False`` (margins and certificates need lower bounds only) it may
skip computing the upper bound and return any sound one instead (IBP's, say).
Methods without that keyword still work: :func:`call_method` passes it only
to functions that accept it. Likewise ``plan`` (a :class:`~snncertify.budget.Plan`):
a method that chunks spec rows or neurons by the memory budget takes it.

Each method registers a cost model (``cost(sizes, rows) -> CostModel``,
:mod:`snncertify.budget`) from which the wrapper splits the batch; without
one, IBP's is used.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from .budget import CostModel, Sizes, ibp_cost

BoundFn = Callable[..., tuple[Tensor, Tensor]]
CostFn = Callable[[Sizes, int], CostModel]
_METHODS: dict[str, BoundFn] = {}
_COSTS: dict[str, CostFn] = {}


def register_method(name: str, fn: BoundFn, cost: CostFn | None = None,
                    replace: bool = False) -> None:
    """Register ``fn`` under ``name``, with its memory cost model (default: IBP's).

    An existing name is refused (ValueError) unless ``replace=True``."""
    if name in _METHODS and _METHODS[name] is not fn and not replace:
        raise ValueError(f"bound method {name!r} is already registered "
                         f"({getattr(_METHODS[name], '__qualname__', _METHODS[name])}); "
                         "pass replace=True to replace it")
    _METHODS[name] = fn
    _COSTS[name] = cost or ibp_cost


def method_cost(name: str) -> CostFn:
    get_method(name)
    return _COSTS[name]


def get_method(name: str) -> BoundFn:
    if name not in _METHODS:
        raise ValueError(f"unknown bound method {name!r}; available: {sorted(_METHODS)}")
    return _METHODS[name]


def accepts(fn: BoundFn, keyword: str) -> bool:
    """True when ``fn`` takes the keyword ``keyword`` (or any ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def call_method(name: str, bnet, x: Tensor, threat, noise: Tensor | None, C: Tensor | None,
                need_upper: bool = True, plan=None) -> tuple[Tensor, Tensor]:
    """Run the method ``name``; ``need_upper=False`` and ``plan`` are passed on to
    methods that take them."""
    fn = get_method(name)
    kw = {}
    if not need_upper and accepts(fn, "need_upper"):
        kw["need_upper"] = False
    if plan is not None and accepts(fn, "plan"):
        kw["plan"] = plan
    return fn(bnet, x, threat, noise, C, **kw)


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


def ibp(bnet, x: Tensor, threat, noise: Tensor | None, C: Tensor | None,
        need_upper: bool = True):
    """S-IBP: interval propagation through the unrolled (layer, time) graph.

    ``need_upper`` is accepted and ignored: both bounds come from one pass.
    """
    lower, upper = bnet.interval_scores(x, threat, noise)
    return spec_interval(C, lower, upper)


register_method("ibp", ibp)

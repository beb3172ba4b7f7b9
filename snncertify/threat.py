"""Threat models: which inputs a certificate covers.

* ``LinfBall(eps)``: every ``x'`` with ``|x' - x|_inf <= eps`` and ``x'`` in
  ``[0, 1]`` (direct and rate encodings). For rate encoding the certificate
  holds for ONE fixed draw of the encoder's noise, never for the stochastic
  model as a whole.
* ``FlipMask(mask)``: event frames where every position with ``mask`` True
  may flip (0 <-> 1) independently.
* ``FlipBudget(k, mask=None)``: event frames with at most ``k`` flipped spikes
  (restricted to ``mask`` when given). Interval propagation can only use
  "every allowed position may flip"; linear bounds (CROWN) use the budget
  exactly.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LinfBall:
    """L-infinity ball of radius ``eps`` (float, or tensor ``[B]`` per sample)."""

    eps: float | Tensor

    def is_point(self) -> bool:
        return bool(torch.all(torch.as_tensor(self.eps) == 0))

    def take(self, sl: slice, ndim: int) -> LinfBall:
        """The threat of the samples ``sl`` of the batch (inputs of rank ``ndim``)."""
        per_sample = isinstance(self.eps, Tensor) and self.eps.ndim == 1
        return LinfBall(self.eps[sl]) if per_sample else self


@dataclass(frozen=True)
class FlipMask:
    """Positions that may flip, bool, broadcastable to the frames ``[T, B, ...]``."""

    mask: Tensor

    def is_point(self) -> bool:
        return not bool(self.mask.any())

    def take(self, sl: slice, ndim: int) -> FlipMask:
        """The threat of the samples ``sl`` of the batch (axis 1 of frames of rank ``ndim``)."""
        return FlipMask(_take_mask(self.mask, sl, ndim))


@dataclass(frozen=True)
class FlipBudget:
    """At most ``k`` flips, inside ``mask`` (bool, broadcastable to ``[T, B, ...]``) if given."""

    k: int
    mask: Tensor | None = None

    def is_point(self) -> bool:
        return self.k == 0 or (self.mask is not None and not bool(self.mask.any()))

    def take(self, sl: slice, ndim: int) -> FlipBudget:
        """The threat of the samples ``sl`` of the batch (axis 1 of frames of rank ``ndim``)."""
        return self if self.mask is None else FlipBudget(self.k, _take_mask(self.mask, sl, ndim))


def _take_mask(mask: Tensor, sl: slice, ndim: int) -> Tensor:
    """Rows ``sl`` of the batch axis of a mask broadcastable to frames ``[T, B, ...]``
    of rank ``ndim`` (a mask without its own batch axis applies to every sample)."""
    return mask[:, sl] if mask.ndim == ndim and mask.shape[1] != 1 else mask


Threat = LinfBall | FlipMask | FlipBudget


def _check_eps_number(eps: float) -> None:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise ValueError(f"eps must be a real number, got {type(eps).__name__}")
    if math.isnan(eps):
        raise ValueError("eps is NaN")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def make_threat(encoding: str, eps, batch_size: int) -> Threat:
    """Validate ``eps`` for ``encoding`` and turn it into a threat model.

    direct / rate: ``eps`` is a float >= 0 or a tensor ``[B]`` of them.
    event: ``eps`` is a bool mask broadcastable to ``[T, B, ...]`` (positions
    that may flip) or an int budget ``k >= 0`` of flips anywhere.
    A ready threat object is validated and passed through.
    """
    if isinstance(eps, (LinfBall, FlipMask, FlipBudget)):
        threat = eps
    elif encoding == "event":
        if isinstance(eps, Tensor) and eps.dtype == torch.bool:
            threat = FlipMask(eps)
        elif isinstance(eps, numbers.Integral) and not isinstance(eps, bool):
            threat = FlipBudget(int(eps))
        else:
            raise ValueError(
                "event encoding: eps must be a bool mask of positions that may flip "
                f"or an int flip budget, got {type(eps).__name__}"
            )
    else:
        if isinstance(eps, Tensor):
            if not eps.is_floating_point():
                eps = eps.float()
            if eps.ndim > 1 or (eps.ndim == 1 and eps.shape[0] != batch_size):
                raise ValueError(
                    f"eps tensor must be a scalar or have shape [B] = [{batch_size}], "
                    f"got {list(eps.shape)}"
                )
            if bool(torch.isnan(eps).any()):
                raise ValueError("eps contains NaN")
            if bool((eps < 0).any()):
                raise ValueError(f"eps must be >= 0, got min {eps.min().item()}")
        else:
            _check_eps_number(eps)
        threat = LinfBall(eps)

    if encoding == "event" and isinstance(threat, LinfBall):
        raise ValueError("event encoding takes a FlipMask or FlipBudget threat, not LinfBall")
    if encoding != "event" and not isinstance(threat, LinfBall):
        raise ValueError(f"{encoding} encoding takes an L-inf eps, not {type(threat).__name__}")
    if isinstance(threat, FlipBudget) and threat.k < 0:
        raise ValueError(f"flip budget must be >= 0, got {threat.k}")
    for m in (getattr(threat, "mask", None),):
        if m is not None and m.dtype != torch.bool:
            raise ValueError(f"flip mask must be a bool tensor, got {m.dtype}")
    return threat

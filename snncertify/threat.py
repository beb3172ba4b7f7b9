"""Threat models: which inputs a certificate covers, and their geometry.

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

Each threat owns its geometry (in the spirit of auto_LiRPA's
``PerturbationLpNorm``): the input box or flip set (:meth:`LinfBall.box`,
``flippable``), the minimum of a linear function over it (``concretize``) and
its extra MILP constraints (``add_milp_rows``). Which threats an encoding
accepts, and how an ``eps`` argument becomes one, is the encoding's business
(:mod:`snncertify.encoding`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def _check_eps_number(eps: float) -> None:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise ValueError(f"eps must be a real number, got {type(eps).__name__}")
    if math.isnan(eps):
        raise ValueError("eps is NaN")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def box_concretize(lam: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Elementwise minimum ``lam+ · lo + lam- · hi`` of ``lam · s`` over the box
    ``lo <= s <= hi`` and the magnitude ``|lam| · max(|lo|, |hi|)`` of its terms
    (all broadcast, not yet summed)."""
    val = lam.clamp(min=0) * lo + lam.clamp(max=0) * hi
    return val, lam.abs() * torch.maximum(lo.abs(), hi.abs())


@dataclass(frozen=True)
class LinfBall:
    """L-infinity ball of radius ``eps`` (float, or tensor ``[B]`` per sample), clipped to [0, 1]."""

    eps: float | Tensor

    @classmethod
    def parse(cls, eps, batch_size: int) -> LinfBall:
        """Validate ``eps`` (a float >= 0, or a tensor ``[]`` / ``[B]`` of them)."""
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
        return cls(eps)

    def is_point(self) -> bool:
        return bool(torch.all(torch.as_tensor(self.eps) == 0))

    def take(self, sl: slice, ndim: int) -> LinfBall:
        """The threat of the samples ``sl`` of the batch (inputs of rank ``ndim``)."""
        per_sample = isinstance(self.eps, Tensor) and self.eps.ndim == 1
        return LinfBall(self.eps[sl]) if per_sample else self

    def box(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-element bounds ``(lo, hi)`` of ``x'`` (each like ``x`` ``[B, ...]``):
        ``clamp(x -/+ eps, 0, 1)``; ``(x, x)`` itself for a point."""
        if self.is_point():
            return x, x
        eps = torch.as_tensor(self.eps, dtype=x.dtype, device=x.device)
        if eps.ndim == 1:
            eps = eps.reshape((-1,) + (1,) * (x.ndim - 1))
        return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)

    def contains(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Bool ``[B]``: ``x_adv`` lies in the threat set of ``x`` (both ``[B, ...]``)."""
        lo, hi = self.box(x)
        return ((x_adv >= lo) & (x_adv <= hi)).flatten(1).all(1)

    def concretize(self, lam: Tensor, lo: Tensor, hi: Tensor, x0: Tensor | None,
                   timed: bool) -> tuple[Tensor, Tensor]:
        """Minimum of ``lam · s`` over the encoded input box and its term magnitude.

        ``lam``: ``[steps, B, M, ...]`` (timed) or ``[B, M, ...]``; ``lo``/``hi``
        broadcast to it. Returns ``(value [B, M], mag [B, M])``; ``x0`` unused.
        """
        val, mag = box_concretize(lam, lo, hi)
        if timed:
            val, mag = val.sum(0), mag.sum(0)
        return val.flatten(2).sum(-1), mag.flatten(2).sum(-1)

    def add_milp_rows(self, model, free: np.ndarray, cols: np.ndarray, frames: np.ndarray) -> None:
        """No constraints beyond the variables' box."""


def _take_mask(mask: Tensor, sl: slice, ndim: int) -> Tensor:
    """Rows ``sl`` of the batch axis of a mask broadcastable to frames ``[T, B, ...]``
    of rank ``ndim`` (a mask without its own batch axis applies to every sample)."""
    return mask[:, sl] if mask.ndim == ndim and mask.shape[1] != 1 else mask


def _check_mask(mask: Tensor | None) -> None:
    if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool):
        raise ValueError(f"flip mask must be a bool tensor, got {getattr(mask, 'dtype', mask)}")


@dataclass(frozen=True)
class FlipMask:
    """Positions that may flip, bool, broadcastable to the frames ``[T, B, ...]``."""

    mask: Tensor

    def __post_init__(self) -> None:
        _check_mask(self.mask)

    def is_point(self) -> bool:
        return not bool(self.mask.any())

    def take(self, sl: slice, ndim: int) -> FlipMask:
        """The threat of the samples ``sl`` of the batch (axis 1 of frames of rank ``ndim``)."""
        return FlipMask(_take_mask(self.mask, sl, ndim))

    def flippable(self, x: Tensor) -> Tensor:
        """Bool ``[T, B, ...]`` like the frames ``x``: the positions that may flip."""
        return torch.broadcast_to(self.mask.to(x.device), x.shape)

    def contains(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Bool ``[B]``: the frames ``x_adv`` are binary and differ from ``x`` (``[T, B, ...]``
        both) only where the mask allows."""
        return _flips_allowed(self.flippable(x), x, x_adv)[0]

    def concretize(self, lam: Tensor, lo: Tensor, hi: Tensor, x0: Tensor | None,
                   timed: bool) -> tuple[Tensor, Tensor]:
        """A flip mask is a box over binary frames: as :meth:`LinfBall.concretize`."""
        return LinfBall.concretize(self, lam, lo, hi, x0, timed)  # type: ignore[arg-type]

    def add_milp_rows(self, model, free: np.ndarray, cols: np.ndarray, frames: np.ndarray) -> None:
        """No constraints beyond the flip binaries."""


@dataclass(frozen=True)
class FlipBudget:
    """At most ``k`` flips, inside ``mask`` (bool, broadcastable to ``[T, B, ...]``) if given."""

    k: int
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral):
            raise ValueError(f"flip budget must be an int, got {type(self.k).__name__}")
        if self.k < 0:
            raise ValueError(f"flip budget must be >= 0, got {self.k}")
        _check_mask(self.mask)

    def is_point(self) -> bool:
        return self.k == 0 or (self.mask is not None and not bool(self.mask.any()))

    def take(self, sl: slice, ndim: int) -> FlipBudget:
        """The threat of the samples ``sl`` of the batch (axis 1 of frames of rank ``ndim``)."""
        return self if self.mask is None else FlipBudget(self.k, _take_mask(self.mask, sl, ndim))

    def flippable(self, x: Tensor) -> Tensor:
        """Bool ``[T, B, ...]``: the mask, or every position when there is none."""
        if self.mask is None:
            return torch.ones_like(x, dtype=torch.bool)
        return torch.broadcast_to(self.mask.to(x.device), x.shape)

    def contains(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Bool ``[B]``: the frames ``x_adv`` are binary, at most ``k`` flips from ``x``
        (``[T, B, ...]`` both), inside the mask."""
        ok, flips = _flips_allowed(self.flippable(x), x, x_adv)
        return ok & (flips <= self.k)

    def concretize(self, lam: Tensor, lo: Tensor, hi: Tensor, x0: Tensor | None,
                   timed: bool) -> tuple[Tensor, Tensor]:
        """Minimum of ``a · s + c`` over binary frames ``s`` at most ``k`` flips
        (inside the mask) from the clean frames ``s0 = x0``: EXACTLY
        ``a · s0 + c + (sum of the k most negative flip gains, negatives only)``,
        where flipping position i changes the value by ``a_i (1 - 2 s0_i)`` (the
        gains are independent, so the best k-subset takes the k smallest).

        ``lam`` ``[steps, B, M, ...]``, ``lo``/``hi``/``x0`` ``[steps, B, 1, ...]``
        (positions with ``lo == hi`` may not flip). Returns ``(value, mag)`` ``[B, M]``.
        """
        base = (lam * x0).sum(0).flatten(2).sum(-1)
        mag = (lam.abs() * x0).sum(0).flatten(2).sum(-1)
        gain = lam * (1 - 2 * x0)
        gain = torch.where(hi != lo, gain, torch.zeros_like(gain))  # outside the mask: no flip
        gain = gain.movedim(0, 2).flatten(2)  # [B, M, steps * n]
        k = min(self.k, gain.shape[-1])
        best = torch.topk(gain, k, dim=-1, largest=False).values.clamp(max=0).sum(-1)
        return base + best, mag + best.abs()

    def add_milp_rows(self, model, free: np.ndarray, cols: np.ndarray, frames: np.ndarray) -> None:
        """``sum of flips <= k``: over the binaries ``cols[free]`` of the frames ``[T, n]``."""
        fc = cols[free]
        on = frames[free] > 0.5
        sign = np.where(on, -1.0, 1.0)
        A = sp.csr_matrix((sign, (np.zeros(len(fc), dtype=np.int64), fc)), shape=(1, model.n))
        model.add_rows(A, -np.inf, self.k - float(on.sum()))


Threat = LinfBall | FlipMask | FlipBudget
THREATS = (LinfBall, FlipMask, FlipBudget)


def _flips_allowed(flippable: Tensor, x: Tensor, x_adv: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample (axis 1 of the frames ``x``, ``x_adv`` and the bool ``flippable``, all
    ``[T, B, ...]``): whether ``x_adv`` is binary and changes ``x`` only where
    ``flippable`` (bool ``[B]``), and its number of flips (``[B]``)."""
    changed = x_adv != x
    ok = ((x_adv == 0) | (x_adv == 1)) & (~changed | flippable)
    per = lambda t: t.movedim(1, 0).flatten(1)  # noqa: E731
    return per(ok).all(1), per(changed).sum(1)

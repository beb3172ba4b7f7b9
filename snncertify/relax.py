"""Linear relaxations of the Leaky neuron's one-variable nonlinearities.

Every nonlinearity of ``snn.Leaky`` is a function of ONE membrane value ``m``
with a single breakpoint at the threshold θ (strict: ``m == θ`` is "below")::

    f(m) = p1(m) = s1 m + c1   for m <= θ
           p2(m) = s2 m + c2   for m >  θ

* spike ``H(m - θ)``:            p1 = 0,       p2 = 1
* zero reset ``β g(m)``, ``g(m) = m 1[m <= θ]``:  p1 = β m,   p2 = 0
* subtract reset ``h(m) = β m - θ H(m - θ)``:     p1 = β m,   p2 = β m - θ

On ``[l, u]`` a neuron is stable below (``u <= θ``: f = p1, exact), stable
above (``l > θ``: f = p2, exact) or unstable. For an unstable neuron a line
``y = s m + c`` lies above f on ``[l, u]`` iff it lies above the four points

    (l, p1(l)), (θ, p1(θ)), (θ, p2(θ)), (u, p2(u))

(f is linear on ``[l, θ]`` and on ``(θ, u]``; the third point is the limit
from the right), and below f iff it lies below them. So ANY slope ``s`` gives
a sound line once its intercept is the max (upper) or min (lower) over the
four points: soundness never depends on the slope, only tightness does.
The default slope follows the longer hull segment (for H this is the paper's
area-minimising choice: sloped lower line iff ``u - θ >= θ - l``); for
α-CROWN a slope is ``lo + σ (hi - lo)`` with ``σ`` in [0, 1] between the two
hull-segment slopes. Segment lengths below ``tol = 1e-4 (1 + |θ|)`` are
replaced by ``tol`` and a chosen segment that short falls back to the slope
of p1 (flat for H): slopes like ``1/(θ - l)`` explode next to θ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

TOL = 1e-4


@dataclass
class Piecewise:
    """``f = p1`` on ``m <= θ`` and ``p2`` on ``m > θ``; every field broadcasts to ``[B, ...]``."""

    thr: Tensor
    s1: Tensor | float
    c1: Tensor | float
    s2: Tensor | float
    c2: Tensor | float

    def is_linear(self) -> bool:
        """True when ``p1 == p2`` is known statically (no reset at all)."""
        return self.s1 is self.s2 and self.c1 is self.c2


def spike_fn(thr: Tensor) -> Piecewise:
    """``H(m - θ)``."""
    return Piecewise(thr, 0.0, 0.0, 0.0, 1.0)


def reset_fn(reset: str, beta: Tensor, thr: Tensor) -> Piecewise:
    """The decay-and-reset term ``f(U_{t-1})`` with ``U_t = f(U_{t-1}) + I_t``."""
    if reset == "subtract":
        return Piecewise(thr, beta, 0.0, beta, -thr)
    if reset == "zero":
        return Piecewise(thr, beta, 0.0, 0.0, 0.0)
    return Piecewise(thr, beta, 0.0, beta, 0.0)


@dataclass
class Lines:
    """Lower and upper lines ``y = s m + c`` of f on ``[l, u]``, shapes broadcastable to ``[B, M, ...]``."""

    s_lo: Tensor
    c_lo: Tensor
    s_up: Tensor
    c_up: Tensor


class Relaxation:
    """Relaxation data of a :class:`Piecewise` f on the box ``[l, u]`` (``[B, ...]``)."""

    def __init__(self, f: Piecewise, lower: Tensor, upper: Tensor) -> None:
        self.f, self.l, self.u = f, lower, upper
        thr = f.thr
        self.off = upper <= thr  # stable below: f = p1
        self.on = lower > thr  # stable above: f = p2
        self.unstable = ~(self.off | self.on)
        tol = TOL * (1 + thr.abs())
        zero = torch.zeros_like(lower)
        self.left = (thr - lower).clamp(min=0)  # segment lengths, >= 0
        self.right = (upper - thr).clamp(min=0)
        self.left_g = torch.maximum(self.left, tol + zero)  # guarded against 0
        self.right_g = torch.maximum(self.right, tol + zero)
        self.tol = tol
        s1, c1, s2, c2 = f.s1, f.c1, f.s2, f.c2
        # the four points, relative to θ: (dx, y)
        self.y_l = s1 * lower + c1 + zero
        self.y_t1 = s1 * thr + c1 + zero
        self.y_t2 = s2 * thr + c2 + zero
        self.y_u = s2 * upper + c2 + zero
        self.dx_l = lower - thr
        self.dx_u = upper - thr

    # ----------------------------------------------------------- slope ranges
    def hull_slopes(self, upper: bool) -> tuple[Tensor, Tensor]:
        """Slopes of the left and right hull segments through the top (bottom) θ-point."""
        mid = torch.maximum(self.y_t1, self.y_t2) if upper else torch.minimum(self.y_t1, self.y_t2)
        return (mid - self.y_l) / self.left_g, (self.y_u - mid) / self.right_g

    def slope_range(self, upper: bool) -> tuple[Tensor, Tensor]:
        """``(lo, hi)``: the slopes worth searching (α-CROWN), ``[B, ...]``."""
        a, b = self.hull_slopes(upper)
        return torch.minimum(a, b), torch.maximum(a, b)

    def default_slope(self, upper: bool) -> Tensor:
        """Slope of the longer hull segment; p1's slope if even that is shorter than tol."""
        left, right = self.hull_slopes(upper)
        use_left = self.left >= self.right
        s = torch.where(use_left, left, right)
        short = torch.maximum(self.left, self.right) < self.tol
        return torch.where(short, self.f.s1 + torch.zeros_like(s), s)

    def default_sigma(self, upper: bool) -> Tensor:
        """``σ`` in [0, 1] reproducing :meth:`default_slope` inside :meth:`slope_range`."""
        lo, hi = self.slope_range(upper)
        s = self.default_slope(upper)
        width = hi - lo
        sigma = torch.where(width > 0, (s - lo) / torch.where(width > 0, width, 1), 0.5)
        return sigma.clamp(0, 1)

    # ------------------------------------------------------------------ lines
    def intercept(self, s: Tensor, upper: bool) -> Tensor:
        """Intercept making ``s m + c`` an upper (lower) line of the unstable f."""
        pts = (self.y_l - s * self.dx_l, self.y_t1, self.y_t2, self.y_u - s * self.dx_u)
        pick = torch.maximum if upper else torch.minimum
        rel = pick(pick(pts[0], pts[1]), pick(pts[2], pts[3]))
        return rel - s * self.f.thr

    def lines(self, s_lo: Tensor | None = None, s_up: Tensor | None = None) -> Lines:
        """Sound lines for every neuron; unstable ones use the given slopes (default if None).

        Slopes may carry an extra spec axis (``[B, M, ...]`` against bounds
        ``[B, ...]``): pass them with that axis and bounds are unsqueezed.
        """
        if s_lo is None:
            s_lo = self.default_slope(False)
        if s_up is None:
            s_up = self.default_slope(True)
        c_lo, c_up = self.intercept(s_lo, False), self.intercept(s_up, True)
        f = self.f
        zero = torch.zeros_like(c_lo)

        def fix(s: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
            s = torch.where(self.off, f.s1 + zero, torch.where(self.on, f.s2 + zero, s))
            c = torch.where(self.off, f.c1 + zero, torch.where(self.on, f.c2 + zero, c))
            return s, c

        return Lines(*fix(s_lo, c_lo), *fix(s_up, c_up))


def select(lines: Lines, lam: Tensor) -> tuple[Tensor, Tensor]:
    """Slope and intercept for a LOWER bound of ``lam · f``: lower line where ``lam >= 0``."""
    pos = lam >= 0
    return torch.where(pos, lines.s_lo, lines.s_up), torch.where(pos, lines.c_lo, lines.c_up)

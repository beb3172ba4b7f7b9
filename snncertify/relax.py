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


class Relaxation:
    """Relaxation data of a :class:`Piecewise` f on the box ``[l, u]`` (``[B, ...]``)."""

    def __init__(self, f: Piecewise, lower: Tensor, upper: Tensor) -> None:
        self.f, self.l, self.u = f, lower, upper
        thr = f.thr
        self.off = upper <= thr  # stable below: f = p1
        self.on = lower > thr  # stable above: f = p2
        tol = TOL * (1 + thr.abs())
        zero = torch.zeros_like(lower)
        self.left = (thr - lower).clamp(min=0)  # segment lengths, >= 0
        self.right = (upper - thr).clamp(min=0)
        self.left_g = torch.maximum(self.left, tol + zero)  # guarded against 0
        self.right_g = torch.maximum(self.right, tol + zero)
        self.tol = tol
        s1, c1, s2, c2 = f.s1, f.c1, f.s2, f.c2
        # the four points (l, y_l), (θ, y_t1), (θ, y_t2), (u, y_u)
        self.y_l = s1 * lower + c1 + zero
        self.y_t1 = s1 * thr + c1 + zero
        self.y_t2 = s2 * thr + c2 + zero
        self.y_u = s2 * upper + c2 + zero

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

    def sigma_of(self, s: Tensor, upper: bool) -> Tensor:
        """``σ`` in [0, 1] placing slope ``s`` inside :meth:`slope_range` (α-CROWN's start)."""
        lo, hi = self.slope_range(upper)
        width = hi - lo
        sigma = torch.where(width > 0, (s - lo) / torch.where(width > 0, width, 1), 0.5)
        return sigma.clamp(0, 1)

    # ------------------------------------------------------------------ lines
    def intercept(self, s: Tensor, upper: bool) -> Tensor:
        """Intercept making ``s m + c`` an upper (lower) line of the unstable f."""
        thr = self.f.thr
        pick = torch.maximum if upper else torch.minimum
        return pick(pick(self.y_l - s * self.l, self.y_t1 - s * thr),
                    pick(self.y_t2 - s * thr, self.y_u - s * self.u))

    def line(self, s: Tensor, upper: bool) -> tuple[Tensor, Tensor]:
        """``(slope, intercept)`` of a sound upper (lower) line for every neuron: f's own
        piece where it is stable, slope ``s`` with :meth:`intercept` where not."""
        c = self.intercept(s, upper)
        f, zero = self.f, torch.zeros_like(c)
        s = torch.where(self.off, f.s1 + zero, torch.where(self.on, f.s2 + zero, s))
        c = torch.where(self.off, f.c1 + zero, torch.where(self.on, f.c2 + zero, c))
        return s, c


# ---------------------------------------------------- joint relaxation (S-CROWN)
def joint_fn(reset: str, beta: Tensor, thr: Tensor, spike_coef: Tensor | None,
             next_coef: Tensor | None) -> Piecewise:
    """``F(m) = Λ H(m - θ) + λ' f(m)``: everything one membrane ``m = U_t`` feeds.

    ``Λ`` (``spike_coef``) is the coefficient on the spike ``S_t``, ``λ'``
    (``next_coef``) the one on ``U_{t+1} = f(U_t) + I_{t+1}``, ``f`` the
    decay-and-reset term (:func:`reset_fn`); either may be None (zero).
    Shapes ``[B, M, ...]``. Relaxing F as ONE function keeps what relaxing
    its two terms apart loses: under zero reset ``f(m) = 0`` exactly where
    the spike is 1 (the official S-CROWN gets this by folding the reset
    into the previous spike's coefficient).
    """
    f = reset_fn(reset, beta, thr)
    lam_n = next_coef if next_coef is not None else 0.0
    lam_s = spike_coef if spike_coef is not None else 0.0
    s1 = lam_n * f.s1
    s2 = s1 if f.s2 is f.s1 else lam_n * f.s2  # `is`: F's pieces share their slope
    return Piecewise(thr, s1, lam_n * f.c1, s2, lam_n * f.c2 + lam_s)


def _first_slope(f: Piecewise, lower: Tensor, left: Tensor, right: Tensor,
                 left_g: Tensor, right_g: Tensor) -> Tensor:
    """The S-CROWN slope of a lower line of F (Liang et al., 2022, generalised):
    p1 is replaced by its minimum on ``[l, θ]`` when p1 and p2 differ in slope
    (zero reset), else kept as the common linear part; the remaining jump
    ``J`` at θ is a step ``J H(m - θ)``, relaxed by the area rule: the sloped
    line ``J (m - θ)/(u - θ)`` for ``J >= 0`` and ``u - θ >= θ - l``, the
    line ``J (m - l)/(θ - l)`` for ``J < 0`` and ``u - θ < θ - l``, else flat."""
    thr = f.thr
    if f.s1 is f.s2:
        base = f.s1
        jump = f.c2 - f.c1
    else:  # p1 = s1 m + c1 on [l, θ]: its minimum is at l or θ
        low = torch.minimum(f.s1 * lower + f.c1, f.s1 * thr + f.c1)
        base = 0.0
        jump = f.s2 * thr + f.c2 - low  # p2 at θ+ above that constant
    right_long = right >= left  # [.., 1, ..]: per neuron, before the spec rows broadcast
    sloped_up = right_long / right_g
    sloped_dn = (~right_long) / left_g
    d = torch.where(jump >= 0, sloped_up, sloped_dn)
    return base + jump * d


def joint_lower(f: Piecewise, lower: Tensor, upper: Tensor, rule: str = "scrown",
                sigma: Tensor | None = None, split: tuple | None = None,
                unstable_only: bool = False) -> tuple[Tensor, Tensor]:
    """A lower line ``s m + c`` of the joint F on ``[lower, upper]`` (``[B, 1, ...]``).

    Stable neurons get F's own piece (exact). An unstable one gets slope
    ``rule``: ``"scrown"`` (:func:`_first_slope`), ``"split"`` (the sum of the
    separate lines of the spike and the reset term, ``split = (Λ, λ', spike
    relaxation, reset relaxation)``), or with ``sigma`` (α-CROWN, in [0, 1])
    ``lo + σ (hi - lo)`` in F's hull slope range; the intercept is the
    tightest for that slope (any slope is sound, module docstring).
    ``unstable_only``: every neuron given is unstable (skips the stable cases).
    Returns ``(s, c)``, ``[B, M, ...]``.
    """
    rel = Relaxation(f, lower, upper)
    if sigma is not None:
        lo, hi = rel.slope_range(False)
        s = lo + sigma * (hi - lo)
    elif rule == "split":
        spike_coef, next_coef, spike_rel, reset_rel = split
        s = 0.0
        if spike_coef is not None:
            s = s + spike_coef.clamp(min=0) * spike_rel[0] + spike_coef.clamp(max=0) * spike_rel[1]
        if next_coef is not None:
            s = s + next_coef.clamp(min=0) * reset_rel[0] + next_coef.clamp(max=0) * reset_rel[1]
        s = s + torch.zeros_like(rel.y_t2)
    else:
        s = _first_slope(f, lower, rel.left, rel.right, rel.left_g, rel.right_g)
    if unstable_only:
        return s, rel.intercept(s, False)
    return rel.line(s, False)


def joint_sigma(f: Piecewise, lower: Tensor, upper: Tensor, s: Tensor) -> Tensor:
    """``σ`` in [0, 1] placing slope ``s`` in F's hull slope range (α-CROWN's start)."""
    return Relaxation(f, lower, upper).sigma_of(s, False)

"""The neuron ops' shared base: snnTorch 1.0's ``snn.Leaky`` dynamics and every bound rule.

Per step t (elementwise, ``U_0 = 0``), exactly as ``snn.Leaky.forward`` computes:

    R_t = H(U_{t-1} - θ)                       (reset from the PREVIOUS membrane)
    subtract: U_t = (β U_{t-1} + I_t) - R_t θ
    zero:     U_t = β ((1 - R_t) U_{t-1}) + I_t = β g(U_{t-1}) + I_t,  g(u) = u 1[u <= θ]
    none:     U_t = β U_{t-1} + I_t
    S_t = H(U_t - θ)                           (strict: U_t == θ does not spike)

with β clamped to [0, 1]. The float operations are written in the same order as
snnTorch so that the forward (and the bounds at eps = 0) are bit-identical.

:class:`NeuronOp` implements them (forward, S-IBP, the CROWN backward rule, the
MILP encoding); ``leaky.py`` registers it for ``snn.Leaky`` and ``synaptic.py``
derives ``snn.Synaptic`` from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from ..gradmode import GradMode, OwnSurrogate
from ..milp import Band, Expr, Model, Spikes, gamma, to_np
from ..relax import Relaxation, joint_fn, joint_lower, joint_sigma, reset_fn, spike_fn
from . import neuron_interval
from .base import BoundOp, dot_neurons, rounding_pad

_OWN = OwnSurrogate()

RESET_MODES = ("subtract", "zero", "none")


def unsupported_neuron_options(module) -> list[str]:
    """Options of ``snn.Leaky`` (or ``snn.Synaptic``) this toolkit does not model (empty if none)."""
    bad = []
    if getattr(module, "inhibition", False):
        bad.append("inhibition=True")
    if getattr(module, "state_quant", False):
        bad.append("state_quant")
    if not getattr(module, "reset_delay", True):
        bad.append("reset_delay=False")
    gsf = getattr(module, "graded_spikes_factor", None)
    if gsf is not None and not bool(torch.all(torch.as_tensor(gsf) == 1)):
        bad.append("graded_spikes_factor != 1")
    if getattr(module, "reset_mechanism", "subtract") not in RESET_MODES:
        bad.append(f"reset_mechanism={module.reset_mechanism!r}")
    return bad


def check_heaviside(module: nn.Module, path: str) -> None:
    """TypeError unless ``module.spike_grad`` is the strict Heaviside in the forward."""
    probe = torch.tensor([-1.0, -1e-30, 0.0, 1e-30, 1.0])
    with torch.no_grad():
        fired = module.spike_grad(probe)
    if not torch.equal(fired.float(), (probe > 0).float()):
        raise TypeError(
            f"snn.{type(module).__name__} at {path!r}: its spike_grad is not a strict Heaviside in "
            "the forward pass (spike iff U > threshold), which the bounds assume"
        )


# ------------------------------------------------------- linear (CROWN) rule
@dataclass(frozen=True)
class Coefficients:
    """The coefficients a back-substitution has on a neuron layer's outputs:
    ``spike`` on the spikes ``S_t``, ``mem`` on the membranes ``U_t``, each
    ``[steps, B, M, ...]`` or None (zero)."""

    spike: Tensor | None
    mem: Tensor | None

    def any(self) -> Tensor:
        """One of the two that is not None (for shapes, dtype and device)."""
        return self.spike if self.spike is not None else self.mem


@dataclass(frozen=True)
class StepBounds:
    """What the backward rule of one neuron layer needs besides its coefficients.

    Attributes:
        mem_l, mem_u: sound membrane bounds, T tensors ``[B, ...]``.
        cur_l, cur_u: bounds of the input currents, T tensors ``[B, ...]`` (used by
            neurons with more state, e.g. Synaptic's zero reset), or None.
        slack: the rounding slack of the membranes (0 at a point).
        rule: slope rule of the joint line, ``"scrown"`` or ``"split"`` (:mod:`~snncertify.relax`).
        slopes: α-CROWN's optimised slope positions σ ``[T, B, M, ...]`` in [0, 1], or None.
        record: whether to return the σ of the slopes used (α-CROWN's start).
    """

    mem_l: list[Tensor]
    mem_u: list[Tensor]
    cur_l: list[Tensor] | None = None
    cur_u: list[Tensor] | None = None
    slack: float = 0.0
    rule: str = "scrown"
    slopes: Tensor | None = None
    record: bool = False


@dataclass(frozen=True)
class Offset:
    """The constant ``const`` ``[B, M]`` of a linear bound and the magnitude ``mag`` of
    the terms summed into it (for the rounding allowance)."""

    const: Tensor
    mag: Tensor

    @staticmethod
    def zero(like: Tensor) -> Offset:
        """Zero for coefficients ``like`` ``[steps, B, M, ...]``."""
        const = like.new_zeros(like.shape[1:3])
        return Offset(const, torch.zeros_like(const))

    def plus_terms(self, terms: Tensor) -> Offset:
        """Plus the sum over the neuron axes of ``terms`` ``[B, M, ...]``."""
        return Offset(self.const + dot_neurons(terms, 1), self.mag + dot_neurons(terms.abs(), 1))

    def plus(self, const: Tensor, mag: Tensor) -> Offset:
        return Offset(self.const + const, self.mag + mag)


@dataclass(frozen=True)
class Backward:
    """The result of a neuron layer's backward rule.

    Attributes:
        lam: coefficients on the input currents, ``[steps, B, M, ...]``.
        const, mag: the constant ``[B, M]`` and the magnitude ``[B, M]`` of its terms.
        slopes: per step the σ of the slopes used (``StepBounds.record``), else None.
    """

    lam: Tensor
    const: Tensor
    mag: Tensor
    slopes: list[Tensor | None] | None = None


# -------------------------------------------------------------- MILP blocks
@dataclass(frozen=True)
class MilpArrays:
    """One sample's per-neuron parameters ``beta, theta`` ``[n]`` and IBP bounds
    ``mem_l, mem_u, spk_l, spk_u`` ``[T, n]`` of a neuron layer, in float64."""

    beta: np.ndarray
    theta: np.ndarray
    mem_l: np.ndarray
    mem_u: np.ndarray
    spk_l: np.ndarray
    spk_u: np.ndarray


@dataclass(frozen=True)
class MilpStep:
    """A neuron layer's encoding at one step: the membrane ``mem`` (an expression on
    its variables ``band``) and the spikes."""

    mem: Expr
    band: Band
    spikes: Spikes


class NeuronOp(BoundOp):
    """A spiking neuron layer over a whole sequence, ``snn.Leaky``'s dynamics.

    Inputs are currents ``[T, B, ...]``; outputs are spikes ``[T, B, ...]``.
    The neuron's own ``spike_grad`` is used for every Heaviside, so forward
    and bounds carry the module's surrogate gradient. Subclasses with more
    state (``SynapticOp``) override the steps that differ.
    """

    stateful = True

    @classmethod
    def from_module(cls, module: nn.Module, path: str) -> NeuronOp:
        bad = unsupported_neuron_options(module)
        if bad:
            raise TypeError(f"snn.{type(module).__name__} at {path!r} uses unsupported "
                            f"option(s): {', '.join(bad)}")
        check_heaviside(module, path)
        return cls(module, path)

    @property
    def reset(self) -> str:
        return self.module.reset_mechanism

    @property
    def base_membrane_rule(self) -> bool:
        """Whether :meth:`membrane_interval` is this base class's rule (a subclass that
        overrides it for some reset says False there)."""
        return True

    def beta(self) -> Tensor:
        return self.module.beta.clamp(0, 1)

    def threshold(self) -> Tensor:
        return self.module.threshold

    def spike(self, mem: Tensor) -> Tensor:
        """``H(mem - θ)`` with the module's surrogate gradient."""
        return self.module.spike_grad(mem - self.module.threshold).to(mem.dtype)

    def forward_seq(
        self, cur: list[Tensor], grad: GradMode | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Exact dynamics. ``cur``: T currents ``[B, ...]`` -> (T spikes ``[B, ...]``,
        T membranes ``[B, ...]``).

        ``grad``: the gradient mode of this call (:mod:`snncertify.gradmode`;
        None: the module's own surrogate). Nothing is stored on the op.
        """
        mode = grad or _OWN
        beta, thr = self.beta(), self.threshold()
        mem = torch.zeros_like(cur[0])
        spikes, mems = [], []
        spk = mode.spike(self, mem - thr)
        for t in range(len(cur)):
            reset = mode.reset(self, spk)
            mem = self.membrane(mem, cur[t], reset, beta, thr)
            spk = mode.spike(self, mem - thr)
            spikes.append(spk)
            mems.append(mem)
        return mode.finish(self, cur, spikes), mems

    @torch.no_grad()
    def forward_values(self, cur: list[Tensor], keep_mem: bool = True
                       ) -> tuple[list[Tensor], list[Tensor] | None]:
        """:meth:`forward_seq`'s values without autograd and with fewer tensor passes (in
        place): T spikes ``[B, ...]`` and, if ``keep_mem``, T membranes (else None).

        The same float operations in the same order (:meth:`membrane`), on a strict
        Heaviside (``check_heaviside``), so the values are equal; only a zero membrane's
        sign may differ (``0 * u`` is ``-0`` for ``u < 0``), which no spike or score sees.
        """
        beta, thr = self.beta(), self.threshold()
        mem = torch.zeros_like(cur[0])
        fired = (mem > thr).expand_as(mem)  # R_1 = H(U_0 - θ)
        spk = fired.to(mem.dtype)
        spikes, mems = [], [] if keep_mem else None
        for c in cur:
            if keep_mem:
                mem = mem.clone()
            if self.reset == "zero":  # β ((1 - R) U) + I
                mem.masked_fill_(fired, 0.0).mul_(beta).add_(c)
            elif self.reset == "subtract":  # (β U + I) - R θ
                mem.mul_(beta).add_(c).sub_(spk * thr)
            else:
                mem.mul_(beta).add_(c)
            fired = mem > thr
            spk = fired.to(mem.dtype)
            spikes.append(spk)
            if keep_mem:
                mems.append(mem)
        return spikes, mems

    def membrane(self, mem: Tensor, cur: Tensor, reset: Tensor, beta: Tensor, thr: Tensor
                 ) -> Tensor:
        """``U_t`` from ``U_{t-1}`` (``mem``), ``I_t`` and ``R_t``: snnTorch's float
        operations in its order (module docstring), so the forward is bit-identical."""
        if self.reset == "subtract":
            return beta * mem + cur - reset * thr
        if self.reset == "zero":
            return beta * ((1 - reset) * mem) + cur
        return beta * mem + cur

    def membrane_interval(self, ml: Tensor, mu: Tensor, rl: Tensor, ru: Tensor, il: Tensor,
                          iu: Tensor, beta: Tensor, thr: Tensor) -> tuple[Tensor, Tensor]:
        """S-IBP of one step: bounds of ``U_t`` from those of ``U_{t-1}`` (``ml, mu``),
        ``R_t`` (``rl, ru``) and ``I_t`` (``il, iu``), before any slack. The decay and
        reset term is bounded as ONE function of ``U_{t-1}``, which is tighter than
        bounding ``β U`` and ``θ R`` separately."""
        return neuron_interval.membrane_step(self.reset, ml, mu, rl, ru, il, iu, beta, thr)[:2]

    def interval_seq(
        self, cur_l: list[Tensor], cur_u: list[Tensor], slack: float = 0.0,
        mem_bounds: tuple[list[Tensor], list[Tensor]] | None = None,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """S-IBP through time.

        Args:
            cur_l, cur_u: bounds of the input current, T tensors ``[B, ...]``.
            slack: relative widening of every membrane bound (covers float
                rounding differences between this computation and the
                forward pass of a perturbed input); 0 gives the exact
                point computation.
            mem_bounds: optional other SOUND membrane bounds ``(lower, upper)``,
                T tensors ``[B, ...]`` each (e.g. refined by CROWN): every
                step's membrane interval is intersected with them before it
                is thresholded and carried on (the intersection of two sound
                intervals is sound). None (the default) changes nothing.

        Returns:
            ``(spk_l, spk_u, mem_l, mem_u)``: T tensors ``[B, ...]`` each (not
            stacked: most callers never read the membranes). Each step is
            :meth:`membrane_interval`; without ``mem_bounds`` and for the base rule,
            computed by :mod:`~snncertify.ops.neuron_interval` (the same values, a
            hand-written backward).
        """
        beta, thr = self.beta(), self.threshold()
        if mem_bounds is None and self.base_membrane_rule and not (
                torch.is_grad_enabled() and (beta.requires_grad or thr.requires_grad)):
            return neuron_interval.interval_seq(self.reset, beta, thr, self.module.spike_grad,
                                                cur_l, cur_u, slack)
        ml = mu = torch.zeros_like(cur_l[0])
        rl = ru = self.spike(ml).detach()  # R_1 = H(U_0 - θ), U_0 = 0
        out = ([], [], [], [])
        for t in range(len(cur_l)):
            lo, hi = self.membrane_interval(ml, mu, rl, ru, cur_l[t], cur_u[t], beta, thr)
            lo, hi, _ = neuron_interval.pad_step(lo, hi, slack)
            if mem_bounds is not None:
                lo, hi = torch.maximum(lo, mem_bounds[0][t]), torch.minimum(hi, mem_bounds[1][t])
            ml, mu = lo, hi
            sl, su = self.spike(ml), self.spike(mu)
            rl, ru = sl.detach(), su.detach()  # next step's reset is this step's spike
            for seq, v in zip(out, (sl, su, ml, mu), strict=True):
                seq.append(v)
        return out

    def linear_backward(self, lam: Coefficients, steps: int, ctx: StepBounds) -> Backward:
        """CROWN's rule: back through this layer over steps ``0 .. steps-1``.

        At each step (last to first) everything the membrane ``U_t`` feeds, its
        spike and the next membrane, ``F(U_t) = Λ_t H(U_t - θ) + λ_{t+1} f(U_t)``,
        is replaced by ONE lower line (:func:`~snncertify.relax.joint_lower`, slope
        ``ctx.rule`` or α-CROWN's ``ctx.slopes``); then ``U_t = f(U_{t-1}) + I_t + e_t``
        with a rounding term ``|e_t| <= pad_t``.

        ``lam``: coefficients on the spikes and membranes, ``[steps, B, M, ...]``.
        Returns the coefficients on the input currents ``[steps, B, M, ...]``, the
        constant and magnitude ``[B, M]`` and (``ctx.record``) the σ used.
        """
        off = Offset.zero(lam.any())
        nxt = None  # coefficients on U_{t+1}
        out: list[Tensor | None] = [None] * steps
        used: list[Tensor | None] = [None] * steps
        for t in reversed(range(steps)):
            nxt, off, used[t] = self.membrane_line(self.reset, t, lam, nxt, ctx, off)
            out[t] = nxt
        f0 = _reset_at_zero(self.reset, self.beta(), self.threshold(), nxt)  # U_0 = 0: f(0), as the forward does
        if f0 is not None:
            off = off.plus_terms(nxt * f0)
        return Backward(torch.stack(out), off.const, off.mag, used if ctx.record else None)

    def membrane_line(self, reset: str, t: int, lam: Coefficients, nxt: Tensor | None,
                      ctx: StepBounds, off: Offset) -> tuple[Tensor, Offset, Tensor | None]:
        """One step of :meth:`linear_backward`: the coefficients ``[B, M, ...]`` on ``U_t``
        from the joint line of ``F(U_t) = Λ_t H(U_t - θ) + λ' f(U_t)`` (``f`` by ``reset``,
        ``λ' = nxt``) plus ``lam.mem[t]``; ``off`` plus the line's intercepts and the
        rounding term of ``U_t``; the σ of the slope used (``ctx.record``) or None."""
        beta, thr = self.beta(), self.threshold()
        ml, mu = ctx.mem_l[t], ctx.mem_u[t]
        spk = lam.spike[t] if lam.spike is not None else None
        used = None
        if spk is None and nxt is None:
            coef = torch.zeros_like(lam.any()[t])
        elif ctx.slopes is None and not ctx.record:
            coef, c = _joint_line(reset, beta, thr, spk, nxt, ml, mu, ctx.rule)
            off = off.plus_terms(c)
        else:
            f = joint_fn(reset, beta, thr, spk, nxt)
            lo, hi = ml.unsqueeze(1), mu.unsqueeze(1)
            coef, c = joint_lower(f, lo, hi, ctx.rule, None if ctx.slopes is None else ctx.slopes[t])
            if ctx.record:
                used = joint_sigma(f, lo, hi, coef)
            off = off.plus_terms(c)
        if lam.mem is not None:
            coef = coef + lam.mem[t]
        if ctx.slack:
            pad = rounding_pad(ml, mu, ctx.slack)
            off = Offset(off.const - dot_neurons(coef.abs(), pad.unsqueeze(1)), off.mag)  # e_t
        return coef, off, used

    # ------------------------------------------------------------------- MILP
    def milp_arrays(self, rec, b: int, T: int, shape: tuple[int, ...]) -> MilpArrays:
        """Sample ``b``'s parameters and IBP bounds (``rec``: the layer's record)."""
        n = math.prod(shape)
        with torch.no_grad():
            beta = to_np(torch.broadcast_to(self.beta(), shape)).ravel()
            theta = to_np(torch.broadcast_to(self.threshold(), shape)).ravel()
        return MilpArrays(beta, theta, *(to_np(v[:, b]).reshape(T, n)
                                         for v in (rec.mem_l, rec.mem_u, rec.spk_l, rec.spk_u)))

    def encode_milp_seq(self, model: Model, cur: list[Expr], rec, b: int, T: int,
                        cmag: np.ndarray | None = None) -> tuple[list[Expr], list[Expr]]:
        """The exact verifier's encoding of this layer over all steps, for sample ``b``
        (``rec``: its IBP record); returns (spike exprs, membrane exprs).

        The threshold band ``τ`` of each (neuron, step) bounds the float32 rounding
        of the membrane: ``τ_t = β τ_{t-1} + err(I_t) + γ_4 (β |U_{t-1}| + |I_t| + |θ|)``
        (magnitudes from the IBP records), so every float32 trajectory of the real
        network is feasible in the OUTER model. ``cmag`` ``[T, n]``: bounds of ``|I_t|``
        (default: from the record's input currents).
        """
        shape = cur[0].shape
        arr = self.milp_arrays(rec, b, T, shape)
        n = arr.theta.size
        if cmag is None:
            cmag = np.maximum(np.abs(to_np(rec.cur_l[:, b])),
                              np.abs(to_np(rec.cur_u[:, b]))).reshape(T, n)
        prev: MilpStep | None = None
        tau, prev_mag = np.zeros(n), np.zeros(n)
        spikes, mems = [], []
        for t in range(T):
            tau = arr.beta * tau + cur[t].error() + gamma(4) * (
                arr.beta * prev_mag + cmag[t] + np.abs(arr.theta))
            prev_mag = np.maximum(np.abs(arr.mem_l[t]), np.abs(arr.mem_u[t])) + tau
            m_lo, m_hi = arr.mem_l[t] - tau, arr.mem_u[t] + tau
            band = Band(model.add_vars(m_lo, m_hi, integer=False), m_lo, m_hi, tau)
            EA, Ec = self._milp_rhs(model, cur[t], prev, arr)
            ue = model.var_expr(band.cols, shape)
            ue.err = tau.copy()
            model.add_rows((ue.A - model.pad(EA)).tocsr(), Ec, Ec)  # U_t - E = E.c
            prev = MilpStep(ue, band, model.add_spikes(band, arr.theta, arr.spk_l[t],
                                                       arr.spk_u[t], shape))
            spikes.append(prev.spikes.expr)
            mems.append(ue)
        return spikes, mems

    def _milp_rhs(self, model: Model, cur: Expr, prev: MilpStep | None, arr: MilpArrays
                  ) -> tuple[sp.csr_matrix, np.ndarray]:
        """``(A, c)`` of ``E = β U_{t-1} (- reset term) + I_t`` (``cur``: ``I_t``; ``prev``:
        step t-1, None at t = 0); the zero reset adds ``Q = R_t U_{t-1}``'s variables."""
        EA, Ec = model.pad(cur.A), cur.c.copy()
        if prev is None:
            return EA, Ec
        beta, u_prev = arr.beta, prev.mem
        if self.reset != "zero":
            EA = EA + sp.diags(beta) @ model.pad(u_prev.A)
            Ec = Ec + beta * u_prev.c
            if self.reset == "subtract":
                EA = EA - sp.diags(arr.theta) @ model.pad(prev.spikes.expr.A)
                Ec = Ec - arr.theta * prev.spikes.expr.c
            return EA, Ec
        # Q = R U_{t-1}, R = S_{t-1}: exact big-M product where R is free
        r = prev.spikes
        fixed_on = (~r.free) & (r.value > 0.5)
        free = np.flatnonzero(r.free)
        L, H = prev.band.lo[free], prev.band.hi[free]
        qc = model.add_vars(np.minimum(L, 0), np.maximum(H, 0), integer=False)
        model.add_product(qc, r.cols[free], prev.band.cols[free], L, H)
        keep = np.where(fixed_on, 0.0, 1.0)  # β (U_{t-1} - Q)
        Uterm = sp.diags(beta * keep) @ model.pad(u_prev.A)
        Qm = sp.csr_matrix((-beta[free], (free, qc)), shape=(arr.theta.size, model.n))
        return model.pad(EA.tocsr()) + Uterm + Qm, Ec + beta * keep * u_prev.c


def _joint_line(reset: str, beta: Tensor, thr: Tensor, spk: Tensor | None, nxt: Tensor | None,
                lower: Tensor, upper: Tensor, rule: str) -> tuple[Tensor, Tensor]:
    """:func:`~snncertify.relax.joint_lower` computed where it is needed: stable neurons
    take F's own piece (a few passes over ``[B, M, ...]``), and only the unstable
    ones (gathered) get the four-point line. Bounds ``[B, ...]``, coefficients
    ``[B, M, ...]``; returns ``(slope, intercept)`` ``[B, M, ...]``."""
    f = reset_fn(reset, beta, thr)
    shape = lower.shape
    thr_b = torch.broadcast_to(thr, shape)
    on = lower > thr_b
    unstable = (lower <= thr_b) & (upper > thr_b)
    zero = torch.zeros((), dtype=lower.dtype, device=lower.device)
    k_s = torch.where(on, f.s2 + zero, f.s1 + zero).unsqueeze(1)
    k_c = torch.where(on, f.c2 + zero, f.c1 + zero).unsqueeze(1)
    ref = spk if spk is not None else nxt
    s = nxt * k_s if nxt is not None else torch.zeros_like(ref)
    c = nxt * k_c if nxt is not None else torch.zeros_like(ref)
    if spk is not None:
        c = c + spk * on.unsqueeze(1)
    if not bool(unstable.any()):
        return s, c
    B, M = ref.shape[:2]
    b_idx, n_idx = unstable.reshape(B, -1).nonzero(as_tuple=True)

    def pick(v: Tensor | None) -> Tensor | None:  # [B, M, ...] -> [U, M]
        return None if v is None else v.reshape(B, M, -1)[b_idx, :, n_idx]

    def pick_n(v: Tensor) -> Tensor:  # per-neuron [B, ...] (broadcast) -> [U, 1]
        return torch.broadcast_to(v, shape).reshape(B, -1)[b_idx, n_idx].unsqueeze(1)

    g_thr, g_beta = pick_n(thr_b), pick_n(beta + zero)
    gl, gu = pick_n(lower), pick_n(upper)
    g_spk, g_nxt = pick(spk), pick(nxt)
    split = None
    if rule == "split":
        split = (g_spk, g_nxt, _default_slopes(spike_fn(g_thr), gl, gu),
                 _default_slopes(reset_fn(reset, g_beta, g_thr), gl, gu))
    su, cu = joint_lower(joint_fn(reset, g_beta, g_thr, g_spk, g_nxt), gl, gu, rule, None, split,
                         unstable_only=True)
    s.view(B, M, -1)[b_idx, :, n_idx] = su
    c.view(B, M, -1)[b_idx, :, n_idx] = cu
    return s, c


def _default_slopes(f, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """The default (lower, upper) line slopes of a one-variable piece (``relax``)."""
    rel = Relaxation(f, lower, upper)
    return rel.default_slope(False), rel.default_slope(True)


def _reset_at_zero(reset: str, beta: Tensor, thr: Tensor, like: Tensor) -> Tensor | None:
    """``f(U_0)`` for ``U_0 = 0``: only subtract reset with θ < 0 gives a non-zero (-θ)."""
    if reset != "subtract":
        return None
    return torch.where(thr < 0, -thr, torch.zeros_like(thr)) + torch.zeros_like(like[0, 0])

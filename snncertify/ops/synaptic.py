"""``snn.Synaptic``: a Leaky neuron behind a first-order synaptic current.

Per step t (elementwise, ``syn_0 = U_0 = 0``), exactly as ``snn.Synaptic.forward``
computes (snnTorch 1.0, float operations in the same order):

    R_t   = H(U_{t-1} - θ)                      (reset from the PREVIOUS membrane)
    syn_t = α syn_{t-1} + I_t
    m_t   = β U_{t-1} + syn_t                   (the membrane before the reset)
    subtract: U_t = m_t - R_t θ
    zero:     U_t = m_t - R_t m_t               (the WHOLE membrane, input included;
                                                 unlike Leaky, whose zero reset keeps I_t)
    none:     U_t = m_t
    S_t = H(U_t - θ)

with α, β clamped to [0, 1]. ``syn`` is a linear filter of the input, so every
rule is the Leaky rule on the filtered current ``syn_t``, except the zero reset,
where ``U_t`` is ``m_t`` or 0: its interval is ``[min(0, m_l), max(0, m_u')]``
(``m_u'`` with ``U_{t-1} <= θ`` when the reset is uncertain), its linear rule
the chords of ``min(m, 0)`` / ``max(m, 0)`` over the bounds of ``m`` (both
hold whichever of the two values ``U_t`` takes), and its MILP encoding the
exact big-M product ``Q = R_t m_t``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import snntorch as snn
import torch
from torch import Tensor

from ..gradmode import GradMode
from ..milp import Band, Expr, Model, Spikes, gamma, to_np
from .base import dot_neurons
from .neuron import Backward, Coefficients, NeuronOp, Offset, StepBounds
from .registry import register_op


@register_op(snn.Synaptic, exact=True)
class SynapticOp(NeuronOp):
    """``snn.Synaptic`` over a whole sequence: currents ``[T, B, ...]`` -> spikes ``[T, B, ...]``.

    Options are checked as for ``snn.Leaky`` (:class:`~snncertify.ops.neuron.NeuronOp`);
    ``alpha`` and ``beta`` may be scalars or per-neuron tensors.
    """

    def alpha(self) -> Tensor:
        return self.module.alpha.clamp(0, 1)

    def synaptic(self, cur: list[Tensor]) -> list[Tensor]:
        """``syn_t = α syn_{t-1} + I_t`` for T currents ``[B, ...]``."""
        a = self.alpha()
        syn, out = torch.zeros_like(cur[0]), []
        for c in cur:
            syn = a * syn + c
            out.append(syn)
        return out

    def synaptic_bounds(self, cur_l: list[Tensor], cur_u: list[Tensor]):
        """Interval of ``syn_t`` (exact per step: α >= 0), T tensors ``[B, ...]`` each."""
        return self.synaptic(list(cur_l)), self.synaptic(list(cur_u))

    # ------------------------------------------------- forward and intervals
    def forward_seq(self, cur: list[Tensor], grad: GradMode | None = None):
        return super().forward_seq(self.synaptic(cur), grad)

    @torch.no_grad()
    def forward_values(self, cur: list[Tensor], keep_mem: bool = True):
        """:meth:`forward_seq`'s values (no faster path: its own membrane rule)."""
        spikes, mems = self.forward_seq(cur)
        return spikes, mems if keep_mem else None

    def membrane(self, mem: Tensor, cur: Tensor, reset: Tensor, beta: Tensor, thr: Tensor
                 ) -> Tensor:
        """``cur`` is ``syn_t`` here; the zero reset clears ``m_t = β U_{t-1} + syn_t``."""
        if self.reset != "zero":
            return super().membrane(mem, cur, reset, beta, thr)
        m = beta * mem + cur
        return m - m * reset

    def interval_seq(self, cur_l, cur_u, slack: float = 0.0, mem_bounds=None):
        syn_l, syn_u = self.synaptic_bounds(cur_l, cur_u)
        return super().interval_seq(syn_l, syn_u, slack, mem_bounds)

    @property
    def base_membrane_rule(self) -> bool:
        return self.reset != "zero"

    def membrane_interval(self, ml, mu, rl, ru, il, iu, beta, thr):
        """Zero reset: ``U_t`` is 0 (reset certain), ``m_t`` (no reset possible), else
        either, with ``U_{t-1} <= θ`` when it is ``m_t`` (module docstring)."""
        if self.reset != "zero":
            return super().membrane_interval(ml, mu, rl, ru, il, iu, beta, thr)
        base_l = beta * ml + il
        base_u = beta * mu + iu
        below_u = beta * torch.minimum(mu, thr + torch.zeros_like(mu)) + iu
        zero = torch.zeros_like(base_l)
        lo = torch.where(rl > 0, zero, torch.where(ru > 0, torch.minimum(base_l, zero), base_l))
        hi = torch.where(rl > 0, zero, torch.where(ru > 0, torch.maximum(below_u, zero), base_u))
        return lo, hi

    # ------------------------------------------------------------ linear rule
    def linear_backward(self, lam: Coefficients, steps: int, ctx: StepBounds) -> Backward:
        """CROWN's rule (see :meth:`NeuronOp.linear_backward`): the membrane rule gives
        coefficients on ``syn_t``, which the filter turns into coefficients on ``I_t``
        (``g_t = c_t + α g_{t+1}``). The zero reset needs ``ctx.cur_l, ctx.cur_u``."""
        if self.reset != "zero":
            res = super().linear_backward(lam, steps, ctx)
        else:
            res = self._zero_backward(lam, steps, ctx)
        a = self.alpha()
        out, g = [None] * steps, None
        for t in reversed(range(steps)):
            g = res.lam[t] if g is None else res.lam[t] + a * g
            out[t] = g
        return Backward(torch.stack(out), res.const, res.mag, res.slopes)

    def _zero_backward(self, lam: Coefficients, steps: int, ctx: StepBounds) -> Backward:
        """Coefficients ``[steps, B, M, ...]`` on ``syn_t`` under the zero reset (module docstring)."""
        beta, thr = self.beta(), self.threshold()
        ml, mu = ctx.mem_l, ctx.mem_u
        syn_l, syn_u = self.synaptic_bounds(list(ctx.cur_l[:steps]), list(ctx.cur_u[:steps]))
        off = Offset.zero(lam.any())
        nxt = None  # coefficients on m_{t+1} (times β: on U_t)
        out: list[Tensor | None] = [None] * steps
        used: list[Tensor | None] = [None] * steps
        for t in reversed(range(steps)):
            coef, off, used[t] = self.membrane_line("none", t, lam, nxt, ctx, off)
            # U_t is m_t or 0, m_t = β U_{t-1} + syn_t: a line in m_t
            prev_l = ml[t - 1] if t else torch.zeros_like(ml[0])
            prev_u = mu[t - 1] if t else torch.zeros_like(mu[0])
            nxt, c, m = _zero_reset_line(coef, beta, thr, prev_l, prev_u, syn_l[t], syn_u[t])
            off = off.plus(c, m)
            out[t] = nxt
        return Backward(torch.stack(out), off.const, off.mag, used if ctx.record else None)

    # ------------------------------------------------------------------- MILP
    def encode_milp_seq(self, model: Model, cur: list[Expr], rec, b: int, T: int,
                        cmag: np.ndarray | None = None) -> tuple[list[Expr], list[Expr]]:
        """The exact verifier's encoding: ``syn_t`` as expressions (rounding tracked),
        then :meth:`NeuronOp.encode_milp_seq` on them, or for the zero reset ``U_t = m_t - Q_t``
        with ``Q_t = R_t m_t`` as an exact big-M product."""
        syn, smag = self._milp_synaptic(model, cur, rec, b, T)
        if self.reset != "zero":
            return super().encode_milp_seq(model, syn, rec, b, T, cmag=smag)
        return self._encode_zero(model, syn, rec, b, T, smag)

    def _milp_synaptic(self, model: Model, cur: list[Expr], rec, b: int, T: int
                       ) -> tuple[list[Expr], np.ndarray]:
        """``syn_t = α syn_{t-1} + I_t`` as T expressions (``cur``: the ``I_t``) with their
        float32 rounding, and bounds ``[T, n]`` of ``|syn_t|`` from ``rec``'s currents."""
        shape = cur[0].shape
        n = math.prod(shape)
        with torch.no_grad():
            alpha = to_np(torch.broadcast_to(self.alpha(), shape)).ravel()
            cl = [to_np(v) for v in self.synaptic(list(rec.cur_l[:, b:b + 1].unbind(0)))]
            cu = [to_np(v) for v in self.synaptic(list(rec.cur_u[:, b:b + 1].unbind(0)))]
        smag = np.stack([np.maximum(np.abs(lo), np.abs(hi)).ravel() for lo, hi in zip(cl, cu,
                                                                                      strict=True)])
        syn, prev, err = [], None, np.zeros(n)
        imag = np.maximum(np.abs(to_np(rec.cur_l[:, b])), np.abs(to_np(rec.cur_u[:, b])))
        imag = imag.reshape(T, n)
        for t in range(T):
            e = cur[t]
            if prev is None:
                A, c = model.pad(e.A), e.c.copy()
                err = e.error().copy()
            else:
                A = sp.diags(alpha) @ model.pad(prev.A) + model.pad(e.A)
                c = alpha * prev.c + e.c
                smag_prev = smag[t - 1]
                err = alpha * err + e.error() + gamma(2) * (alpha * (smag_prev + err) + imag[t])
            prev = Expr(A.tocsr(), c, shape, False, err.copy())
            syn.append(prev)
        return syn, smag

    def _encode_zero(self, model: Model, syn: list[Expr], rec, b: int, T: int,
                     smag: np.ndarray) -> tuple[list[Expr], list[Expr]]:
        """The zero reset's encoding over all steps: ``m_t = β U_{t-1} + syn_t``, then
        ``U_t = m_t - Q_t`` (exactly 0 or ``m_t`` in float)."""
        shape = syn[0].shape
        arr = self.milp_arrays(rec, b, T, shape)
        n = arr.theta.size
        reset = Spikes.initial((-arr.theta > 0).astype(np.float64))  # R_1 = H(0 - θ)
        u_prev: Expr | None = None
        spikes, mems = [], []
        tau, prev_mag = np.zeros(n), np.zeros(n)
        for t in range(T):
            tau = arr.beta * tau + syn[t].error() + gamma(4) * (arr.beta * prev_mag + smag[t])
            prev_mag = np.maximum(np.abs(arr.mem_l[t]), np.abs(arr.mem_u[t])) + tau
            m = _milp_pre_reset(model, syn[t], u_prev, arr.beta, tau)
            u_lo, u_hi = arr.mem_l[t] - tau, arr.mem_u[t] + tau
            band = Band(model.add_vars(u_lo, u_hi, integer=False), u_lo, u_hi, tau)
            _milp_zero_reset(model, band, m, reset)
            ue = model.var_expr(band.cols, shape)
            ue.err = tau.copy()
            reset = model.add_spikes(band, arr.theta, arr.spk_l[t], arr.spk_u[t], shape)
            spikes.append(reset.expr)
            mems.append(ue)
            u_prev = ue
        return spikes, mems


def _milp_pre_reset(model: Model, syn: Expr, u_prev: Expr | None, beta: np.ndarray,
                    tau: np.ndarray) -> Band:
    """Variables of ``m_t = β U_{t-1} + syn_t`` (``u_prev``: ``U_{t-1}``, None at t = 0),
    bounded by the model's bounds of the expression widened by the band ``tau``."""
    MA, Mc = model.pad(syn.A), syn.c.copy()
    if u_prev is not None:
        MA = MA + sp.diags(beta) @ model.pad(u_prev.A)
        Mc = Mc + beta * u_prev.c
    m_lo, m_hi = model.expr_bounds(Expr(MA.tocsr(), Mc, syn.shape))
    m_lo, m_hi = m_lo - tau, m_hi + tau
    mcols = model.add_vars(m_lo, m_hi, integer=False)
    model.add_rows((model.var_expr(mcols, syn.shape).A - model.pad(MA)).tocsr(), Mc, Mc)
    return Band(mcols, m_lo, m_hi, tau)


def _milp_zero_reset(model: Model, u: Band, m: Band, reset: Spikes) -> None:
    """``U - m + Q = 0`` with ``Q = R m``: a big-M product where the reset ``R`` is free,
    ``Q = r m`` where it is fixed to ``r``."""
    n = u.cols.size
    free_idx = np.flatnonzero(reset.free)
    qc = model.add_vars(np.minimum(m.lo[free_idx], 0), np.maximum(m.hi[free_idx], 0),
                        integer=False)
    keep = np.where(~reset.free & (reset.value > 0.5), 0.0, 1.0)  # fixed R = 1: U = 0
    rows_u = np.arange(n)
    A = sp.csr_matrix((np.ones(n), (rows_u, u.cols)), shape=(n, model.n))
    A = A - sp.csr_matrix((keep, (rows_u, m.cols)), shape=(n, model.n))
    if len(free_idx):
        A = A + sp.csr_matrix((np.ones(len(free_idx)), (free_idx, qc)), shape=(n, model.n))
        model.add_product(qc, reset.cols[free_idx], m.cols[free_idx], m.lo[free_idx],
                          m.hi[free_idx])
    model.add_rows(A.tocsr(), 0.0, 0.0)


def _zero_reset_line(lam: Tensor, beta: Tensor, thr: Tensor, prev_l: Tensor, prev_u: Tensor,
                     syn_l: Tensor, syn_u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Lower bound of ``lam · U_t`` with ``U_t = (1 - R_t) m_t``, ``R_t = H(U_{t-1} - θ)``,
    ``m_t = β U_{t-1} + syn_t``: ``(coefficients on m_t, const [B, M], mag [B, M])``.

    Reset certainly off: ``U_t = m_t``; certainly on: ``U_t = 0``; else ``U_t`` is
    ``m_t`` or 0, so ``min(m, 0) <= U_t <= max(m, 0)``, each bounded by its chord
    over ``[m_l, m_u]`` (a concave function lies above its chord, a convex one
    below): the lower chord where ``lam >= 0``, the upper one elsewhere.
    """
    thr_b = thr + torch.zeros_like(prev_l)
    off, on = prev_u <= thr_b, prev_l > thr_b
    m_l, m_u = (beta * prev_l + syn_l).unsqueeze(1), (beta * prev_u + syn_u).unsqueeze(1)
    width = (m_u - m_l).clamp(min=1e-12)

    def chord(g_l: Tensor, g_u: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.where(m_u > m_l, (g_u - g_l) / width, torch.zeros_like(width))
        return s, g_l - s * m_l

    s_lo, c_lo = chord(m_l.clamp(max=0), m_u.clamp(max=0))  # chord of min(m, 0)
    s_up, c_up = chord(m_l.clamp(min=0), m_u.clamp(min=0))  # chord of max(m, 0)
    pos = lam >= 0
    s = torch.where(pos, s_lo, s_up)
    c = torch.where(pos, c_lo, c_up)
    off1, on1 = off.unsqueeze(1), on.unsqueeze(1)
    s = torch.where(off1, torch.ones_like(s), torch.where(on1, torch.zeros_like(s), s))
    c = torch.where(off1 | on1, torch.zeros_like(c), c)
    term = lam * c
    return lam * s, dot_neurons(term, 1), dot_neurons(term.abs(), 1)

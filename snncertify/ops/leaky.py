"""``snn.Leaky``: the exact snnTorch 1.0 dynamics and their S-IBP rule.

Per step t (elementwise, ``U_0 = 0``), exactly as ``snn.Leaky.forward`` computes:

    R_t = H(U_{t-1} - θ)                       (reset from the PREVIOUS membrane)
    subtract: U_t = (β U_{t-1} + I_t) - R_t θ
    zero:     U_t = β ((1 - R_t) U_{t-1}) + I_t = β g(U_{t-1}) + I_t,  g(u) = u 1[u <= θ]
    none:     U_t = β U_{t-1} + I_t
    S_t = H(U_t - θ)                           (strict: U_t == θ does not spike)

with β clamped to [0, 1]. The float operations are written in the same order as
snnTorch so that the forward (and the bounds at eps = 0) are bit-identical.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import snntorch as snn
import torch
from torch import Tensor, nn

from ..gradmode import GradMode, OwnSurrogate
from ..milp import Expr, Model, gamma, to_np
from ..relax import Relaxation, joint_fn, joint_lower, joint_sigma, reset_fn, spike_fn
from .base import BoundOp, dot_neurons, rounding_pad
from .registry import register_op

_OWN = OwnSurrogate()

RESET_MODES = ("subtract", "zero", "none")


def unsupported_leaky_options(module) -> list[str]:
    """Options of ``snn.Leaky`` this toolkit does not model (empty if none)."""
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


@register_op(snn.Leaky, exact=True)
class LeakyOp(BoundOp):
    """``snn.Leaky`` over a whole sequence.

    Inputs are currents ``[T, B, ...]``; outputs are spikes ``[T, B, ...]``.
    The neuron's own ``spike_grad`` is used for every Heaviside, so forward
    and bounds carry the module's surrogate gradient.
    """

    stateful = True

    @classmethod
    def from_module(cls, module: nn.Module, path: str) -> LeakyOp:
        bad = unsupported_leaky_options(module)
        if bad:
            raise TypeError(f"snn.{type(module).__name__} at {path!r} uses unsupported "
                            f"option(s): {', '.join(bad)}")
        check_heaviside(module, path)
        return cls(module, path)

    @property
    def reset(self) -> str:
        return self.module.reset_mechanism

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
        if self.reset == "subtract":
            # h(u) = βu - θ H(u - θ): βu up to θ, βu - θ above it (infimum βθ - θ).
            base_l, base_u = torch.addcmul(il, beta, ml), torch.addcmul(iu, beta, mu)
            lo = torch.addcmul(base_l, rl, thr, value=-1)
            hi = torch.addcmul(base_u, ru, thr, value=-1)
            unstable = rl != ru
            lo = torch.where(unstable, torch.minimum(base_l, beta * thr - thr + il), lo)
            hi = torch.where(unstable, torch.maximum(base_u - thr, beta * thr + iu), hi)
            return lo, hi
        if self.reset == "zero":
            # g(u) = u 1[u <= θ] on [ml, mu]. Upper: mu if no spike is possible,
            # max(θ, 0) if one is, 0 if it is certain. Lower: ml if no spike is
            # possible, else min(ml, 0) (exact when unstable; when a spike is
            # certain g = 0 >= min(ml, 0), equal to it for θ >= 0).
            thr_pos = thr.clamp(min=0)
            spike_possible = ru > 0
            gl = torch.where(spike_possible, ml.clamp(max=0), ml)
            gu = torch.where(spike_possible, torch.addcmul(thr_pos, rl, thr_pos, value=-1), mu)
            return torch.addcmul(il, beta, gl), torch.addcmul(iu, beta, gu)
        return torch.addcmul(il, beta, ml), torch.addcmul(iu, beta, mu)

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
            :meth:`membrane_interval`.
        """
        beta, thr = self.beta(), self.threshold()
        ml = mu = torch.zeros_like(cur_l[0])
        rl = ru = self.spike(ml).detach()  # R_1 = H(U_0 - θ), U_0 = 0
        out = ([], [], [], [])
        for t in range(len(cur_l)):
            lo, hi = self.membrane_interval(ml, mu, rl, ru, cur_l[t], cur_u[t], beta, thr)
            if slack:  # pad = slack (1 + max(|lo|, |hi|)), and max(|lo|, |hi|) = max(-lo, hi)
                mag = torch.maximum(hi, -lo).add_(1)  # in place on a fresh tensor
                lo, hi = torch.add(lo, mag, alpha=-slack), torch.add(hi, mag, alpha=slack)
            if mem_bounds is not None:
                lo, hi = torch.maximum(lo, mem_bounds[0][t]), torch.minimum(hi, mem_bounds[1][t])
            ml, mu = lo, hi
            sl, su = self.spike(ml), self.spike(mu)
            rl, ru = sl.detach(), su.detach()  # next step's reset is this step's spike
            for seq, v in zip(out, (sl, su, ml, mu), strict=True):
                seq.append(v)
        return out

    def linear_backward(
        self, lam_s: Tensor | None, lam_u: Tensor | None, steps: int, mem_l: list[Tensor],
        mem_u: list[Tensor], rule: str = "scrown", sigma: Tensor | None = None,
        record: list | None = None, slack: float = 0.0, cur_l: Tensor | None = None,
        cur_u: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """CROWN's rule: back through this layer over steps ``0 .. steps-1``.

        At each step (last to first) everything the membrane ``U_t`` feeds, its
        spike and the next membrane, ``F(U_t) = Λ_t H(U_t - θ) + λ_{t+1} f(U_t)``,
        is replaced by ONE lower line (:func:`~snncertify.relax.joint_lower`, slope
        ``rule`` or α-CROWN's ``sigma`` ``[T, B, M, ...]``); then
        ``U_t = f(U_{t-1}) + I_t + e_t`` with a rounding term ``|e_t| <= pad_t``.

        Args:
            lam_s: coefficients on the spikes, ``[steps, B, M, ...]`` or None.
            lam_u: coefficients on the membranes, ``[steps, B, M, ...]`` or None.
            mem_l, mem_u: sound membrane bounds, T tensors ``[B, ...]``.
            record: a list the σ of the slopes used are written to (α-CROWN's start).
            slack: the rounding slack of the membranes (0 at a point).
            cur_l, cur_u: bounds of the input currents, T tensors ``[B, ...]`` each
                (unused here; neurons with more state need them).

        Returns:
            ``(lam_i, const, mag)``: coefficients on the input currents
            ``[steps, B, M, ...]``, the constant ``[B, M]`` and the magnitude
            ``[B, M]`` of the constant terms (for the rounding pad).
        """
        ref = lam_s if lam_s is not None else lam_u
        const = ref.new_zeros(ref.shape[1:3])
        mag = torch.zeros_like(const)
        nxt = None  # coefficients on U_{t+1}
        out = [None] * steps
        for t in reversed(range(steps)):
            nxt, const, mag = self.membrane_line(
                self.reset, t, lam_s, lam_u, nxt, mem_l, mem_u, rule, sigma, record, slack,
                const, mag)
            out[t] = nxt
        f0 = _reset_at_zero(self.reset, self.beta(), self.threshold(), nxt)  # U_0 = 0: f(0), as the forward does
        if f0 is not None:
            term = nxt * f0
            const, mag = const + dot_neurons(term, 1), mag + dot_neurons(term.abs(), 1)
        return torch.stack(out), const, mag


    def membrane_line(self, reset: str, t: int, lam_s: Tensor | None, lam_u: Tensor | None,
                      nxt: Tensor | None, ml: list[Tensor], mu: list[Tensor], rule: str,
                      sigma: Tensor | None, record: list | None, slack: float, const: Tensor,
                      mag: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step of :meth:`linear_backward`: the coefficients on ``U_t`` from the
        joint line of ``F(U_t) = Λ_t H(U_t - θ) + λ' f(U_t)`` (``f`` by ``reset``,
        ``λ' = nxt``) plus ``lam_u[t]``, with ``(const, mag)`` ``[B, M]`` updated by the
        line's intercepts and the rounding term of ``U_t``."""
        beta, thr = self.beta(), self.threshold()
        spk = lam_s[t] if lam_s is not None else None
        if spk is None and nxt is None:
            lam = torch.zeros_like((lam_s if lam_s is not None else lam_u)[t])
        elif sigma is None and record is None:
            lam, c = _joint_line(reset, beta, thr, spk, nxt, ml[t], mu[t], rule)
            const, mag = const + dot_neurons(c, 1), mag + dot_neurons(c.abs(), 1)
        else:
            f = joint_fn(reset, beta, thr, spk, nxt)
            lo, hi = ml[t].unsqueeze(1), mu[t].unsqueeze(1)
            lam, c = joint_lower(f, lo, hi, rule, None if sigma is None else sigma[t])
            if record is not None:
                record[t] = joint_sigma(f, lo, hi, lam)
            const, mag = const + dot_neurons(c, 1), mag + dot_neurons(c.abs(), 1)
        if lam_u is not None:
            lam = lam + lam_u[t]
        if slack:
            pad = rounding_pad(ml[t], mu[t], slack)
            const = const - dot_neurons(lam.abs(), pad.unsqueeze(1))  # rounding term e_t
        return lam, const, mag

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
        n = math.prod(shape)
        with torch.no_grad():
            beta = to_np(torch.broadcast_to(self.beta(), shape)).ravel()
            theta = to_np(torch.broadcast_to(self.threshold(), shape)).ravel()
        ml = to_np(rec.mem_l[:, b]).reshape(T, n)
        mu = to_np(rec.mem_u[:, b]).reshape(T, n)
        sl = to_np(rec.spk_l[:, b]).reshape(T, n)
        su = to_np(rec.spk_u[:, b]).reshape(T, n)
        reset = self.reset
        u_prev: Expr | None = None  # U_{t-1} (None: 0 at t = 0)
        s_prev: Expr | None = None  # S_{t-1}
        s_prev_free = np.zeros(n, dtype=bool)
        s_prev_val = np.zeros(n)
        u_prev_cols = None
        s_prev_cols = np.zeros(n, dtype=np.int64)
        spikes, mems = [], []
        if cmag is None:
            cmag = np.maximum(np.abs(to_np(rec.cur_l[:, b])),
                              np.abs(to_np(rec.cur_u[:, b]))).reshape(T, n)
        tau = np.zeros(n)
        prev_mag = np.zeros(n)
        for t in range(T):
            tau = beta * tau + cur[t].error() + gamma(4) * (beta * prev_mag + cmag[t] + np.abs(theta))
            prev_mag = np.maximum(np.abs(ml[t]), np.abs(mu[t])) + tau
            m_lo, m_hi = ml[t] - tau, mu[t] + tau
            ucols = model.add_vars(m_lo, m_hi, integer=False)
            # right-hand side  E = β U_{t-1} (- reset term) + I_t
            EA = model.pad(cur[t].A)
            Ec = cur[t].c.copy()
            if u_prev is not None:
                if reset == "zero":
                    # Q = R U_{t-1}, R = S_{t-1}: exact big-M product where R is free
                    fixed_on = (~s_prev_free) & (s_prev_val > 0.5)
                    qcols_free = np.flatnonzero(s_prev_free)
                    lbs, ubs, _ = model.bounds_arrays()
                    L, H = lbs[u_prev_cols[qcols_free]], ubs[u_prev_cols[qcols_free]]
                    qc = model.add_vars(np.minimum(L, 0), np.maximum(H, 0), integer=False)
                    k = len(qc)
                    if k:
                        rc = s_prev_cols[qcols_free]
                        uc = u_prev_cols[qcols_free]
                        r = np.arange(k)
                        rows = np.concatenate([r, r, r + k, r + k, r + 2 * k, r + 2 * k, r + 2 * k,
                                               r + 3 * k, r + 3 * k, r + 3 * k])
                        cols = np.concatenate([qc, rc, qc, rc, qc, uc, rc, qc, uc, rc])
                        vals = np.concatenate([np.ones(k), -H, np.ones(k), -L, np.ones(k),
                                               -np.ones(k), -L, np.ones(k), -np.ones(k), -H])
                        A = sp.csr_matrix((vals, (rows, cols)), shape=(4 * k, model.n))
                        lo = np.concatenate([np.full(k, -np.inf), np.zeros(k), np.full(k, -np.inf), -H])
                        hi = np.concatenate([np.zeros(k), np.full(k, np.inf), -L, np.full(k, np.inf)])
                        model.add_rows(A, lo, hi)
                    # β (U_{t-1} - Q)
                    keep = np.where(fixed_on, 0.0, 1.0)
                    Uterm = sp.diags(beta * keep) @ model.pad(u_prev.A)
                    Qrows = np.flatnonzero(s_prev_free)
                    Qm = sp.csr_matrix((-beta[Qrows], (Qrows, qc)), shape=(n, model.n))
                    EA = model.pad(EA.tocsr()) + Uterm + Qm
                    Ec = Ec + beta * keep * u_prev.c
                else:
                    EA = EA + sp.diags(beta) @ model.pad(u_prev.A)
                    Ec = Ec + beta * u_prev.c
                    if reset == "subtract":
                        EA = EA - sp.diags(theta) @ model.pad(s_prev.A)
                        Ec = Ec - theta * s_prev.c
            # U_t - E = E.c
            ue = model.var_expr(ucols, shape)
            ue.err = tau.copy()
            model.add_rows((ue.A - model.pad(EA)).tocsr(), Ec, Ec)
            # spikes
            free = (sl[t] < 0.5) & (su[t] > 0.5)
            scols = model.add_vars(np.zeros(int(free.sum())), 1.0, integer=True)
            if free.any():
                f = np.flatnonzero(free)
                delta = np.maximum(4 * tau[f], 1e-6 * (1 + np.abs(theta[f])))
                model.add_thresholds(ucols[f], scols, theta[f], m_lo[f], m_hi[f], tau[f], delta)
            s_expr = model.mixed_expr(free, scols, sl[t], shape, True)
            spikes.append(s_expr)
            mems.append(ue)
            u_prev, s_prev = ue, s_expr
            u_prev_cols = ucols
            s_prev_free, s_prev_val = free, sl[t]
            s_prev_cols = np.zeros(n, dtype=np.int64)
            s_prev_cols[free] = scols
        return spikes, mems

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

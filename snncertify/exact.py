"""Exact verification of SMALL spiking networks as a mixed-integer linear program.

``method="exact"`` and :func:`verify` encode the unrolled network over the
threat set as a MILP and solve it with SciPy's HiGHS (``scipy.optimize.milp``).

The model (per sample, over all T steps and every ``snn.Leaky`` layer):

* inputs: direct: continuous ``x'`` in ``[clamp(x-eps, 0, 1), clamp(x+eps, 0, 1)]``
  (the same at every step); rate: for the FIXED noise draw ``r``, the input
  spikes ``1[x'_i > r_{t,i}]`` of one pixel are exactly the monotone patterns
  "spike at every free step whose ``r`` is below a cut", encoded with one
  binary per free (t, i) and chain constraints (no threshold gap); event: a
  binary per position that may flip, plus ``sum(flips) <= k`` for a budget;
* affine layers (Linear, Conv2d, AvgPool2d, BatchNorm in eval, Flatten,
  Identity/Dropout): equalities, their matrices read off by applying each
  op (in float64) to an identity basis;
* MaxPool2d: over spikes (binary) an exact OR; over real values the standard
  encoding with one selection binary per window member;
* Leaky: a continuous ``U_t`` per neuron and step, a binary ``S_t`` per
  neuron and step whose spike interval bounds (IBP) are not already a single
  value; ``R_t = S_{t-1}`` (snnTorch's reset from the previous membrane is the
  previous step's spike); subtract: ``U_t = β U_{t-1} + I_t - θ S_{t-1}``;
  zero: ``U_t = β (U_{t-1} - Q_t) + I_t`` with ``Q_t = S_{t-1} U_{t-1}``
  linearised exactly by big-M; none: ``U_t = β U_{t-1} + I_t``. Big-M
  constants are the IBP membrane bounds of ``bnet.interval_propagation``.

The strict threshold ``S = H(U - θ)`` is the one place where a MILP cannot
be exact, so two versions of it are used, each for what it can guarantee:

* OUTER model (every reported bound): spike on => ``U - θ >= -τ``, spike off
  => ``U - θ <= +τ``. With ``τ = 0`` this is the real-arithmetic network
  relaxed only on the measure-zero set ``U = θ`` (both spike values allowed
  there), so its optimum is a valid bound. ``τ > 0`` (``bnet.slack`` times
  ``(1 + |U|)``, times ``t + 1`` for accumulation) additionally covers the
  float32 rounding of the real snnTorch forward, the same assumption
  S-IBP's slack makes. The bound reported is HiGHS's DUAL bound (never the
  incumbent) with gap tolerances 0, combined elementwise with S-IBP.
* INNER model (counterexample search only): spike on => ``U - θ >= δ``, off
  => ``U - θ <= -δ`` with ``δ = max(2τ, 1e-6 (1 + |θ|))``. Any of its
  solutions reproduces its spikes in the real float32 network, so its optimum
  is an ACHIEVED margin (an upper bound on the true minimum).

The exact minimum therefore lies in ``[outer optimum, inner optimum]``. In
practice (spike-count readouts take lattice values) the two coincide, and
:func:`verify` checks each witness by running the real network: a result is
``"exact"`` only when a real forward pass reproduces the sound lower bound.

The optimum is exact in real arithmetic up to the ``τ`` band and HiGHS's
feasibility tolerances (1e-7 primal, 1e-6 integrality), which only enlarge
the feasible set and so keep the dual bound sound.

Limits: models with more than ``max_binaries`` (default
:data:`DEFAULT_MAX_BINARIES` = 5,000) binaries raise ``ValueError``; affine
maps with more than :data:`MAX_AFFINE_ENTRIES` dense entries too. A solve that
hits ``time_limit`` reports HiGHS's dual bound when it has one, else the
IBP bound (see :class:`ExactTimeoutWarning`); it is never an incumbent.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import Tensor

from .methods import register_method, spec_interval
from .ops import (
    AffineOp,
    BatchNormOp,
    BoundOp,
    Conv2dOp,
    FlattenOp,
    IdentityOp,
    LeakyOp,
    MaxPool2dOp,
)
from .readout import readout_bounds
from .threat import FlipBudget, LinfBall, Threat

DEFAULT_MAX_BINARIES = 5000
DEFAULT_TIME_LIMIT = 60.0
#: largest dense ``n_out * n_in`` of one affine op's matrix (built from a basis)
MAX_AFFINE_ENTRIES = 20_000_000
_UNIT = 2.0**-24  # float32 unit roundoff


def _gamma(k) -> np.ndarray:
    """Higham's ``γ_k = k u / (1 - k u)`` for float32 (``k`` may be an array)."""
    ku = np.asarray(k, dtype=np.float64) * _UNIT
    return ku / (1 - ku)


class ExactTimeoutWarning(RuntimeWarning):
    """A MILP solve hit its time limit: the dual bound (or IBP) was used instead."""


# --------------------------------------------------------------------------- model
@dataclass
class _Expr:
    """Affine expressions ``A @ vars + c`` of one per-sample tensor, flattened.

    ``A``: csr ``[n, n_vars_at_creation]`` (padded to the model's width on use);
    ``c``: ``[n]``; ``shape``: the per-sample tensor shape; ``binary``: every
    value is 0/1 for every feasible assignment (spikes); ``err``: ``[n]`` bound
    on how far the real float32 network's value can be from the expression
    evaluated in real arithmetic on the same inputs and spikes (0 = exact).
    """

    A: sp.csr_matrix
    c: np.ndarray
    shape: tuple[int, ...]
    binary: bool = False
    err: np.ndarray | None = None

    def error(self) -> np.ndarray:
        return np.zeros(self.c.size) if self.err is None else self.err


class _Model:
    """Variables, linear rows and the threshold constraints of one sample."""

    def __init__(self, max_binaries: int) -> None:
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n = 0
        self.n_bin = 0
        self.max_binaries = max_binaries
        self.rows: list[tuple[sp.csr_matrix, np.ndarray, np.ndarray]] = []
        # per free spike: U column, S column, θ, M_lo, M_hi, τ, δ
        self.thr: list[tuple[np.ndarray, ...]] = []

    def add_vars(self, lb, ub, integer: bool) -> np.ndarray:
        lb = np.asarray(lb, dtype=np.float64).ravel()
        ub = np.broadcast_to(np.asarray(ub, dtype=np.float64), lb.shape).copy()
        k = lb.size
        cols = np.arange(self.n, self.n + k)
        self.lb.append(lb)
        self.ub.append(ub)
        self.integer.append(np.full(k, 1 if integer else 0, dtype=np.int8))
        self.n += k
        if integer:
            self.n_bin += k
            if self.n_bin > self.max_binaries:
                raise ValueError(
                    f"network too large for the exact verifier: the MILP needs more than "
                    f"{self.max_binaries} binary variables (max_binaries); use a smaller "
                    "network, a smaller eps or fewer steps"
                )
        return cols

    def pad(self, A: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix((A.data, A.indices, A.indptr), shape=(A.shape[0], self.n))

    def add_rows(self, A: sp.csr_matrix, lo, hi) -> None:
        n = A.shape[0]
        if n == 0:
            return
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (n,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (n,)).copy()
        self.rows.append((A.tocsr(), lo, hi))

    def var_expr(self, cols: np.ndarray, shape: tuple[int, ...], binary: bool = False) -> _Expr:
        k = len(cols)
        A = sp.csr_matrix((np.ones(k), (np.arange(k), cols)), shape=(k, self.n))
        return _Expr(A, np.zeros(k), shape, binary)

    def mixed_expr(self, free: np.ndarray, cols: np.ndarray, const: np.ndarray,
                   shape: tuple[int, ...], binary: bool) -> _Expr:
        """Rows ``free`` are the variables ``cols`` (in order), the others ``const``."""
        n = free.size
        rows = np.flatnonzero(free)
        A = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, self.n))
        return _Expr(A, np.where(free, 0.0, const).astype(np.float64), shape, binary)

    def const_expr(self, c: np.ndarray, shape: tuple[int, ...], binary: bool = False) -> _Expr:
        c = np.asarray(c, dtype=np.float64).ravel()
        return _Expr(sp.csr_matrix((c.size, self.n)), c, shape, binary)

    def bounds_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cat = (lambda v: np.concatenate(v)) if self.lb else (lambda v: np.zeros(0))
        return cat(self.lb), cat(self.ub), (np.concatenate(self.integer) if self.integer
                                            else np.zeros(0, dtype=np.int8))

    def expr_bounds(self, e: _Expr) -> tuple[np.ndarray, np.ndarray]:
        lb, ub, _ = self.bounds_arrays()
        A = self.pad(e.A)
        pos, neg = A.maximum(0), A.minimum(0)
        return pos @ lb + neg @ ub + e.c, pos @ ub + neg @ lb + e.c

    def add_thresholds(self, ucols, scols, theta, mlo, mhi, tau, delta) -> None:
        self.thr.append((ucols, scols, theta, mlo, mhi, tau, delta))

    def threshold_rows(self, mode: str) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """Big-M rows of the strict threshold: ``mode`` ``"outer"`` (band τ) or ``"inner"`` (gap δ).

        on side : ``U - (a + θ - M_lo) S >= M_lo``  (S=1: ``U >= θ + a``)
        off side: ``U - (M_hi - θ - b) S <= θ + b`` (S=0: ``U <= θ + b``)
        with ``a = -τ, b = τ`` (outer) or ``a = δ, b = -δ`` (inner).
        """
        if not self.thr:
            return sp.csr_matrix((0, self.n)), np.zeros(0), np.zeros(0)
        u, s, th, ml, mh, tau, delta = (np.concatenate(v) for v in zip(*self.thr, strict=True))
        a, b = (-tau, tau) if mode == "outer" else (delta, -delta)
        k = len(u)
        r = np.arange(k)
        on_coef = -np.maximum(a + th - ml, 0.0)
        off_coef = -np.maximum(mh - th - b, 0.0)
        rows = np.concatenate([r, r, r + k, r + k])
        cols = np.concatenate([u, s, u, s])
        vals = np.concatenate([np.ones(k), on_coef, np.ones(k), off_coef])
        A = sp.csr_matrix((vals, (rows, cols)), shape=(2 * k, self.n))
        lo = np.concatenate([ml, np.full(k, -np.inf)])
        hi = np.concatenate([np.full(k, np.inf), th + b])
        return A, lo, hi

    def assemble(self, mode: str) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        blocks = [self.pad(A) for A, _, _ in self.rows]
        los = [lo for _, lo, _ in self.rows]
        his = [hi for _, _, hi in self.rows]
        At, lt, ht = self.threshold_rows(mode)
        blocks.append(self.pad(At))
        los.append(lt)
        his.append(ht)
        return sp.vstack(blocks, format="csr"), np.concatenate(los), np.concatenate(his)


# ------------------------------------------------------------------ affine maps
def _affine_matrix(op: BoundOp, in_shape: tuple[int, ...]):
    """``(M csr [n_out, n_in], bias [n_out], abs_const [n_out], out_shape)`` of a linear op.

    Computed in float64 from the op's float32 parameters. ``abs_const`` bounds
    the magnitude of the constant terms the float32 op rounds with (``|b|``,
    and ``|w / sqrt(var + eps) * mean| + |b|`` for batch norm).
    """
    n_in = math.prod(in_shape)
    mod = copy.deepcopy(op.module).double()
    op64 = type(op)(mod, op.path)
    with torch.no_grad():
        zero = op64.forward(torch.zeros((1, *in_shape), dtype=torch.float64))
        n_out = zero[0].numel()
        if n_in * n_out > MAX_AFFINE_ENTRIES:
            raise ValueError(
                f"{op.name} is too large for the exact verifier ({n_out} x {n_in} matrix)"
            )
        basis = torch.eye(n_in, dtype=torch.float64).reshape((n_in, *in_shape))
        out = op64.forward(basis).reshape(n_in, n_out) - zero.reshape(1, n_out)
        abs_const = zero.reshape(-1).abs()
        if isinstance(op, BatchNormOp):
            for name in ("weight", "bias", "running_mean"):
                t = getattr(mod, name)
                if t is not None:
                    t.data = -t.data.abs() if name == "running_mean" else t.data.abs()
            abs_const = op64.forward(torch.zeros((1, *in_shape), dtype=torch.float64)).reshape(-1)
    M = sp.csr_matrix(out.T.numpy())
    M.eliminate_zeros()
    return M, zero.reshape(-1).numpy().copy(), abs_const.numpy().copy(), tuple(zero.shape[1:])


def _pool_membership(op: MaxPool2dOp, in_shape: tuple[int, ...]):
    """``(W csr [n_out, n_in] 0/1 window membership, out_shape)`` of a MaxPool2d."""
    n_in = math.prod(in_shape)
    with torch.no_grad():
        basis = torch.eye(n_in, dtype=torch.float64).reshape((n_in, *in_shape))
        out = op.module(basis)
    out_shape = tuple(out.shape[1:])
    W = sp.csr_matrix((out.reshape(n_in, -1).T.numpy() > 0.5).astype(np.float64))
    return W, out_shape


# ---------------------------------------------------------------- the program
@dataclass
class _Program:
    """One sample's MILP: model, score expressions and how to read an input back."""

    model: _Model
    scores: _Expr
    encoding: str
    input_cols: np.ndarray | None = None  # direct: x' columns (flattened)
    lo: np.ndarray | None = None  # direct / rate: per-pixel bounds of x'
    hi: np.ndarray | None = None
    rate_free: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    event_free: np.ndarray | None = None  # [T, n] bool
    event_cols: np.ndarray | None = None
    event_x: np.ndarray | None = None  # [T, n]
    in_shape: tuple[int, ...] = ()
    num_steps: int = 0
    ibp_scores: tuple[np.ndarray, np.ndarray] | None = None

    def objective(self, c: np.ndarray) -> tuple[np.ndarray, float]:
        """Linear objective ``c @ scores`` as ``(vector over vars, constant)``."""
        A = self.model.pad(self.scores.A)
        return np.asarray(A.T @ c).ravel(), float(c @ self.scores.c)

    def rounding(self, c: np.ndarray) -> float:
        """Bound on ``|c @ (float32 scores - real-arithmetic scores)|``."""
        return float(np.abs(c) @ self.scores.error())


def _x_bounds(x: Tensor, threat: LinfBall) -> tuple[Tensor, Tensor]:
    """Per-pixel ``x'`` bounds exactly as :func:`encoding.encode_interval` computes them."""
    eps = torch.as_tensor(threat.eps, dtype=x.dtype, device=x.device)
    if eps.ndim == 1:
        eps = eps.reshape((-1,) + (1,) * (x.ndim - 1))
    if threat.is_point():
        return x, x
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _build(bnet, x: Tensor, threat: Threat, noise: Tensor | None, prop, b: int,
           max_binaries: int) -> _Program:
    """Build the MILP of sample ``b`` (``prop``: the batch's IBP propagation)."""
    model = _Model(max_binaries)
    T = bnet.steps_for(x)
    encoding = bnet.encoding
    prog = _Program(model, None, encoding, num_steps=T)  # type: ignore[arg-type]

    # ---- inputs: per-step expressions (or one static expression)
    if encoding == "event":
        frames = _np(x[:, b])  # [T, ...]
        shape = tuple(frames.shape[1:])
        n = math.prod(shape)
        mask = getattr(threat, "mask", None)
        if mask is None:
            free = np.ones((T, n), dtype=bool)
        else:
            full = torch.broadcast_to(mask.to(x.device), x.shape)[:, b]
            free = full.reshape(T, n).cpu().numpy()
        xs = frames.reshape(T, n)
        cols = model.add_vars(np.zeros(int(free.sum())), 1.0, integer=True)
        vals = np.zeros((T, n), dtype=np.int64)
        vals[free] = cols
        if isinstance(threat, FlipBudget):
            fc = vals[free]
            sign = np.where(xs[free] > 0.5, -1.0, 1.0)
            A = sp.csr_matrix((sign, (np.zeros(len(fc), dtype=np.int64), fc)), shape=(1, model.n))
            model.add_rows(A, -np.inf, threat.k - float((xs[free] > 0.5).sum()))
        seq = [model.mixed_expr(free[t], vals[t][free[t]], xs[t], shape, True) for t in range(T)]
        static = None
        prog.event_free, prog.event_cols, prog.event_x = free, vals, xs
        prog.in_shape = shape
    else:
        assert isinstance(threat, LinfBall)
        lo_t, hi_t = _x_bounds(x, threat)
        lo, hi = _np(lo_t[b]).ravel(), _np(hi_t[b]).ravel()
        shape = tuple(x.shape[1:])
        prog.lo, prog.hi, prog.in_shape = lo, hi, shape
        if encoding == "direct":
            cols = model.add_vars(lo, hi, integer=False)
            prog.input_cols = cols
            static, seq = model.var_expr(cols, shape), None
        else:
            r = _np(noise[:, b]).reshape(T, -1)
            s_lo, s_hi = lo[None] > r, hi[None] > r
            free = s_lo != s_hi
            cols = model.add_vars(np.zeros(int(free.sum())), 1.0, integer=True)
            vals = np.zeros(free.shape, dtype=np.int64)
            vals[free] = cols
            rr, cc, vv = [], [], []  # chain rows S_a - S_b >= 0 (ties: == 0)
            eq_flags = []
            for i in np.flatnonzero(free.any(0)):
                ts = np.flatnonzero(free[:, i])
                order = ts[np.argsort(r[ts, i], kind="stable")]
                prog.rate_free.append((int(i), r[order, i], vals[order, i]))
                for a, c in zip(order[:-1], order[1:], strict=True):
                    k = len(eq_flags)
                    rr += [k, k]
                    cc += [vals[a, i], vals[c, i]]
                    vv += [1.0, -1.0]
                    eq_flags.append(r[a, i] == r[c, i])
            if eq_flags:
                A = sp.csr_matrix((vv, (rr, cc)), shape=(len(eq_flags), model.n))
                eq = np.asarray(eq_flags)
                model.add_rows(A, 0.0, np.where(eq, 0.0, np.inf))
            seq = [model.mixed_expr(free[t], vals[t][free[t]], s_lo[t].astype(np.float64),
                                    shape, True) for t in range(T)]
            static = None

    # ---- layers
    layer = 0
    last_mem: list[_Expr] | None = None
    for op in bnet.ops:
        if isinstance(op, LeakyOp):
            rec = prop.layers[layer]
            layer += 1
            cur = [static] * T if seq is None else seq
            seq, last_mem = _leaky(model, op, cur, rec, b, T)
            static = None
        elif isinstance(op, MaxPool2dOp):
            if seq is None:
                static = _maxpool(model, op, static)
            else:
                seq = [_maxpool(model, op, e) for e in seq]
        elif isinstance(op, (AffineOp, FlattenOp, IdentityOp)):
            ref = static if seq is None else seq[0]
            M, bias, abs_const, out_shape = _affine_matrix(op, ref.shape)
            moves = isinstance(op, (FlattenOp, IdentityOp))  # keeps values: exact, 0/1 stays 0/1
            absM = abs(M)
            # float32 dot products of fan-in k, in any summation order:
            # |fl - exact| <= γ_{k+4} (|M| |z| + |const|); doubled for convolutions,
            # whose fast algorithms (e.g. Winograd) are not plain sums
            fan = np.diff(M.indptr) + 4
            gam = _gamma(2 * fan if isinstance(op, Conv2dOp) else fan)

            def apply(e: _Expr, M=M, bias=bias, out_shape=out_shape, moves=moves,
                      absM=absM, gam=gam, abs_const=abs_const) -> _Expr:
                err = absM @ e.error()
                if not moves:
                    zl, zu = model.expr_bounds(e)
                    err = err + gam * (absM @ (np.maximum(np.abs(zl), np.abs(zu)) + e.error())
                                       + abs_const)
                return _Expr((M @ e.A).tocsr(), M @ e.c + bias, out_shape, moves and e.binary,
                             err)

            if seq is None:
                static = apply(static)
            else:
                seq = [apply(e) for e in seq]
        else:
            raise ValueError(f"the exact verifier does not support {op.name}")

    # ---- readout
    outs = last_mem if bnet.readout == "membrane" else seq
    if len(outs[0].shape) != 1:
        raise ValueError(
            f"the network's per-step output must be [B, K] for a readout, got {list(outs[0].shape)}"
        )
    w = 1.0 if bnet.readout == "count" else 1.0 / T
    A = sum((model.pad(e.A) for e in outs), sp.csr_matrix((outs[0].A.shape[0], model.n))) * w
    c = sum(e.c for e in outs) * w
    # float32 readout: the sum over T steps (and the division) round too
    mag = sum(np.maximum(*(np.abs(v) for v in model.expr_bounds(e))) + e.error() for e in outs)
    err = w * (sum(e.error() for e in outs) + _gamma(T + 1) * mag)
    prog.scores = _Expr(A.tocsr(), c, outs[0].shape, err=err)
    return prog


def _leaky(model: _Model, op: LeakyOp, cur: list[_Expr], rec, b: int, T: int):
    """Encode one Leaky layer over all steps; returns (spike exprs, membrane exprs).

    The threshold band ``τ`` of each (neuron, step) bounds the float32 rounding
    of the membrane: ``τ_t = β τ_{t-1} + err(I_t) + γ_4 (β |U_{t-1}| + |I_t| + |θ|)``
    (magnitudes from the IBP records), so every float32 trajectory of the real
    network is feasible in the OUTER model.
    """
    shape = cur[0].shape
    n = math.prod(shape)
    with torch.no_grad():
        beta = _np(torch.broadcast_to(op.beta(), shape)).ravel()
        theta = _np(torch.broadcast_to(op.threshold(), shape)).ravel()
    ml = _np(rec.mem_l[:, b]).reshape(T, n)
    mu = _np(rec.mem_u[:, b]).reshape(T, n)
    sl = _np(rec.spk_l[:, b]).reshape(T, n)
    su = _np(rec.spk_u[:, b]).reshape(T, n)
    reset = op.reset
    u_prev: _Expr | None = None  # U_{t-1} (None: 0 at t = 0)
    s_prev: _Expr | None = None  # S_{t-1}
    s_prev_free = np.zeros(n, dtype=bool)
    s_prev_val = np.zeros(n)
    u_prev_cols = None
    s_prev_cols = np.zeros(n, dtype=np.int64)
    spikes, mems = [], []
    cmag = np.maximum(np.abs(_np(rec.cur_l[:, b])), np.abs(_np(rec.cur_u[:, b]))).reshape(T, n)
    tau = np.zeros(n)
    prev_mag = np.zeros(n)
    for t in range(T):
        tau = beta * tau + cur[t].error() + _gamma(4) * (beta * prev_mag + cmag[t] + np.abs(theta))
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


def _maxpool(model: _Model, op: MaxPool2dOp, e: _Expr) -> _Expr:
    """Exact max pooling: OR over binary inputs, else one selection binary per candidate."""
    W, out_shape = _pool_membership(op, e.shape)
    n_out = W.shape[0]
    windows = [W.indices[W.indptr[o]:W.indptr[o + 1]] for o in range(n_out)]
    Ec = e.c
    if e.binary:  # y = OR of the members: y >= e_j, y <= sum_j e_j, y in [0, 1]
        ycols = model.add_vars(np.zeros(n_out), 1.0, integer=False)
        EA = model.pad(e.A)
        for o, members in enumerate(windows):
            k = len(members)
            y = sp.csr_matrix((np.ones(k), (np.arange(k), np.full(k, ycols[o]))),
                              shape=(k, model.n))
            model.add_rows(y - EA[members], Ec[members], np.inf)
            total = sp.csr_matrix(EA[members].sum(0))
            model.add_rows(y[:1] - total, -np.inf, Ec[members].sum())
        return model.var_expr(ycols, out_shape, binary=True)  # spikes: no rounding
    err = e.error()
    out_err = np.array([err[m].max() for m in windows])  # max is exact in float
    lo, hi = model.expr_bounds(e)
    out_lo = np.array([lo[m].max() for m in windows])
    out_hi = np.array([hi[m].max() for m in windows])
    cands = [m[hi[m] >= out_lo[o]] for o, m in enumerate(windows)]  # others never the max
    ycols = model.add_vars(out_lo, out_hi, integer=False)
    zcols = [model.add_vars(np.zeros(len(m)), 1.0, integer=True) if len(m) > 1 else None
             for m in cands]
    EA = model.pad(e.A)
    for o, members in enumerate(cands):
        k = len(members)
        y = sp.csr_matrix((np.ones(k), (np.arange(k), np.full(k, ycols[o]))), shape=(k, model.n))
        if k == 1:
            model.add_rows(y - EA[members], Ec[members], Ec[members])
            continue
        z = zcols[o]
        big = out_hi[o] - lo[members]
        Z = sp.csr_matrix((big, (np.arange(k), z)), shape=(k, model.n))
        # y >= e_j ;  y <= e_j + (max hi - lo_j)(1 - z_j) ;  sum_j z_j = 1
        model.add_rows(y - EA[members], Ec[members], np.inf)
        model.add_rows(y - EA[members] + Z, -np.inf, Ec[members] + big)
        model.add_rows(sp.csr_matrix((np.ones(k), (np.zeros(k, dtype=np.int64), z)),
                                     shape=(1, model.n)), 1.0, 1.0)
    out = model.var_expr(ycols, out_shape)
    out.err = out_err
    return out


# ---------------------------------------------------------------------- solving
@dataclass
class _Solve:
    status: str  # "optimal", "timeout", "infeasible"
    lower: float  # sound lower bound of the minimum (-inf if none)
    value: float  # incumbent objective (inf if none)
    x: np.ndarray | None


def _solve(model: _Model, c: np.ndarray, const: float, mode: str, time_limit: float,
           fix: np.ndarray | None = None) -> _Solve:
    """Minimise ``c @ v + const`` over the model (``mode``: ``"outer"`` / ``"inner"``)."""
    A, lo, hi = model.assemble(mode)
    lb, ub, integ = model.bounds_arrays()
    if fix is not None:
        lb, ub = lb.copy(), ub.copy()
        ic = integ > 0
        lb[ic] = ub[ic] = fix[ic]
    cons = [LinearConstraint(A, lo, hi)] if A.shape[0] else []
    opts = {"time_limit": float(time_limit), "mip_rel_gap": 0.0, "mip_abs_gap": 0.0,
            "presolve": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # verbatim HiGHS option notice
        res = milp(c, integrality=integ, bounds=Bounds(lb, ub), constraints=cons, options=opts)
    x = None if res.x is None else np.asarray(res.x)
    value = float(res.fun) + const if res.fun is not None and x is not None else math.inf
    dual = res.get("mip_dual_bound")
    dual = float(dual) + const if dual is not None and np.isfinite(dual) else -math.inf
    if res.status == 0:
        if not integ.any():
            dual = value  # an LP: HiGHS's optimum is the bound
        return _Solve("optimal", min(dual, value), value, x)
    if res.status == 2:
        return _Solve("infeasible", math.inf, math.inf, None)
    if res.status == 1:
        return _Solve("timeout", dual, value, x)
    raise RuntimeError(f"HiGHS failed on the exact MILP: {res.message}")


def _round_down32(v: np.ndarray) -> Tensor:
    """float64 -> float32 never above ``v``."""
    t = torch.from_numpy(np.asarray(v, dtype=np.float64)).float()
    up = t.double() > torch.from_numpy(np.asarray(v, dtype=np.float64))
    return torch.where(up, torch.nextafter(t, torch.tensor(-math.inf)), t)


def _round_up32(v: np.ndarray) -> Tensor:
    return -_round_down32(-np.asarray(v, dtype=np.float64))


def _bound_min(prog: _Program, c: np.ndarray, time_limit: float, fallback: float,
               what: str) -> float:
    """Sound lower bound of ``min c @ scores`` (``fallback``: the IBP bound)."""
    vec, const = prog.objective(c)
    res = _solve(prog.model, vec, const, "outer", time_limit)
    if res.status == "infeasible":
        raise RuntimeError(
            "the exact MILP is infeasible, which a correct encoding never is: "
            f"please report this network ({what})"
        )
    if res.status == "timeout":
        warnings.warn(
            f"exact MILP hit its {time_limit:g} s time limit ({what}); using "
            f"{'the solver dual bound' if math.isfinite(res.lower) else 'the IBP bound'}",
            ExactTimeoutWarning, stacklevel=3,
        )
    return max(res.lower - prog.rounding(c), fallback)


def exact_bounds(bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None, *,
                 time_limit: float = DEFAULT_TIME_LIMIT,
                 max_binaries: int = DEFAULT_MAX_BINARIES,
                 need_upper: bool = True) -> tuple[Tensor, Tensor]:
    """``method="exact"``: bounds ``[B, M]`` of ``C @ scores`` (``C`` ``[B, M, K]``, None = scores).

    ``need_upper=False`` skips the maximisation MILPs (upper = IBP's upper).

    Each bound is the (dual-bound) optimum of the OUTER MILP, elementwise at
    least as tight as S-IBP. For the rate encoding it holds for the noise draw
    ``noise`` only. Raises ``ValueError`` when a sample's model needs more
    than ``max_binaries`` binaries.
    """
    prop = bnet.interval_propagation(x, threat, noise)
    s_lo, s_hi = readout_bounds(bnet.readout, prop)
    ibp_l, ibp_u = spec_interval(C, s_lo, s_hi)
    lower = ibp_l.detach().double().cpu().numpy().copy()
    upper = ibp_u.detach().double().cpu().numpy().copy()
    B = bnet.batch_size(x)
    for b in range(B):
        prog = _build(bnet, x, threat, noise, prop, b, max_binaries)
        K = prog.scores.c.size
        Cb = np.eye(K) if C is None else C[b].detach().double().cpu().numpy()
        for m in range(Cb.shape[0]):
            c = Cb[m]
            if not c.any():
                continue
            lo = _bound_min(prog, c, time_limit, lower[b, m], f"sample {b}, row {m}, min")
            lower[b, m] = lo
            if need_upper:
                upper[b, m] = -_bound_min(prog, -c, time_limit, -upper[b, m],
                                          f"sample {b}, row {m}, max")
    dev, dt = ibp_l.device, ibp_l.dtype
    lo_t = torch.maximum(_round_down32(lower).to(dev, dt), ibp_l.detach())
    hi_t = torch.minimum(_round_up32(upper).to(dev, dt), ibp_u.detach())
    return lo_t, hi_t


register_method("exact", exact_bounds)


# ----------------------------------------------------------------------- verify
@dataclass
class ExactResult:
    """Exact verification of one sample.

    Attributes:
        label: the true class y.
        margin_lower: SOUND lower bound of ``min_{j != y} score_y - score_j``
            over the threat set (for rate: for this noise draw only).
        margin_upper: that margin as the REAL network computes it on
            ``witness`` (an achieved value, so the true minimum lies in
            ``[margin_lower, margin_upper]``); ``inf`` without a witness.
        status: ``"exact"`` (a real forward pass reproduces the bound within
            ``tol`` plus the float32 rounding allowance of the scores,
            ``details["exact_tol"]``), ``"gap"`` (the threshold gap left them apart: see the
            module docstring) or ``"timeout"`` (a solve hit its time limit;
            ``margin_lower`` is then a dual / IBP bound).
        worst_class: the class j of the minimising margin (None if none solved).
        witness: the minimising input found: ``[1, ...]`` (direct / rate: feed
            ``bnet(witness, noise=noise)``) or frames ``[T, 1, ...]`` (event).
        noise: the rate-encoding draw ``[T, 1, ...]`` the witness needs, else None.
        num_binaries: binary variables of the MILP.
        time_s: wall time of this sample.
    """

    label: int
    margin_lower: float
    margin_upper: float
    status: str
    worst_class: int | None
    witness: Tensor | None
    noise: Tensor | None
    num_binaries: int
    time_s: float
    details: dict = field(default_factory=dict)

    @property
    def margin(self) -> float:
        """The exact minimum margin when ``status == "exact"`` (else a sound lower bound)."""
        return self.margin_lower

    @property
    def verified(self) -> bool:
        """The prediction is certified: the margin lower bound is STRICTLY positive."""
        return self.margin_lower > 0

    @property
    def counterexample(self) -> Tensor | None:
        """An input in the threat set the real network does not classify as y (margin <= 0)."""
        return self.witness if self.margin_upper <= 0 else None


def _witness(prog: _Program, sol: np.ndarray, x: Tensor, b: int) -> Tensor:
    """The input an MILP solution describes, shaped for ``bnet`` (batch of one)."""
    if prog.encoding == "direct":
        v = np.clip(sol[prog.input_cols], prog.lo, prog.hi)
        return torch.from_numpy(v).to(x.dtype).reshape((1, *prog.in_shape)).to(x.device)
    if prog.encoding == "rate":
        xv = prog.lo.copy()
        for i, r_sorted, cols in prog.rate_free:
            on = sol[cols] > 0.5
            if not on.any():
                continue  # x' = lo: below every free draw
            k = int(np.flatnonzero(on).max())  # chain: on is a prefix (by r)
            r_cut = r_sorted[k]
            above = r_sorted[r_sorted > r_cut]
            xv[i] = above.min() if above.size else prog.hi[i]
        # xv holds float32 values (a draw or a bound): exact in x's dtype
        return torch.from_numpy(xv).to(x.dtype).reshape((1, *prog.in_shape)).to(x.device)
    frames = prog.event_x.copy()
    free = prog.event_free
    frames[free] = np.round(sol[prog.event_cols[free]])
    T = frames.shape[0]
    return torch.from_numpy(frames).to(x.dtype).reshape((T, 1, *prog.in_shape)).to(x.device)


def _polish(prog: _Program, sol: np.ndarray, c: np.ndarray, target: float,
            time_limit: float) -> np.ndarray | None:
    """Direct input: keep the solution's spikes, push every free membrane away from θ.

    An LP (all binaries fixed) maximising ``s`` with spike on => ``U - θ >= s δ``,
    off => ``U - θ <= -s δ`` and objective ``<= target``. Returns the new
    solution when ``s >= 1`` (every free neuron at least its δ from θ).
    """
    model = prog.model
    if not model.thr:
        return None
    u, sc, th, _, _, _, delta = (np.concatenate(v) for v in zip(*model.thr, strict=True))
    on = sol[sc] > 0.5
    k = len(u)
    saved = (model.lb[:], model.ub[:], model.integer[:], model.n, model.rows[:], model.thr)
    try:
        scol = model.add_vars(np.zeros(1), 10.0, integer=False)[0]
        model.thr = []
        r = np.arange(k)
        sign = np.where(on, -1.0, 1.0)
        A = sp.csr_matrix((np.concatenate([np.ones(k), sign * delta]),
                           (np.concatenate([r, r]), np.concatenate([u, np.full(k, scol)]))),
                          shape=(k, model.n))
        model.add_rows(A, np.where(on, th, -np.inf), np.where(on, np.inf, th))
        vec, const = prog.objective(c)
        model.add_rows(sp.csr_matrix(vec[None]), -np.inf, target - const)
        fix = np.concatenate([np.round(sol), [0.0]])
        obj = np.zeros(model.n)
        obj[scol] = -1.0
        res = _solve(model, obj, 0.0, "outer", time_limit, fix=fix)
    finally:
        model.lb, model.ub, model.integer, model.n, model.rows, model.thr = saved
    if res.x is None or -res.value < 1.0:
        return None
    return res.x[:-1]


def _real_margins(bnet, w: Tensor, noise_b: Tensor | None, y: int) -> np.ndarray:
    with torch.no_grad():
        s = bnet(w, noise=noise_b)[0].double().cpu().numpy()
    return s[y] - s


@torch.no_grad()
def verify(bnet, x: Tensor, y: Tensor, eps, noise: Tensor | None = None,
           time_limit: float = DEFAULT_TIME_LIMIT, max_binaries: int = DEFAULT_MAX_BINARIES,
           tol: float = 1e-5, progress: bool = False) -> list[ExactResult]:
    """Exact minimum margin ``min_{j != y} score_y - score_j`` of every sample, with witnesses.

    Args:
        bnet: a :class:`BoundedSNN` (small: see ``max_binaries``).
        x: inputs ``[B, ...]`` (event: frames ``[T, B, ...]``).
        y: labels ``[B]``.
        eps: the threat (L-inf radius, or event flip mask / budget).
        noise: rate-encoding draw ``[T, B, ...]`` (default: the seeded draw);
            the result holds for this draw only.
        time_limit: seconds per MILP solve.
        max_binaries: ValueError when a sample's MILP needs more binaries.
        tol: how close the real margin of a witness must come to the sound
            bound for ``status == "exact"``.
        progress: show a tqdm bar over samples.

    Returns:
        One :class:`ExactResult` per sample. Classes whose IBP margin bound is
        already above the best achieved margin are not solved (they cannot be
        the minimum).
    """
    bnet.check_method_mode("exact")
    noise = bnet._prepare(x, noise)
    threat = bnet.threat(x, eps)
    prop = bnet.interval_propagation(x, threat, noise)
    C = bnet.margin_spec(x, y)
    s_lo, s_hi = readout_bounds(bnet.readout, prop)
    ibp = spec_interval(C, s_lo, s_hi)[0].double().cpu().numpy()
    results = []
    it = range(bnet.batch_size(x))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="exact", leave=False)
    for b in it:
        t0 = time.perf_counter()
        yb = int(y[b])
        prog = _build(bnet, x, threat, noise, prop, b, max_binaries)
        K = prog.scores.c.size
        noise_b = None if noise is None else noise[:, b:b + 1]
        clean = x[:, b:b + 1] if bnet.encoding == "event" else x[b:b + 1]
        best_w, best_m = clean, float(_real_margins(bnet, clean, noise_b, yb)[np.arange(K) != yb].min())
        best_j = None
        lowers: dict[int, float] = {}
        rounding: dict[int, float] = {}
        timed_out, solved = False, 0
        for j in sorted((j for j in range(K) if j != yb), key=lambda j: ibp[b, j]):
            if ibp[b, j] >= best_m:
                lowers[j] = float(ibp[b, j])  # cannot beat the achieved minimum
                continue
            c = np.zeros(K)
            c[yb], c[j] = 1.0, -1.0
            vec, const = prog.objective(c)
            res = _solve(prog.model, vec, const, "outer", time_limit)
            solved += 1
            if res.status == "infeasible":
                raise RuntimeError("the exact MILP is infeasible: please report this network")
            timed_out |= res.status == "timeout"
            rounding[j] = prog.rounding(c)
            lowers[j] = max(res.lower - rounding[j], float(ibp[b, j]))
            cands = []
            if res.x is not None:
                w = _witness(prog, res.x, x, b)
                m = _real_margins(bnet, w, noise_b, yb)
                cands.append((w, m))
                if m[j] > lowers[j] + tol + rounding[j]:  # the band let the MILP cheat: refine
                    sol = None
                    if bnet.encoding == "direct":
                        sol = _polish(prog, res.x, c, res.value + tol / 2, time_limit)
                    if sol is None:
                        inner = _solve(prog.model, vec, const, "inner", time_limit)
                        sol = inner.x
                    if sol is not None:
                        w2 = _witness(prog, sol, x, b)
                        cands.append((w2, _real_margins(bnet, w2, noise_b, yb)))
            for w, m in cands:
                mj = float(m[np.arange(K) != yb].min())
                if mj < best_m:
                    best_w, best_m = w, mj
                    best_j = int(np.flatnonzero(np.arange(K) != yb)[np.argmin(m[np.arange(K) != yb])])
        lower = min(lowers.values()) if lowers else math.inf
        if best_j is None and lowers:
            others = np.arange(K) != yb
            best_j = int(np.flatnonzero(others)[np.argmin(
                _real_margins(bnet, best_w, noise_b, yb)[others])])
        slack = tol + max(rounding.values(), default=0.0)
        status = "timeout" if timed_out else ("exact" if best_m <= lower + slack else "gap")
        results.append(ExactResult(
            label=yb, margin_lower=lower, margin_upper=best_m, status=status,
            worst_class=best_j, witness=best_w.clone(),
            noise=None if noise_b is None else noise_b.clone(),
            num_binaries=prog.model.n_bin, time_s=time.perf_counter() - t0,
            details={"solved": solved, "class_lower": lowers, "rounding": rounding,
                     "exact_tol": slack},
        ))
    return results


__all__ = [
    "DEFAULT_MAX_BINARIES",
    "DEFAULT_TIME_LIMIT",
    "ExactResult",
    "ExactTimeoutWarning",
    "exact_bounds",
    "verify",
]

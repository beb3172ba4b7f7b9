"""Building blocks of the exact verifier's mixed-integer program (:mod:`snncertify.exact`).

:class:`Model` holds the variables, linear rows and strict-threshold constraints
of one sample; :class:`Expr` is an affine expression of one per-sample tensor
with a bound on the float32 rounding of the real network. Each op encodes
itself (``op.milp_map`` for stateless ops, ``NeuronOp.encode_milp_seq`` for
neurons) with these blocks; :mod:`snncertify.exact` assembles and solves.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

#: largest dense ``n_out * n_in`` of one affine op's matrix (built from a basis)
MAX_AFFINE_ENTRIES = 20_000_000
_UNIT = 2.0**-24  # float32 unit roundoff


def gamma(k) -> np.ndarray:
    """Higham's ``γ_k = k u / (1 - k u)`` for float32 (``k`` may be an array)."""
    ku = np.asarray(k, dtype=np.float64) * _UNIT
    return ku / (1 - ku)


@dataclass
class Expr:
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


@dataclass(frozen=True)
class Band:
    """A membrane's variables of one step: columns ``cols``, bounds ``[lo, hi]`` and the
    float32 rounding band ``tau`` (all ``[n]``)."""

    cols: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    tau: np.ndarray


@dataclass(frozen=True)
class Spikes:
    """The spikes of one step: ``expr`` (None for :meth:`initial`); ``free`` ``[n]``: a
    binary variable (column ``cols``, 0 elsewhere), else fixed to ``value``."""

    expr: Expr | None
    free: np.ndarray
    value: np.ndarray
    cols: np.ndarray

    @staticmethod
    def initial(value: np.ndarray) -> Spikes:
        """Spikes fixed to ``value`` (e.g. ``R_1 = H(U_0 - θ)``), no expression."""
        n = value.size
        return Spikes(None, np.zeros(n, dtype=bool), value, np.zeros(n, dtype=np.int64))


class Model:
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
        #: the neuron layer being encoded (its index among the net's neuron layers)
        self.layer = 0
        #: per entry of ``thr``: the neuron layer of its spikes
        self.thr_layer: list[int] = []

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Model]:
        """Variables, rows and thresholds added inside are gone on exit (the model as it was)."""
        saved = (self.lb[:], self.ub[:], self.integer[:], self.n, self.n_bin, self.rows[:],
                 self.thr[:], self.thr_layer[:])
        try:
            yield self
        finally:
            (self.lb, self.ub, self.integer, self.n, self.n_bin, self.rows, self.thr,
             self.thr_layer) = saved

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

    def var_expr(self, cols: np.ndarray, shape: tuple[int, ...], binary: bool = False) -> Expr:
        k = len(cols)
        A = sp.csr_matrix((np.ones(k), (np.arange(k), cols)), shape=(k, self.n))
        return Expr(A, np.zeros(k), shape, binary)

    def mixed_expr(self, free: np.ndarray, cols: np.ndarray, const: np.ndarray,
                   shape: tuple[int, ...], binary: bool) -> Expr:
        """Rows ``free`` are the variables ``cols`` (in order), the others ``const``."""
        n = free.size
        rows = np.flatnonzero(free)
        A = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, self.n))
        return Expr(A, np.where(free, 0.0, const).astype(np.float64), shape, binary)

    def bounds_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cat = (lambda v: np.concatenate(v)) if self.lb else (lambda v: np.zeros(0))
        return cat(self.lb), cat(self.ub), (np.concatenate(self.integer) if self.integer
                                            else np.zeros(0, dtype=np.int8))

    def expr_bounds(self, e: Expr) -> tuple[np.ndarray, np.ndarray]:
        lb, ub, _ = self.bounds_arrays()
        A = self.pad(e.A)
        pos, neg = A.maximum(0), A.minimum(0)
        return pos @ lb + neg @ ub + e.c, pos @ ub + neg @ lb + e.c

    def add_thresholds(self, ucols, scols, theta, mlo, mhi, tau, delta) -> None:
        self.thr.append((ucols, scols, theta, mlo, mhi, tau, delta))
        self.thr_layer.append(self.layer)

    def add_product(self, qcols: np.ndarray, rcols: np.ndarray, ucols: np.ndarray,
                    lo: np.ndarray, hi: np.ndarray) -> None:
        """The exact big-M encoding of ``q = r u`` for binary ``r`` and ``u`` in ``[lo, hi]``
        (McCormick's four rows, exact at a binary ``r``); all arguments ``[k]``."""
        k = len(qcols)
        if not k:
            return
        r = np.arange(k)
        rows = np.concatenate([r, r, r + k, r + k, r + 2 * k, r + 2 * k, r + 2 * k,
                               r + 3 * k, r + 3 * k, r + 3 * k])
        cols = np.concatenate([qcols, rcols, qcols, rcols, qcols, ucols, rcols,
                               qcols, ucols, rcols])
        vals = np.concatenate([np.ones(k), -hi, np.ones(k), -lo, np.ones(k),
                               -np.ones(k), -lo, np.ones(k), -np.ones(k), -hi])
        A = sp.csr_matrix((vals, (rows, cols)), shape=(4 * k, self.n))
        row_lo = np.concatenate([np.full(k, -np.inf), np.zeros(k), np.full(k, -np.inf), -hi])
        row_hi = np.concatenate([np.zeros(k), np.full(k, np.inf), -lo, np.full(k, np.inf)])
        self.add_rows(A, row_lo, row_hi)

    def add_spikes(self, mem: Band, theta: np.ndarray, spk_lo: np.ndarray, spk_hi: np.ndarray,
                   shape: tuple[int, ...]) -> Spikes:
        """The spikes ``S = H(U - θ)`` of one step: a binary where the interval bounds
        ``[spk_lo, spk_hi]`` ``[n]`` leave the spike free, with the strict-threshold rows
        (gap ``δ = max(4 τ, 1e-6 (1 + |θ|))``), else the constant ``spk_lo``."""
        free = (spk_lo < 0.5) & (spk_hi > 0.5)
        scols = self.add_vars(np.zeros(int(free.sum())), 1.0, integer=True)
        if free.any():
            f = np.flatnonzero(free)
            delta = np.maximum(4 * mem.tau[f], 1e-6 * (1 + np.abs(theta[f])))
            self.add_thresholds(mem.cols[f], scols, theta[f], mem.lo[f], mem.hi[f], mem.tau[f],
                                delta)
        cols = np.zeros(free.size, dtype=np.int64)
        cols[free] = scols
        return Spikes(self.mixed_expr(free, scols, spk_lo, shape, True), free, spk_lo, cols)

    def threshold_arrays(self) -> tuple[np.ndarray, ...]:
        """Per free spike, concatenated over :attr:`thr`: U column, S column, θ, M_lo, M_hi,
        τ, δ and its neuron layer (each ``[n_free]``)."""
        layers = [np.full(len(e[0]), g) for e, g in zip(self.thr, self.thr_layer, strict=True)]
        return (*(np.concatenate(v) for v in zip(*self.thr, strict=True)),
                np.concatenate(layers))

    def threshold_rows(self, mode: str) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """Big-M rows of the strict threshold: ``mode`` ``"outer"`` (band τ) or ``"inner"`` (gap δ).

        on side : ``U - (a + θ - M_lo) S >= M_lo``  (S=1: ``U >= θ + a``)
        off side: ``U - (M_hi - θ - b) S <= θ + b`` (S=0: ``U <= θ + b``)
        with ``a = -τ, b = τ`` (outer) or ``a = δ, b = -δ`` (inner).
        """
        if not self.thr:
            return sp.csr_matrix((0, self.n)), np.zeros(0), np.zeros(0)
        u, s, th, ml, mh, tau, delta, _ = self.threshold_arrays()
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
def affine_matrix(op, in_shape: tuple[int, ...]):
    """``(M csr [n_out, n_in], bias [n_out], abs_const [n_out], out_shape)`` of a linear op.

    Computed in float64 from the op's float32 parameters. ``abs_const`` bounds
    the magnitude of the constant terms the float32 op rounds with (``|b|``, or
    the op's own ``milp_abs_const``).
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
        abs_const = op64.milp_abs_const(in_shape)
        abs_const = zero.reshape(-1).abs() if abs_const is None else abs_const.reshape(-1)
    M = sp.csr_matrix(out.T.numpy())
    M.eliminate_zeros()
    return M, zero.reshape(-1).numpy().copy(), abs_const.numpy().copy(), tuple(zero.shape[1:])


def pool_membership(op, in_shape: tuple[int, ...]):
    """``(W csr [n_out, n_in] 0/1 window membership, out_shape)`` of a MaxPool2d."""
    n_in = math.prod(in_shape)
    with torch.no_grad():
        basis = torch.eye(n_in, dtype=torch.float64).reshape((n_in, *in_shape))
        out = op.module(basis)
    out_shape = tuple(out.shape[1:])
    W = sp.csr_matrix((out.reshape(n_in, -1).T.numpy() > 0.5).astype(np.float64))
    return W, out_shape


def encode_affine(model: Model, op, in_shape: tuple[int, ...], moves: bool = False,
                  fan_factor: int = 1):
    """The per-step map ``Expr -> Expr`` of a linear op (matrix built once).

    ``moves``: the op only moves values (Flatten, Identity): exact, 0/1 stays 0/1.
    Float32 dot products of fan-in k, in any summation order, are off by at most
    ``γ_{k+4} (|M| |z| + |const|)``; ``fan_factor`` 2 doubles k for ops whose fast
    algorithms (e.g. Winograd convolutions) are not plain sums.
    """
    M, bias, abs_const, out_shape = affine_matrix(op, in_shape)
    absM = abs(M)
    gam = gamma(fan_factor * (np.diff(M.indptr) + 4))

    def apply(e: Expr) -> Expr:
        err = absM @ e.error()
        if not moves:
            zl, zu = model.expr_bounds(e)
            err = err + gam * (absM @ (np.maximum(np.abs(zl), np.abs(zu)) + e.error())
                               + abs_const)
        return Expr((M @ e.A).tocsr(), M @ e.c + bias, out_shape, moves and e.binary, err)

    return apply


def to_np(t: Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()

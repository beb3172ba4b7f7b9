"""Exact verification of SMALL spiking networks as a mixed-integer linear program.

``method="exact"`` and :func:`verify` encode the unrolled network over the
threat set as a MILP and solve it with SciPy's HiGHS (``scipy.optimize.milp``).

The model (per sample, over all T steps and every neuron layer (``snn.Leaky``, ``snn.Synaptic``)):

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
  constants are the IBP membrane bounds of ``bnet.interval_propagation``;
* Synaptic: the synaptic current ``syn_t = α syn_{t-1} + I_t`` as affine
  expressions (its float32 rounding tracked), then the Leaky encoding on it;
  its zero reset ``U_t = m_t - R_t m_t`` with ``Q_t = R_t m_t`` by big-M.

Each op encodes itself (``op.milp_map``, ``encode_milp_seq``; blocks in
:mod:`snncertify.milp`); this module builds the inputs, assembles and solves.

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

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import Tensor

from .encoding import MilpInputs
from .methods import register_method, spec_interval
from .milp import Expr, Model, gamma
from .progress import progress_bar
from .readout import readout_bounds
from .threat import Threat

DEFAULT_MAX_BINARIES = 5000
DEFAULT_TIME_LIMIT = 60.0


class ExactTimeoutWarning(RuntimeWarning):
    """A MILP solve hit its time limit: the dual bound (or IBP) was used instead."""


# ---------------------------------------------------------------- the program
@dataclass
class _Program:
    """One sample's MILP: model, score expressions and its input variables."""

    model: Model
    scores: Expr
    inputs: MilpInputs
    num_steps: int = 0
    #: per neuron layer, per step: its spike expressions (a binary's column where free)
    spikes: list[list[Expr]] = field(default_factory=list)

    def objective(self, c: np.ndarray) -> tuple[np.ndarray, float]:
        """Linear objective ``c @ scores`` as ``(vector over vars, constant)``."""
        A = self.model.pad(self.scores.A)
        return np.asarray(A.T @ c).ravel(), float(c @ self.scores.c)

    def rounding(self, c: np.ndarray) -> float:
        """Bound on ``|c @ (float32 scores - real-arithmetic scores)|``."""
        return float(np.abs(c) @ self.scores.error())


def _build(bnet, x: Tensor, threat: Threat, noise: Tensor | None, prop, b: int,
           max_binaries: int) -> _Program:
    """Build the MILP of sample ``b`` (``prop``: the batch's IBP propagation)."""
    model = Model(max_binaries)
    T = bnet.steps_for(x)
    inputs = bnet.encoding.milp_inputs(model, x, threat, noise, b, T)
    prog = _Program(model, None, inputs, num_steps=T)  # type: ignore[arg-type]
    static, seq = inputs.static, inputs.seq

    # ---- layers: each op encodes itself (snncertify.milp blocks)
    layer = 0
    last_mem: list[Expr] | None = None
    for op in bnet.ops:
        if op.stateful:
            rec = prop.layers[layer]
            model.layer = layer
            layer += 1
            cur = [static] * T if seq is None else seq
            seq, last_mem = op.encode_milp_seq(model, cur, rec, b, T)
            prog.spikes.append(seq)
            static = None
        else:
            apply = op.milp_map(model, (static if seq is None else seq[0]).shape)
            if seq is None:
                static = apply(static)
            else:
                seq = [apply(e) for e in seq]

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
    err = w * (sum(e.error() for e in outs) + gamma(T + 1) * mag)
    prog.scores = Expr(A.tocsr(), c, outs[0].shape, err=err)
    return prog


# ---------------------------------------------------------------------- solving
@dataclass
class _Solve:
    status: str  # "optimal", "timeout" (a time or node limit), "infeasible"
    lower: float  # sound lower bound of the minimum (-inf if none)
    value: float  # incumbent objective (inf if none)
    x: np.ndarray | None


def _solve(model: Model, c: np.ndarray, const: float, mode: str, time_limit: float,
           fix: np.ndarray | None = None, node_limit: int | None = None) -> _Solve:
    """Minimise ``c @ v + const`` over the model (``mode``: ``"outer"`` / ``"inner"``);
    ``fix`` ``[n_vars]``: values of the binaries (NaN: free; continuous entries unused);
    ``node_limit``: branch-and-bound nodes before stopping (a limit that does not
    depend on the machine's speed, unlike ``time_limit``)."""
    A, lo, hi = model.assemble(mode)
    lb, ub, integ = model.bounds_arrays()
    if fix is not None:  # binaries fixed to ``fix`` (NaN: left free)
        lb, ub = lb.copy(), ub.copy()
        ic = (integ > 0) & ~np.isnan(fix)
        lb[ic] = ub[ic] = fix[ic]
    cons = [LinearConstraint(A, lo, hi)] if A.shape[0] else []
    opts = {"time_limit": float(time_limit), "mip_rel_gap": 0.0, "mip_abs_gap": 0.0,
            "presolve": True}
    if node_limit is not None:
        opts["node_limit"] = int(node_limit)
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
    if res.status == 1 or (res.status == 4 and "Solution limit" in str(res.message)):
        return _Solve("timeout", dual, value, x)  # time or node limit (HiGHS status 16)
    raise RuntimeError(f"HiGHS failed on the exact MILP: {res.message}")


def ibp_margin_lower(bnet, x: Tensor, y: Tensor, prop) -> np.ndarray:
    """IBP's lower bounds ``[B, K]`` (float64) of the margins ``score_y - score_j`` from the
    propagation ``prop`` of ``x`` (row ``y`` is 0)."""
    s_lo, s_hi = readout_bounds(bnet.readout, prop)
    return spec_interval(bnet.margin_spec(x, y), s_lo, s_hi)[0].double().cpu().numpy()


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
    u, sc, th, _, _, _, delta, _ = model.threshold_arrays()
    on = sol[sc] > 0.5
    k = len(u)
    with model.scratch():
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
    if res.x is None or -res.value < 1.0:
        return None
    return res.x[:-1]


def _real_margins(bnet, w: Tensor, noise_b: Tensor | None, y: int) -> np.ndarray:
    with torch.no_grad():
        s = bnet(w, noise=noise_b)[0].double().cpu().numpy()
    return s[y] - s


@dataclass(frozen=True)
class ExactOptions:
    """Settings of :func:`verify`.

    ``time_limit``: seconds per MILP solve; ``max_binaries``: ValueError when a
    sample's MILP needs more binaries; ``tol``: how close the real margin of a
    witness must come to the sound bound for ``status == "exact"``;
    ``progress``: a tqdm bar over samples.
    """

    time_limit: float = DEFAULT_TIME_LIMIT
    max_binaries: int = DEFAULT_MAX_BINARIES
    tol: float = 1e-5
    progress: bool = False


class _SampleSearch:
    """The exact minimum margin of one sample: every class's MILP, witnesses re-run."""

    def __init__(self, bnet, prog: _Program, clean: Tensor, noise_b: Tensor | None, y: int,
                 opts: ExactOptions) -> None:
        self.bnet, self.prog, self.noise_b, self.y, self.opts = bnet, prog, noise_b, y, opts
        self.others = np.arange(prog.scores.c.size) != y
        self.best_w, self.best_m = clean, float(self.margins(clean)[self.others].min())
        self.best_j: int | None = None
        self.lowers: dict[int, float] = {}
        self.rounding: dict[int, float] = {}
        self.timed_out, self.solved = False, 0

    def margins(self, w: Tensor) -> np.ndarray:
        return _real_margins(self.bnet, w, self.noise_b, self.y)

    def consider(self, w: Tensor, m: np.ndarray) -> None:
        mj = float(m[self.others].min())
        if mj < self.best_m:
            self.best_w, self.best_m = w, mj
            self.best_j = int(np.flatnonzero(self.others)[np.argmin(m[self.others])])

    def solve_class(self, j: int, ibp_j: float) -> None:
        """Bound (and try to reach) the margin against class ``j`` (IBP bound ``ibp_j``)."""
        if ibp_j >= self.best_m:
            self.lowers[j] = ibp_j  # cannot beat the achieved minimum
            return
        prog, tl = self.prog, self.opts.time_limit
        c = np.zeros(self.others.size)
        c[self.y], c[j] = 1.0, -1.0
        vec, const = prog.objective(c)
        res = _solve(prog.model, vec, const, "outer", tl)
        self.solved += 1
        if res.status == "infeasible":
            raise RuntimeError("the exact MILP is infeasible: please report this network")
        self.timed_out |= res.status == "timeout"
        self.rounding[j] = prog.rounding(c)
        self.lowers[j] = max(res.lower - self.rounding[j], ibp_j)
        if res.x is None:
            return
        w = prog.inputs.witness(res.x)
        m = self.margins(w)
        self.consider(w, m)
        if m[j] > self.lowers[j] + self.opts.tol + self.rounding[j]:  # the band let it cheat
            sol = None
            if prog.inputs.continuous:
                sol = _polish(prog, res.x, c, res.value + self.opts.tol / 2, tl)
            if sol is None:
                sol = _solve(prog.model, vec, const, "inner", tl).x
            if sol is not None:
                w2 = prog.inputs.witness(sol)
                self.consider(w2, self.margins(w2))

    def result(self, seconds: float) -> ExactResult:
        lower = min(self.lowers.values()) if self.lowers else math.inf
        if self.best_j is None and self.lowers:
            m = self.margins(self.best_w)
            self.best_j = int(np.flatnonzero(self.others)[np.argmin(m[self.others])])
        slack = self.opts.tol + max(self.rounding.values(), default=0.0)
        exact = self.best_m <= lower + slack
        status = "timeout" if self.timed_out else ("exact" if exact else "gap")
        nb = self.noise_b
        return ExactResult(
            label=self.y, margin_lower=lower, margin_upper=self.best_m, status=status,
            worst_class=self.best_j, witness=self.best_w.clone(),
            noise=None if nb is None else nb.clone(),
            num_binaries=self.prog.model.n_bin, time_s=seconds,
            details={"solved": self.solved, "class_lower": self.lowers,
                     "rounding": self.rounding, "exact_tol": slack},
        )


def prepare_verify(bnet, method: str, x: Tensor, eps, noise: Tensor | None,
                   start: Tensor | None) -> tuple[Tensor | None, Threat]:
    """The checks and set-up a complete verifier (``exact``, ``bab``) starts with: the
    wrapper's mode, the noise draw and the threat of ``x`` at ``eps``; ``start``
    (candidate counterexamples) must be valid inputs shaped like ``x`` inside the
    threat set (ValueError otherwise). Returns ``(noise, threat)``."""
    bnet.check_method_mode(method)
    noise = bnet.prepare(x, noise)
    threat = bnet.threat(x, eps)
    if start is not None:
        bnet.encoding.check_input(start, "start")
        if start.shape != x.shape or not bool(threat.contains(x, start).all()):
            raise ValueError("verify: start must be shaped like x and lie in the threat set")
    return noise, threat


@torch.no_grad()
def verify(bnet, x: Tensor, y: Tensor, eps, noise: Tensor | None = None,
           start: Tensor | None = None, **options) -> list[ExactResult]:
    """Exact minimum margin ``min_{j != y} score_y - score_j`` of every sample, with witnesses.

    Args:
        bnet: a :class:`BoundedSNN` (small: see ``max_binaries``).
        x: inputs ``[B, ...]`` (event: frames ``[T, B, ...]``).
        y: labels ``[B]``.
        eps: the threat (L-inf radius, or event flip mask / budget).
        noise: rate-encoding draw ``[T, B, ...]`` (default: the seeded draw);
            the result holds for this draw only.
        start: a warm start shaped like ``x`` (e.g. an attack's outputs), each in the
            threat set (ValueError otherwise): where its real margin is below the
            clean one it is the first witness, so classes whose IBP bound is already
            above it are not solved.
        options: the fields of :class:`ExactOptions` (``time_limit``,
            ``max_binaries``, ``tol``, ``progress``), or ``options=ExactOptions(...)``.

    Returns:
        One :class:`ExactResult` per sample. Classes whose IBP margin bound is
        already above the best achieved margin are not solved (they cannot be
        the minimum).
    """
    opts = options_of(ExactOptions, options)
    noise, threat = prepare_verify(bnet, "exact", x, eps, noise, start)
    prop = bnet.interval_propagation(x, threat, noise)
    ibp = ibp_margin_lower(bnet, x, y, prop)
    it = range(bnet.batch_size(x))
    if opts.progress:
        it = progress_bar(it, desc="exact", unit="sample", leave=False)
    results = []
    for b in it:
        t0 = time.perf_counter()
        prog = _build(bnet, x, threat, noise, prop, b, opts.max_binaries)
        sl = slice(b, b + 1)
        search = _SampleSearch(bnet, prog, bnet.encoding.take(x, sl),
                               None if noise is None else noise[:, sl], int(y[b]), opts)
        if start is not None:
            w = bnet.encoding.take(start, sl)
            search.consider(w, search.margins(w))
        for j in sorted(np.flatnonzero(search.others), key=lambda j: ibp[b, j]):
            search.solve_class(int(j), float(ibp[b, j]))
        results.append(search.result(time.perf_counter() - t0))
    return results


def options_of(cls, options: dict, what: str = "verify"):
    """An options dataclass ``cls`` from keyword ``options``: its fields, or
    ``options=cls(...)`` alone; ValueError naming unknown fields."""
    if "options" in options:
        opts = options.pop("options")
        if options:
            raise ValueError(f"pass options={cls.__name__}(...) or its fields, not both: {options}")
        return opts
    try:
        return cls(**options)
    except TypeError:
        known = sorted(cls.__dataclass_fields__)
        raise ValueError(f"{what}: unknown option(s) {sorted(set(options) - set(known))}; "
                         f"known: {known}") from None


__all__ = [
    "DEFAULT_MAX_BINARIES",
    "DEFAULT_TIME_LIMIT",
    "ExactOptions",
    "ExactResult",
    "ExactTimeoutWarning",
    "exact_bounds",
    "verify",
]

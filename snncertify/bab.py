"""Branch and bound over spikes: a complete verifier for spiking networks.

``method="bab"`` and :func:`verify` split the threat set of one sample into
subdomains by the value of single spikes and bound each subdomain with the
linear methods, until every subdomain is proved, a counterexample is found, or
the sample's time limit is reached.

* **Branching.** A subdomain is a box on the membranes of every neuron layer at
  every step, inside the root bounds. A (layer, step, neuron) whose membrane
  interval ``[l, u]`` straddles the threshold (``l <= θ < u``) is UNSTABLE: its
  spike is either 0 (``U <= θ``: the child keeps ``[l, θ]``) or 1 (``U > θ``:
  ``[nextafter(θ), u]``, the smallest float32 above θ, so the spike is 1 in the
  strict Heaviside of the real network). Every float32 forward of the real
  network on an input of the parent falls in one of the two children, so the
  split loses nothing.
* **Bounding.** Each child's membrane boxes are pushed through the network by
  S-IBP intersected with them at every step (``propagate.interval`` with
  ``mem_bounds``), which also tightens everything downstream of the split; the
  margins are then bounded by one CROWN back-substitution with those
  intermediate bounds (the split neuron's relaxation is one of its two linear
  pieces). A child whose box is empty somewhere (``l > u``) contains no input
  and is discarded. The root's intermediate bounds are full CROWN's (refined
  membranes), and every child's bound is at least its parent's.
* **Branching heuristic** (``branching``): ``"causal"`` (default) splits the
  unstable neuron of the EARLIEST time step (then the earliest layer) whose
  interval straddles θ most evenly (largest ``min(θ - l, u - θ)``): a spike at
  step t changes its layer from t on and every later layer, so early splits
  tighten the most bounds. ``"width"`` takes the widest straddling interval of
  any step and layer.
* **Leaves.** A subdomain with at most ``leaf_unstable`` unstable spikes is
  handed to the exact verifier's MILP (:mod:`snncertify.exact`) with every
  spike the subdomain decides fixed: its dual bound proves the leaf, or its
  solution (and the INNER model's) is re-run through the real network as a
  counterexample. With ``leaf_unstable=0`` a leaf's spikes are all fixed and
  the MILP is an LP (or a small MILP over input binaries for rate / event).
* **Falsification.** The clean input, the ``start`` points (e.g. an attack's
  outputs) and every leaf solution are re-run through the real snnTorch
  network; a sample is ``falsified`` only when that forward pass gives a margin
  ``<= 0`` (a tie is wrong).
* **Batching.** The lowest-bound subdomains are split together and all their
  children bounded in one call (batch = children), as many as the memory
  budget allows (:mod:`snncertify.budget`, CROWN-IBP's cost model).

Verdicts per sample (:class:`BabResult`): ``verified`` (every subdomain's
margin lower bound > 0, or empty), ``falsified`` (a re-checked counterexample),
``unknown`` (time limit, domain limit, or a leaf the MILP's threshold band
leaves undecided). For the rate encoding every verdict holds for the noise
draw used.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from . import crown, exact, propagate
from .budget import parse_budget, plan_chunks
from .methods import register_method, spec_interval
from .progress import progress_bar
from .readout import readout_bounds
from .threat import Threat

BRANCHING = ("causal", "output", "width")


@dataclass(frozen=True)
class BabOptions:
    """Settings of :func:`verify` and ``method="bab"``.

    Attributes:
        time_limit: seconds per sample (every bound call and MILP together).
        batch: children bounded per call, at most (the memory budget may lower it).
        branching: ``"causal"`` or ``"width"`` (module docstring).
        leaf_unstable: subdomains with at most this many unstable spikes go to the MILP.
        max_domains: open subdomains at most; beyond it the sample is ``unknown``.
        max_binaries: a sample whose MILP needs more binaries gets no MILP leaves
            (its leaves are split further, and a fully split leaf is ``unknown``).
        node_limit: branch-and-bound nodes per leaf MILP solve.
        root: intermediate bounds of the root, ``"crown"`` (refined) or ``"crown-ibp"``.
        beta_iterations, beta_lr: Adam steps (0: none) and step size of the split
            multipliers β per bound call.
        progress: a tqdm bar over samples.
    """

    time_limit: float = 30.0
    batch: int = 64
    branching: str = "causal"
    leaf_unstable: int = 16
    max_domains: int = 20000
    max_binaries: int = 20000
    node_limit: int = 2000
    root: str = "crown"
    beta_iterations: int = 8
    beta_lr: float = 0.1
    progress: bool = False

    def __post_init__(self) -> None:
        if self.branching not in BRANCHING:
            raise ValueError(f"branching must be one of {BRANCHING}, got {self.branching!r}")
        if self.root not in ("crown", "crown-ibp"):
            raise ValueError(f"root must be 'crown' or 'crown-ibp', got {self.root!r}")
        if not (self.time_limit > 0 and self.batch >= 1 and self.max_domains >= 1
                and self.node_limit >= 1 and self.leaf_unstable >= 0
                and self.beta_iterations >= 0 and self.beta_lr > 0):
            raise ValueError("BabOptions: time_limit > 0, batch, max_domains, node_limit >= 1, "
                             "leaf_unstable >= 0, beta_iterations >= 0 and beta_lr > 0 "
                             "are required")


@dataclass
class BabResult:
    """Branch and bound on one sample.

    Attributes:
        label: the true class y.
        status: ``"verified"``, ``"falsified"`` or ``"unknown"``.
        margin_lower: a SOUND lower bound of ``min_{j != y} score_y - score_j`` over the
            threat set: the smallest bound over the final partition into subdomains
            (``> 0`` when verified).
        margin_upper: the real network's margin at ``counterexample`` (``<= 0`` when
            falsified), else at the best point seen (``inf`` if none).
        counterexample: an input in the threat set the real network does not classify as
            y (``[1, ...]``, event: ``[T, 1, ...]``), or None.
        domains: subdomains bounded; ``depth``: the most splits on one path.
        leaves: MILP leaf solves.
        reason: why the sample is ``unknown`` (else ``""``).
        time_s: wall time of this sample.
    """

    label: int
    status: str
    margin_lower: float
    margin_upper: float
    counterexample: Tensor | None
    domains: int
    depth: int
    leaves: int
    reason: str
    time_s: float

    @property
    def verified(self) -> bool:
        return self.status == "verified"

    @property
    def falsified(self) -> bool:
        return self.status == "falsified"


# ------------------------------------------------------------------ subdomains
@dataclass
class _Domain:
    """One subdomain: membrane boxes per neuron op (``lo``/``hi`` ``[T, n]``), its
    splits (``sign`` ``[T, n]``: +1 spike fixed to 1, -1 to 0, 0 not split), the
    lower bounds ``[R]`` of its margin rows, and its depth."""

    lo: dict[int, Tensor]
    hi: dict[int, Tensor]
    sign: dict[int, Tensor]
    rows: Tensor
    depth: int

    @property
    def bound(self) -> float:
        return float(self.rows.min())


class _Bounder:
    """Bounds batches of subdomains of one sample (``problem``: the sample's CROWN
    problem, batch 1; ``spec``: its margin rows ``[1, R, K]``)."""

    def __init__(self, bnet, problem: crown.Problem, spec: Tensor, opts: BabOptions) -> None:
        self.bnet, self.problem, self.spec = bnet, problem, spec
        self.iterations, self.lr = opts.beta_iterations, opts.beta_lr
        self.neurons = crown.neuron_indices(problem.ops)
        self.thr = {}
        self.shapes = {}
        for i in self.neurons:
            shape = problem.in_shapes[i]
            op = problem.ops[i]
            with torch.no_grad():
                th = torch.broadcast_to(op.threshold().detach(), shape).reshape(-1)
            self.thr[i] = th.to(problem.lo.device, problem.lo.dtype)
            self.shapes[i] = shape

    def expand(self, d: int) -> crown.Problem:
        """The problem for ``d`` copies of the sample (views, no copies)."""
        p = self.problem
        axis = 0 if p.static else 1

        def rep(v: Tensor | None) -> Tensor | None:
            if v is None:
                return None
            shape = list(v.shape)
            shape[axis] = d
            return v.expand(shape)

        x0 = None if p.x0 is None else p.x0.expand((p.x0.shape[0], d, *p.x0.shape[2:]))
        pad = None if p.out_pad is None else p.out_pad.expand(
            (p.out_pad.shape[0], d, *p.out_pad.shape[2:]))
        return replace(p, lo=rep(p.lo), hi=rep(p.hi), x0=x0, out_pad=pad, batch=d, plan=None)

    def bound(self, lo: dict[int, Tensor], hi: dict[int, Tensor], sign: dict[int, Tensor]
              ) -> tuple[Tensor, Tensor, dict[int, Tensor], dict[int, Tensor]]:
        """Bound ``D`` subdomains (boxes ``[D, T, n]`` per neuron op, splits ``sign`` likewise).

        Returns ``(rows [D, R], empty [D], lo, hi)``: the margin rows' lower bounds,
        which subdomains are empty, and the tightened boxes."""
        d = next(iter(lo.values())).shape[0]
        problem = self.expand(d)
        T = problem.num_steps
        mem_bounds = {}
        for i in self.neurons:
            shape = (d, *self.shapes[i])
            mem_bounds[i] = ([lo[i][:, t].reshape(shape) for t in range(T)],
                             [hi[i][:, t].reshape(shape) for t in range(T)])
        prop = propagate.interval(problem.ops, problem.lo, problem.hi, problem.static, T,
                                  problem.slack, mem_bounds=mem_bounds)
        inter = crown.Intermediate.of(problem.ops, prop)
        new_lo, new_hi = {}, {}
        empty = torch.zeros(d, dtype=torch.bool, device=problem.lo.device)
        for i in self.neurons:
            new_lo[i] = torch.stack(inter.mem_l[i], 1).reshape(d, T, -1)
            new_hi[i] = torch.stack(inter.mem_u[i], 1).reshape(d, T, -1)
            empty |= (new_lo[i] > new_hi[i]).flatten(1).any(1)
        spec = self.spec.expand((d, *self.spec.shape[1:]))
        ibp_l, _ = spec_interval(spec, *readout_bounds(self.bnet.readout, prop))
        rows = self.split_bound(problem, inter, spec, sign)
        return torch.maximum(rows, ibp_l), empty, new_lo, new_hi

    def split_bound(self, problem: crown.Problem, inter: crown.Intermediate, spec: Tensor,
                    sign: dict[int, Tensor]) -> Tensor:
        """CROWN's lower bounds ``[D, R]`` of the rows over the subdomains, with the split
        constraints ``g = sign (U - θ) >= 0`` added as ``-β g`` (β >= 0 per split, row and
        subdomain, optimised by Adam; β = 0 is plain CROWN): for every β the bound holds
        on the subdomain, so the best iterate is returned."""
        with torch.no_grad():
            best, _ = crown.output_pass(self.bnet, problem, inter, spec, crown.SCROWN)
        active = {i: v for i, v in sign.items() if bool(v.any())}
        if not active or self.iterations == 0:
            return best
        d, R = spec.shape[:2]
        T = problem.num_steps
        ref = problem.lo
        sgn = {i: v.permute(1, 0, 2).unsqueeze(2).to(ref.dtype) for i, v in active.items()}
        betas = {i: torch.zeros((T, d, R, v.shape[-1]), dtype=ref.dtype, device=ref.device,
                                requires_grad=True) for i, v in sgn.items()}
        opt = torch.optim.Adam(list(betas.values()), lr=self.lr)
        for _ in range(self.iterations):
            with torch.enable_grad():
                terms, const, mag = {}, 0.0, 0.0
                for i, v in sgn.items():
                    b = betas[i].clamp(min=0) * v  # β sign: [T, D, R, n]
                    terms[i] = (-b).reshape((T, d, R, *self.shapes[i]))
                    const = const + (b * self.thr[i]).sum((0, 3))
                    mag = mag + (b * self.thr[i]).abs().sum((0, 3))
                bound, _ = crown.output_pass(self.bnet, problem, inter, spec, crown.SCROWN,
                                             terms)
                bound = bound + const - problem.slack * mag
                grads = torch.autograd.grad(-bound.sum(), list(betas.values()))
            best = torch.maximum(best, bound.detach())
            for b, g in zip(betas.values(), grads, strict=True):
                b.grad = g
            opt.step()
        return best

    def unstable(self, lo: dict[int, Tensor], hi: dict[int, Tensor]) -> dict[int, Tensor]:
        """Bool ``[D, T, n]`` per neuron op: the interval straddles the threshold."""
        return {i: (lo[i] <= self.thr[i]) & (hi[i] > self.thr[i]) for i in self.neurons}


def _choose(bounder: _Bounder, lo: dict[int, Tensor], hi: dict[int, Tensor], rule: str
            ) -> list[tuple[int, int, int] | None]:
    """The branching spike ``(op index, step, neuron)`` of each of ``D`` subdomains
    (boxes ``[D, T, n]``; None: nothing left unstable), by the rule ``rule``."""
    unstable = bounder.unstable(lo, hi)
    neurons = bounder.neurons
    d = next(iter(lo.values())).shape[0]
    scores = {}
    for i in neurons:
        th = bounder.thr[i]
        s = hi[i] - lo[i] if rule == "width" else torch.minimum(th - lo[i], hi[i] - th)
        scores[i] = torch.where(unstable[i], s, torch.full_like(s, -math.inf))
    picks: list[tuple[int, int, int] | None] = []
    if rule in ("causal", "output"):
        order = neurons if rule == "causal" else neurons[::-1]
        has = torch.stack([unstable[i].any(2) for i in order], 2)  # [D, T, L]
        if rule == "output":  # the last layer first, then the earliest step
            has = has.transpose(1, 2)
        has = has.flatten(1)
        first = has.to(torch.int8).argmax(1)  # the first (step, layer) / (layer, step) with one
        T = lo[neurons[0]].shape[1]
        for k in range(d):
            if not bool(has[k, first[k]]):
                picks.append(None)
                continue
            if rule == "causal":
                t, layer = divmod(int(first[k]), len(order))
            else:
                layer, t = divmod(int(first[k]), T)
            i = order[layer]
            picks.append((i, t, int(scores[i][k, t].argmax())))
        return picks
    best = torch.stack([scores[i].flatten(1).max(1).values for i in neurons], 1)  # [D, L]
    for k in range(d):
        layer = int(best[k].argmax())
        if math.isinf(float(best[k, layer])):
            picks.append(None)
            continue
        i = neurons[layer]
        t, n = divmod(int(scores[i][k].argmax()), lo[i].shape[2])
        picks.append((i, t, n))
    return picks


# --------------------------------------------------------------------- leaves
class _Leaves:
    """The exact verifier's MILP of one sample, solved on subdomains with their
    spikes fixed."""

    def __init__(self, bnet, x: Tensor, threat: Threat, noise: Tensor | None, prop,
                 bounder: _Bounder, opts: BabOptions) -> None:
        self.prog = exact._build(bnet, x, threat, noise, prop, 0, opts.max_binaries)
        self.bounder = bounder
        _, _, integ = self.prog.model.bounds_arrays()
        self.integer = integ > 0
        n_model = self.prog.model.n
        # (op index) -> [T, n] column of each spike's binary (-1: fixed in the MILP)
        self.cols: dict[int, np.ndarray] = {}
        for i, steps in zip(bounder.neurons, self.prog.spikes, strict=True):
            cols = []
            for e in steps:
                A = e.A.tocsr()
                c = np.full(A.shape[0], -1, dtype=np.int64)
                rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
                c[rows] = A.indices
                cols.append(c)
            self.cols[i] = np.stack(cols)
        assert all(int(c.max(initial=-1)) < n_model for c in self.cols.values())

    def fix(self, dom: _Domain) -> np.ndarray:
        """Binary values the subdomain decides (NaN: free)."""
        fix = np.full(self.prog.model.n, np.nan)
        for i, cols in self.cols.items():
            th = self.bounder.thr[i].cpu().numpy()
            lo, hi = dom.lo[i].cpu().numpy(), dom.hi[i].cpu().numpy()
            on, off = lo > th, hi <= th
            for mask, value in ((on, 1.0), (off, 0.0)):
                sel = mask & (cols >= 0)
                fix[cols[sel]] = value
        return fix

    def solve(self, dom: _Domain, y: int, others: np.ndarray, margins, time_left: float,
              node_limit: int) -> tuple[str, Tensor, Tensor | None]:
        """``(status, row lower bounds [R], counterexample)`` of a leaf: status
        ``"verified"`` (every row > 0 or no input), ``"falsified"`` or ``"open"``."""
        prog = self.prog
        fix = self.fix(dom)
        rows = dom.rows.clone()
        deadline = time.perf_counter() + time_left
        for r, j in enumerate(others):
            if float(rows[r]) > 0:
                continue
            c = np.zeros(prog.scores.c.size)
            c[y], c[j] = 1.0, -1.0
            vec, const = prog.objective(c)
            left = max(deadline - time.perf_counter(), 0.01)
            res = exact._solve(prog.model, vec, const, "outer", left, fix=fix,
                               node_limit=node_limit)
            if res.status == "infeasible":
                return "verified", torch.full_like(rows, math.inf), None
            rows[r] = max(float(rows[r]), res.lower - prog.rounding(c))
            if float(rows[r]) > 0:
                continue
            for sol in (res.x, exact._solve(prog.model, vec, const, "inner", left, fix=fix,
                                            node_limit=node_limit).x):
                if sol is None:
                    continue
                w = prog.inputs.witness(sol)
                if margins(w) <= 0:
                    return "falsified", rows, w
            return "open", rows, None
        return "verified", rows, None


# ------------------------------------------------------------------ one sample
class _Sample:
    """Branch and bound on sample ``b``."""

    def __init__(self, bnet, x: Tensor, y: int, threat: Threat, noise: Tensor | None,
                 opts: BabOptions) -> None:
        self.bnet, self.x, self.y, self.threat, self.noise, self.opts = (
            bnet, x, y, threat, noise, opts)
        self.t0 = time.perf_counter()
        self.best_m, self.best_w = math.inf, None
        self.domains = self.depth = self.leaf_solves = 0
        self.closed = math.inf  # smallest bound over the subdomains closed so far

    def left(self) -> float:
        return self.opts.time_limit - (time.perf_counter() - self.t0)

    def margin(self, w: Tensor) -> float:
        """The real network's margin ``min_{j != y} score_y - score_j`` at ``w``."""
        with torch.no_grad():
            s = self.bnet(w, noise=self.noise)[0].double()
        others = torch.ones_like(s, dtype=torch.bool)
        others[self.y] = False
        m = float((s[self.y] - s[others]).min())
        if m < self.best_m:
            self.best_m, self.best_w = m, w
        return m

    def result(self, status: str, lower: float, reason: str = "") -> BabResult:
        cex = self.best_w if status == "falsified" else None
        return BabResult(self.y, status, lower, self.best_m,
                         None if cex is None else cex.clone(), self.domains, self.depth,
                         self.leaf_solves, reason, time.perf_counter() - self.t0)

    def run(self, start: Tensor | None) -> BabResult:
        bnet, opts = self.bnet, self.opts
        for w in (self.x, start):
            if w is not None and self.margin(w) <= 0:
                return self.result("falsified", -math.inf)
        K = bnet.num_classes(self.x)
        others = np.array([j for j in range(K) if j != self.y])
        spec = bnet.margin_spec(self.x, torch.tensor([self.y], device=self.x.device))[:, others]
        if self.threat.is_point():
            return self.result("verified", self.best_m)
        if opts.root == "crown":
            res = crown.crown_bounds(bnet, self.x, self.threat, self.noise, spec, method="bab",
                                     need_upper=False)
            problem, inter, rows0 = res.problem, res.bounds, res.lower[0]
        else:
            prop = bnet.interval_propagation(self.x, self.threat, self.noise)
            problem, inter = crown.make_problem(bnet, self.x, self.threat, self.noise, prop,
                                                "bab")
            ibp_l, ibp_u = spec_interval(spec, *readout_bounds(bnet.readout, prop))
            rows0 = crown.linear_bounds(bnet, problem, inter, spec, ibp_l, ibp_u,
                                        need_upper=False)[0][0]
        rows0 = rows0.detach()
        self.domains = 1
        if float(rows0.min()) > 0:
            return self.result("verified", float(rows0.min()))
        bounder = _Bounder(bnet, problem, spec, opts)
        T = problem.num_steps
        root = _Domain({i: torch.stack(inter.mem_l[i], 1).reshape(T, -1) for i in bounder.neurons},
                       {i: torch.stack(inter.mem_u[i], 1).reshape(T, -1) for i in bounder.neurons},
                       {i: torch.zeros((T, bounder.thr[i].numel()), dtype=torch.int8,
                                       device=rows0.device) for i in bounder.neurons},
                       rows0, 0)
        leaves = self.leaves(bounder, problem, inter)
        return self.search(bounder, root, leaves, others)

    def leaves(self, bounder: _Bounder, problem: crown.Problem, inter: crown.Intermediate
               ) -> _Leaves | None:
        _, prop = crown.repropagate(problem, inter)
        try:
            return _Leaves(self.bnet, self.x, self.threat, self.noise, prop, bounder, self.opts)
        except ValueError:  # over max_binaries / affine size: no MILP leaves
            return None

    def children_per_call(self, bounder: _Bounder, rows: int) -> int:
        budget = parse_budget(self.bnet.memory_budget, self.x.device)
        cost = crown.linear_cost(self.bnet.sizes(self.x), rows)
        plan = plan_chunks("bab", cost, 2 * self.opts.batch, rows, budget, graph=False)
        return max(2, plan.batch - plan.batch % 2)

    def search(self, bounder: _Bounder, root: _Domain, leaves: _Leaves | None,
               others: np.ndarray) -> BabResult:
        opts = self.opts
        tick = itertools.count()
        queue: list[tuple[float, int, _Domain]] = [(root.bound, next(tick), root)]
        per_call = self.children_per_call(bounder, len(others))
        while queue:
            if self.left() <= 0:
                return self.result("unknown", min(self.closed, queue[0][0]), "time limit")
            if len(queue) > opts.max_domains:
                return self.result("unknown", min(self.closed, queue[0][0]), "domain limit")
            parents = [heapq.heappop(queue)[2] for _ in range(min(per_call // 2, len(queue)))]
            lo = {i: torch.stack([p.lo[i] for p in parents]) for i in bounder.neurons}
            hi = {i: torch.stack([p.hi[i] for p in parents]) for i in bounder.neurons}
            picks = _choose(bounder, lo, hi, opts.branching)
            kids: dict[str, dict[int, list[Tensor]]] = {
                key: {i: [] for i in bounder.neurons} for key in ("lo", "hi", "sign")}
            kid_parents = []
            # every child's bound is at least its parent's: a floor of what is left open
            floor = min(self.closed, *(p.bound for p in parents), *(q[0] for q in queue))
            for k, (p, pick) in enumerate(zip(parents, picks, strict=True)):
                if pick is None:  # nothing to split (a leaf the MILP left open)
                    return self.result("unknown", floor,
                                       "a fully split subdomain the MILP could not decide")
                i, t, n = pick
                th = bounder.thr[i][n]
                for on in (False, True):
                    box_lo, box_hi, sign = lo[i][k].clone(), hi[i][k].clone(), p.sign[i].clone()
                    if on:  # U > θ: at least the next float above θ
                        above = torch.nextafter(th, torch.full_like(th, math.inf))
                        box_lo[t, n] = torch.maximum(box_lo[t, n], above)
                    else:
                        box_hi[t, n] = torch.minimum(box_hi[t, n], th)
                    sign[t, n] = 1 if on else -1
                    for j in bounder.neurons:
                        kids["lo"][j].append(box_lo if j == i else lo[j][k])
                        kids["hi"][j].append(box_hi if j == i else hi[j][k])
                        kids["sign"][j].append(sign if j == i else p.sign[j])
                    kid_parents.append(p)
            stacked = {key: {i: torch.stack(v) for i, v in d.items()} for key, d in kids.items()}
            with torch.no_grad():
                rows, empty, new_lo, new_hi = bounder.bound(stacked["lo"], stacked["hi"],
                                                            stacked["sign"])
            self.domains += len(kid_parents)
            unstable = bounder.unstable(new_lo, new_hi)
            counts = sum(u.flatten(1).sum(1) for u in unstable.values())
            for k, p in enumerate(kid_parents):
                if bool(empty[k]):
                    continue
                kid = _Domain({i: new_lo[i][k] for i in bounder.neurons},
                              {i: new_hi[i][k] for i in bounder.neurons},
                              {i: stacked["sign"][i][k] for i in bounder.neurons},
                              torch.maximum(rows[k], p.rows), p.depth + 1)
                self.depth = max(self.depth, kid.depth)
                if kid.bound > 0:
                    self.closed = min(self.closed, kid.bound)
                    continue
                if leaves is not None and int(counts[k]) <= opts.leaf_unstable:
                    self.leaf_solves += 1
                    status, kid.rows, w = leaves.solve(kid, self.y, others, self.margin,
                                                       max(self.left(), 0.01), opts.node_limit)
                    if status == "falsified":
                        self.margin(w)
                        return self.result("falsified", -math.inf)
                    if status == "verified":
                        self.closed = min(self.closed, kid.bound)
                        continue
                    if int(counts[k]) == 0:
                        return self.result("unknown", min(floor, kid.bound),
                                           "a leaf the MILP's threshold band left undecided")
                heapq.heappush(queue, (kid.bound, next(tick), kid))
        return self.result("verified", self.closed)


# ----------------------------------------------------------------------- API
@torch.no_grad()
def verify(bnet, x: Tensor, y: Tensor, eps, noise: Tensor | None = None,
           start: Tensor | None = None, **options) -> list[BabResult]:
    """Branch and bound on every sample: verified, falsified or unknown (module docstring).

    Args:
        bnet: a :class:`~snncertify.BoundedSNN` in eval mode (no batch statistics).
        x: inputs ``[B, ...]`` (event: frames ``[T, B, ...]``); ``y``: labels ``[B]``.
        eps: the threat (L-inf radius, or event flip mask / budget).
        noise: the rate-encoding draw ``[T, B, ...]`` (default: the seeded draw); the
            verdicts hold for this draw.
        start: candidate counterexamples shaped like ``x`` in the threat set (e.g. an
            attack's outputs), re-checked first; ValueError otherwise.
        options: the fields of :class:`BabOptions`, or ``options=BabOptions(...)``.

    Returns:
        One :class:`BabResult` per sample.
    """
    opts = exact.options_of(BabOptions, options, "bab")
    crown.check_supported(bnet.ops, "bab")
    noise, threat = exact.prepare_verify(bnet, "bab", x, eps, noise, start)
    it = range(bnet.batch_size(x))
    if opts.progress:
        it = progress_bar(it, desc="bab", unit="sample", leave=False)
    enc = bnet.encoding
    out = []
    for b in it:
        sl = slice(b, b + 1)
        sample = _Sample(bnet, enc.take(x, sl), int(y[b]), threat.take(sl, x.ndim),
                         None if noise is None else noise[:, sl], opts)
        out.append(sample.run(None if start is None else enc.take(start, sl)))
    return out


def bab_bounds(bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None,
               need_upper: bool = True) -> tuple[Tensor, Tensor]:
    """``method="bab"`` (default :class:`BabOptions`): for a margin spec (rows
    ``e_y - e_j``, as ``margin_bounds`` and ``certified`` build it) each row's lower
    bound is branch and bound's sound lower bound of the minimum margin (the same for
    every row: a bound on their minimum); any other spec gets full CROWN's bounds.
    The upper bound is full CROWN's."""
    lower, upper = crown.crown(bnet, x, threat, noise, C, need_upper=need_upper)
    y = _margin_labels(C)
    if y is None:
        return lower, upper
    floor = torch.full_like(lower, -math.inf).detach()
    enc = bnet.encoding
    with torch.no_grad():
        for b in range(bnet.batch_size(x)):
            rows = C[b].abs().sum(1) > 0
            if bool((lower[b][rows] > 0).all()):
                continue
            sl = slice(b, b + 1)
            res = _Sample(bnet, enc.take(x, sl), int(y[b]), threat.take(sl, x.ndim),
                          None if noise is None else noise[:, sl], BabOptions()).run(None)
            floor[b][rows] = res.margin_lower
    return torch.maximum(lower, floor), upper


def _margin_labels(C: Tensor | None) -> Tensor | None:
    """The labels ``[B]`` when ``C`` ``[B, K, K]`` is a margin spec (row j: ``e_y - e_j``)."""
    if C is None or C.ndim != 3 or C.shape[1] != C.shape[2]:
        return None
    y = C.clamp(min=0).sum(1).argmax(1)
    eye = torch.eye(C.shape[2], dtype=C.dtype, device=C.device)
    expected = eye[y].unsqueeze(1) - eye.unsqueeze(0)
    return y if torch.equal(C, expected) else None


register_method("bab", bab_bounds, crown.full_crown_cost)

__all__ = ["BRANCHING", "BabOptions", "BabResult", "verify"]

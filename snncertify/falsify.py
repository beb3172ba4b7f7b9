"""Counterexamples from the exact verifier's MILP: a large-neighbourhood search.

A gradient-free attack ends on a point whose spikes are almost right: the
witnesses it misses (``benchmarks/bench_attack_truth.py``) are mostly ties that
need a few spikes flipped together, in thin regions of the input box. From
such an ANCHOR input, :func:`falsify` asks the exact verifier's program
(:mod:`snncertify.exact`, the INNER model: every solution reproduces its spikes
in the real float32 network) for an input whose margin against a competitor
``j`` is ``<= 0``:

1. the anchor's own assignment: the program with the input fixed to the anchor
   gives every spike and membrane there;
2. neighbourhoods: keep the anchor's spikes except the output layer's and the
   ``k`` hidden spikes whose membranes lie closest to the threshold (``k`` in
   :attr:`FalsifyOptions.neighbourhoods`), and solve the much smaller MILP for
   feasibility (``score_y - score_j <= 0``);
3. last, every spike free: the full program, on programs of at most
   :attr:`FalsifyOptions.full_binaries` binaries (its root node alone takes
   tens of seconds on a few hundred).

Every solve stops at :attr:`FalsifyOptions.node_limit` branch-and-bound nodes.

Competitors are tried in the order of the anchor's real margin, only those
whose IBP margin bound does not already rule them out. Every solution is
re-run through the real network (``bnet``); a sample counts as broken only
when that forward pass gives a margin ``<= 0`` (a tie is a break). The search
is incomplete (time budget, neighbourhoods): it finds counterexamples, it never
proves their absence.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .exact import _build, _Program, _real_margins, _solve, ibp_margin_lower

__all__ = ["FalsifyOptions", "falsify"]


@dataclass(frozen=True)
class FalsifyOptions:
    """Settings of :func:`falsify`.

    Attributes:
        node_limit: branch-and-bound nodes per solve: the search's budget, the same on
            every machine (so its results do not depend on the machine's speed).
        time_budget: seconds per sample, every solve together: a safety net only (a
            solve stopped by it makes the result depend on the machine's speed).
        max_binaries: samples whose program needs more binaries are skipped.
        full_binaries: the full program (every spike free) is tried only on programs
            of at most this many binaries; larger ones get the neighbourhoods only.
        max_neuron_steps: networks with more neurons times steps are not searched at all
            (the program's size and solve time grow with them).
        neighbourhoods: hidden spikes freed around the anchor, tried in this order
            before the full program.
        targets: competitor classes tried per sample (None: every one the IBP bound
            leaves breakable).
    """

    node_limit: int = 5000
    time_budget: float = 60.0
    max_binaries: int = 2000
    full_binaries: int = 300
    max_neuron_steps: int = 500
    neighbourhoods: tuple[int, ...] = (8, 32, 128)
    targets: int | None = None

    def __post_init__(self) -> None:
        sizes = (self.time_budget, self.node_limit, self.max_binaries, self.max_neuron_steps,
                 1 if self.targets is None else self.targets, *self.neighbourhoods)
        if not all(v > 0 for v in sizes) or self.full_binaries < 0:
            raise ValueError("FalsifyOptions: time_budget, node_limit, max_binaries, "
                             "max_neuron_steps, targets and every neighbourhood size must be > 0, "
                             "full_binaries >= 0")


class _Sample:
    """One sample's search: its program, the anchor's assignment and the clock."""

    def __init__(self, bnet, prog: _Program, noise_b: Tensor | None, y: int,
                 deadline: float, opts: FalsifyOptions) -> None:
        self.bnet, self.prog, self.noise_b, self.y = bnet, prog, noise_b, y
        self.deadline, self.opts = deadline, opts
        _, _, integ = prog.model.bounds_arrays()
        self.integer = integ > 0

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def anchor_assignment(self, anchor: Tensor) -> np.ndarray | None:
        """The program's variables at ``anchor`` ``[1, ...]`` (the input fixed there),
        or None when the solver finds none in the time left (e.g. a membrane within
        rounding of the threshold)."""
        model, inputs = self.prog.model, self.prog.inputs
        z, static = self.bnet.encoding.encode(anchor, self.noise_b)
        z = z.detach().double().cpu().numpy()
        exprs = [inputs.static] if static else inputs.seq
        vals = [z.reshape(-1)] if static else [z[t].reshape(-1) for t in range(len(exprs))]
        with model.scratch():
            for e, v in zip(exprs, vals, strict=True):
                if e.A.nnz:
                    model.add_rows(model.pad(e.A), v - e.c, v - e.c)
            res = _solve(model, np.zeros(model.n), 0.0, "outer", max(self.left(), 0.01),
                         node_limit=self.opts.node_limit)
        return res.x

    def free_sets(self, anchor_sol: np.ndarray | None) -> list[np.ndarray | None]:
        """Binary columns left free per try (None: every binary), smallest first."""
        model = self.prog.model
        full = [None] if model.n_bin <= self.opts.full_binaries else []
        if anchor_sol is None or not model.thr:
            return full
        ucols, scols, theta, *_, layer = model.threshold_arrays()
        last = layer.max()
        spike = np.zeros(model.n, dtype=bool)
        spike[scols] = True
        always = np.flatnonzero(self.integer & ~spike)  # input / pooling binaries
        out_cols = scols[layer == last]
        hidden = layer != last
        order = scols[hidden][np.argsort(np.abs(anchor_sol[ucols[hidden]] - theta[hidden]),
                                         kind="stable")]
        sets = [np.concatenate([always, out_cols, order[:k]])
                for k in self._sizes(len(order))]
        return [*sets, *full]

    def _sizes(self, n_hidden: int) -> list[int]:
        return [k for k in self.opts.neighbourhoods if k < n_hidden] if n_hidden else [0]

    def attempt(self, j: int, free: np.ndarray | None, anchor_sol: np.ndarray | None
                ) -> tuple[str, Tensor | None]:
        """Solve for ``score_y - score_j <= 0`` with the binaries outside ``free`` fixed
        to the anchor's; ``(status, witness whose real margin is <= 0, or None)``."""
        model, prog = self.prog.model, self.prog
        c = np.zeros(prog.scores.c.size)
        c[self.y], c[j] = 1.0, -1.0
        vec, const = prog.objective(c)
        fix = None
        if free is not None:
            fix = np.where(self.integer, np.round(anchor_sol), np.nan)
            fix[free] = np.nan
        with model.scratch():
            model.add_rows(sp.csr_matrix(vec[None]), -np.inf, -const)
            res = _solve(model, np.zeros(model.n), 0.0, "inner", max(self.left(), 0.01), fix=fix,
                         node_limit=self.opts.node_limit)
        if res.x is None:
            return res.status, None
        w = prog.inputs.witness(res.x)
        m = _real_margins(self.bnet, w, self.noise_b, self.y)
        m[self.y] = math.inf
        return res.status, (w if m.min() <= 0 else None)


@torch.no_grad()
def falsify(bnet, x: Tensor, y: Tensor, eps, noise: Tensor | None, anchors: Tensor,
            options: FalsifyOptions | None = None) -> tuple[Tensor, Tensor]:
    """Search counterexamples around ``anchors`` with the exact verifier's MILP (module doc).

    Args:
        bnet: a :class:`~snncertify.BoundedSNN`.
        x: the clean inputs ``[B, ...]`` (event: frames ``[T, B, ...]``); ``y``: labels ``[B]``.
        eps: the threat (as :func:`snncertify.exact.verify` takes it).
        noise: the rate-encoding draw ``[T, B, ...]`` (None: the seeded default draw);
            a counterexample holds for this draw.
        anchors: where to search from, shaped like ``x``, in the threat set (ValueError
            otherwise; e.g. an attack's best points).
        options: :class:`FalsifyOptions`.

    Returns:
        ``(points, found)``: ``points`` shaped like ``x`` (a counterexample where ``found``,
        else the anchor) and ``found`` bool ``[B]``: the real network's margin at the point is
        ``<= 0``. Nothing is searched on a network over ``max_neuron_steps``; samples
        whose program needs over ``max_binaries`` binaries are not searched (a
        ``RuntimeWarning`` counts them).
    """
    opts = options or FalsifyOptions()
    noise = bnet.prepare(x, noise)
    threat = bnet.threat(x, eps)
    if anchors.shape != x.shape or not bool(threat.contains(x, anchors).all()):
        raise ValueError("falsify: anchors must be shaped like x and lie in the threat set")
    points, found = anchors.clone(), torch.zeros(bnet.batch_size(x), dtype=torch.bool)
    prop = bnet.interval_propagation(x, threat, noise)
    if sum(rec.spk_l[:, 0].numel() for rec in prop.layers) > opts.max_neuron_steps:
        return points, found
    ibp = ibp_margin_lower(bnet, x, y, prop)
    enc = bnet.encoding
    skipped = 0
    for b in range(bnet.batch_size(x)):
        deadline = time.perf_counter() + opts.time_budget
        try:
            prog = _build(bnet, x, threat, noise, prop, b, opts.max_binaries)
        except ValueError:
            skipped += 1
            continue
        sl = slice(b, b + 1)
        nb = None if noise is None else noise[:, sl]
        yb = int(y[b])
        sample = _Sample(bnet, prog, nb, yb, deadline, opts)
        anchor = enc.take(anchors, sl)
        m0 = _real_margins(bnet, anchor, nb, yb)
        m0[yb] = math.inf
        if m0.min() <= 0:
            found[b] = True
            continue
        targets = [j for j in np.argsort(m0, kind="stable") if j != yb and ibp[b, j] <= 0]
        anchor_sol = sample.anchor_assignment(anchor)
        w = _search(sample, targets[: opts.targets], anchor_sol)  # [:None]: all
        if w is not None:
            found[b] = True
            _put(enc, points, b, w)
    if skipped:
        warnings.warn(f"falsify: {skipped} of {len(found)} samples not searched: their MILP "
                      f"needs more than max_binaries={opts.max_binaries} binaries",
                      RuntimeWarning, stacklevel=2)
    return points, found


def _search(sample: _Sample, targets: list[int], anchor_sol: np.ndarray | None
            ) -> Tensor | None:
    """The first witness over the targets and neighbourhoods, or None (budget spent)."""
    sets = sample.free_sets(anchor_sol)
    for j in targets:
        for free in sets:
            if sample.left() <= 0:
                return None
            status, w = sample.attempt(int(j), free, anchor_sol)
            if w is not None:
                return w
            if free is None and status == "infeasible":
                break  # no input reaches this competitor
    return None


def _put(enc, points: Tensor, b: int, w: Tensor) -> None:
    """Write the one-sample input ``w`` into row ``b`` of ``points``."""
    if enc.time_major:
        points[:, b] = w[:, 0].to(points)
    else:
        points[b] = w[0].to(points)

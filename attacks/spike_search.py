"""``SpikeSearch``: an attack made for the discrete outputs of spiking networks.

Spike-count scores are piecewise constant in the input: a gradient of the
exact scores is zero almost everywhere, surrogate gradients point nowhere in
particular, and the argmax tests inside torchattacks do not aim at ties. Held
against the exact MILP verifier (``benchmarks/bench_attack_truth.py``), what
found the samples those attacks missed was:

1. **Relaxed PGD.** Sign-gradient steps on the margin ``s_y - max_{j != y} s_j``
   of the :class:`~snncertify.gradmode.Relaxed` network (every Heaviside a
   sigmoid of temperature ``tau``; the rate encoder too), with ``tau``
   annealed from ``taus[0]`` to ``taus[1]`` (continuation from a smooth
   landscape to the real one). Every iterate is judged on the EXACT network.
2. **Lexicographic local search.** Witnesses of the exact verifier lie on
   box corners in most coordinates and need precise values in a few, so a
   hill climb over (a) single coordinates set to one of ``levels`` values of
   their box ``[max(x - eps, 0), min(x + eps, 1)]`` (for rate input: the box
   ends and the noise draws inside it, the only values where the input spikes
   change), and (b) ``line`` points along the relaxed gradient of several
   temperatures. A move is accepted when it lowers the key
   ``(exact margin, relaxed margin)`` lexicographically: the exact margin
   decides, the relaxed one (temperature ``key_tau``) moves the search across
   the plateaus where the exact margin is flat. Restarts begin at the relaxed
   PGD point and then at random box corners.

3. **MILP neighbourhoods** (small networks only). From each sample still
   unbroken, :func:`snncertify.falsify.falsify` asks the exact verifier's MILP
   for a counterexample: first with the point's spikes kept except the output
   layer's and the hidden ones nearest the threshold, then with every spike
   free, each solve within ``milp_nodes`` branch-and-bound nodes (a budget that
   does not depend on the machine's speed). It runs only on networks of
   at most ``milp_neuron_steps`` neurons times steps and only on samples the
   first two phases left; every witness is re-run through the real network.
   On the zoo's digits FC (1,104 neuron-steps, over the default 500) it found 1
   more break in 120 samples of ``digits-fc-hire`` at eps 0.1 for 18 times the
   search's time, none on ``digits-fc-ibp`` at eps 0.05: the MILPs grow too fast.

A sample counts as broken when its exact margin is ``<= 0``: a tie is a
success (the project's criterion: a tie is never a correct prediction). The
search stops per sample at its first success, and a restart stops per sample
once its exact margin has not dropped for ``patience`` rounds (the relaxed
margin keeps creeping down on samples the search cannot break: without this
rule every restart of a robust sample runs all ``iters`` rounds). Samples a
bound method (``prove``, default CROWN-IBP on the same noise draw) certifies are
not searched: no input in the ball can break them. Cost per sample and restart:
at most ``iters`` rounds of ``min(d, coords) * levels + 8 * line`` candidates, batched in
forwards of 1,024. Their exact margins come from
:meth:`~snncertify.wrapper.BoundedSNN.distinct_forward`: a candidate moves one
coordinate, so most share their first layer's spike trains (about 90 % on MNIST FC) and
what follows runs once per distinct train. Relaxed margins (a forward through sigmoids,
which nothing can share) are computed for at most ``relaxed_top`` candidates per sample,
those of lowest exact margin whose first-order relaxed change (one gradient) is lowest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from snncertify.falsify import FalsifyOptions, falsify
from snncertify.gradmode import Relaxed
from snncertify.methods import get_method

from .classifier import margin
from .suite import Attack

__all__ = ["SearchOptions", "SpikeSearch"]


def _lex_better(em: Tensor, sm: Tensor, em0: Tensor, sm0: Tensor) -> Tensor:
    """``(em, sm) < (em0, sm0)`` lexicographically (bool, elementwise)."""
    return (em < em0) | ((em == em0) & (sm < sm0 - 1e-7))


@dataclass(frozen=True)
class SearchOptions:
    """The settings of :class:`SpikeSearch` (checked on construction).

    Attributes:
        pgd_steps: relaxed PGD steps (0 skips the phase).
        taus: start and end temperature of the relaxed PGD anneal.
        restarts: local-search restarts (the first from the PGD point).
        iters: local-search rounds per restart (stops early at a local optimum).
        levels: values per coordinate for direct input (box ends included).
        line: points per gradient line (0: coordinate moves only).
        line_taus: temperatures whose relaxed gradients give the lines.
        key_tau: temperature of the relaxed margin that breaks exact-margin ties.
        coords: coordinates tried per round (all when the input has fewer).
        patience: rounds without a drop of a sample's exact margin that end its restart.
        prove: the bound method (``BoundedSNN.certify``) whose certified samples are not
            searched; None searches every sample.
        max_candidates: forward passes per batched call (bounds memory).
        milp_nodes: branch-and-bound nodes per MILP solve of the MILP phase (0 skips it).
        milp_neuron_steps: the largest network (neurons times steps) the MILP phase runs on.
        relaxed_top: relaxed margins computed per sample and round, for the candidates of
            lowest exact margin whose first-order relaxed change is lowest (0: all of them).
    """


    pgd_steps: int = 50
    taus: tuple[float, float] = (0.3, 0.03)
    restarts: int = 5
    iters: int = 100
    levels: int = 9
    line: int = 16
    line_taus: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    key_tau: float = 0.3
    coords: int = 32
    patience: int = 10
    prove: str | None = "crown-ibp"
    max_candidates: int = 16384
    milp_nodes: int = 5000
    milp_neuron_steps: int = 500
    relaxed_top: int = 64

    def __post_init__(self) -> None:
        if (self.pgd_steps < 0 or self.restarts < 0 or self.iters < 0 or self.levels < 2
                or self.line < 0 or self.coords < 1 or self.patience < 1
                or self.milp_nodes < 0 or self.milp_neuron_steps < 1 or self.relaxed_top < 0):
            raise ValueError("SpikeSearch: pgd_steps, restarts, iters, line, milp_nodes, "
                             "relaxed_top >= 0, "
                             "levels >= 2, coords, patience, milp_neuron_steps >= 1")
        if self.prove is not None:
            try:
                get_method(self.prove)
            except ValueError as err:
                raise ValueError(f"SpikeSearch: prove must be None or a bound method: {err}") from None
        if not (len(self.taus) == 2 and min(self.taus) > 0 and self.key_tau > 0
                and all(t > 0 for t in self.line_taus)):
            raise ValueError("SpikeSearch: temperatures must be > 0 (taus: a (start, end) pair)")


#: rows per forward call: tensors of 1,024 candidates stay in cache, which made the
#: exact forward of an MNIST FC 1.8x faster than 16,384 at once
_CHUNK = 1024

_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(SearchOptions))


@dataclass(frozen=True)
class _Box:
    """The samples being searched, flat: inputs ``x`` ``[B, d]``, their labels ``y`` ``[B]``,
    the box ``lo, hi`` ``[B, d]`` of the ball ``[x - eps, x + eps]`` cut to [0, 1], the
    radius ``eps`` and the sample shape the network sees."""

    x: Tensor
    y: Tensor
    lo: Tensor
    hi: Tensor
    eps: float
    shape: tuple[int, ...]

    def __getitem__(self, idx: Tensor) -> _Box:
        """The samples ``idx`` (int ``[b]``)."""
        return _Box(self.x[idx], self.y[idx], self.lo[idx], self.hi[idx], self.eps, self.shape)


class SpikeSearch(Attack):
    """Relaxed-network PGD plus lexicographic coordinate/line search (module doc).

    Args:
        options: the search's settings (:class:`SearchOptions`); keyword arguments named
            like its fields (``restarts=2``) override them, the others go to
            :class:`~attacks.suite.Attack` (``grad``, ``noise``, ``seed``).
    """

    name = "SpikeSearch"
    images = False
    search = True

    def __init__(self, options: SearchOptions | None = None, **kw) -> None:
        own = {k: kw.pop(k) for k in list(kw) if k in _OPTION_FIELDS}
        super().__init__(**kw)
        self.options = dataclasses.replace(options or SearchOptions(), **own)

    def _label(self) -> str:
        o = self.options
        return f"SpikeSearch-{o.pgd_steps}+{o.restarts}x{o.iters}"

    # ----------------------------------------------------------------- helpers
    def _scores(self, x: Tensor, shape, grad=None) -> Tensor:
        """Scores of flat inputs ``[N, d]`` on the fixed draw (exact unless ``grad``)."""
        xs = x.reshape(x.shape[0], *shape)
        self.clf.count_query()
        noise = self.clf.eval_noise(xs)
        if grad is None:  # candidates share most spike trains: each computed once
            return self.clf.bnet.distinct_forward(xs, noise)
        return self.clf.bnet(xs, noise, grad=grad)

    @torch.no_grad()
    def _margins(self, x: Tensor, y: Tensor, shape, tgt: Tensor | None = None,
                 grad=None) -> Tensor:
        """Exact (or ``grad``-relaxed) margins ``[N]`` of flat inputs ``[N, d]``, in chunks
        of ``min(max_candidates, 1024)`` rows (against the target classes ``tgt`` ``[N]``
        when given)."""
        out = []
        c = min(self.options.max_candidates, _CHUNK)
        for i in range(0, x.shape[0], c):
            ti = None if tgt is None else tgt[i:i + c]
            out.append(margin(self._scores(x[i:i + c], shape, grad), y[i:i + c], ti))
        return torch.cat(out) if out else x.new_zeros(0)

    def _key(self, x: Tensor, y: Tensor, shape, tgt: Tensor | None = None,
             tau: float | None = None) -> tuple[Tensor, Tensor]:
        """(exact margin, relaxed margin at ``tau``, default ``key_tau``) ``[N]`` each."""
        relaxed = Relaxed(tau or self.options.key_tau)
        return (self._margins(x, y, shape, tgt),
                self._margins(x, y, shape, tgt, relaxed))

    def _relaxed_grad(self, x: Tensor, y: Tensor, shape, tau: float,
                      tgt: Tensor | None = None) -> Tensor:
        """Gradient ``[N, d]`` of the relaxed margin (against ``tgt`` when given)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            loss = margin(self._scores(xg, shape, Relaxed(tau)), y, tgt).sum()
            (g,) = torch.autograd.grad(loss, xg)
        return g

    # ------------------------------------------------------------------ phases
    def _relaxed_pgd(self, box: _Box, best: Tensor, bem: Tensor,
                     bsm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Phase 1 from ``box.x``: annealed sign steps on the relaxed margin; updates the
        best points ``[B, d]`` and their key ``(bem, bsm)`` ``[B]`` each, in place."""
        cur = box.x.clone()
        t0, t1 = self.options.taus
        for i in range(self.options.pgd_steps):
            frac = i / max(self.options.pgd_steps - 1, 1)
            g = self._relaxed_grad(cur, box.y, box.shape, t0 * (t1 / t0) ** frac)
            step = 0.1 * box.eps * (1 - 0.9 * frac)
            cur = torch.minimum(torch.maximum(cur - step * g.sign(), box.lo), box.hi)
            em, sm = self._key(cur, box.y, box.shape)
            upd = _lex_better(em, sm, bem, bsm)
            best[upd], bem[upd], bsm[upd] = cur[upd], em[upd], sm[upd]
        return best, bem, bsm

    def _values(self, x, lo, hi, shape) -> Tensor:
        """Candidate values per coordinate ``[B, d, L]`` (the encoding's
        :meth:`~snncertify.encoding.Encoding.search_values`)."""
        noise = self.clf.eval_noise(x.reshape(x.shape[0], *shape))
        r = None if noise is None else noise.reshape(
            -1, x.shape[0], x.shape[1]).permute(1, 2, 0)  # [B, d, T]
        return self.clf.bnet.encoding.search_values(lo, hi, r, self.options.levels)

    def _candidates(self, box: _Box, cur: Tensor, vals: Tensor, pick: Tensor
                    ) -> tuple[Tensor, dict[float, Tensor]]:
        """``[b, n, d]`` neighbours of ``cur`` ``[b, d]`` (in ``box``): coordinate moves on
        ``pick`` to the values ``vals`` ``[b, d, L]``, line moves; and the untargeted relaxed
        gradients ``[b, d]`` at ``cur`` that gave the lines, by temperature."""
        b, d = cur.shape
        L = vals.shape[2]
        n = len(pick) * L
        c = cur.unsqueeze(1).repeat(1, n, 1)
        cols = pick.repeat_interleave(L)
        c[:, torch.arange(n, device=cur.device), cols] = vals[:, pick].reshape(b, n)
        grads: dict[float, Tensor] = {}
        if self.options.line:
            steps = torch.linspace(0, 2 * box.eps, self.options.line + 1, device=cur.device,
                                   dtype=cur.dtype)[1:]
            lines = []
            for tau in self.options.line_taus:
                grads[float(tau)] = g = self._relaxed_grad(cur, box.y, box.shape, tau)
                g = g / g.abs().amax(1, keepdim=True).clamp_min(1e-12)
                for direction in (g, g.sign()):
                    lines.append(cur[:, None] - steps[None, :, None] * direction[:, None])
            lc = torch.cat(lines, 1)
            lc = torch.minimum(torch.maximum(lc, box.lo[:, None]), box.hi[:, None])
            c = torch.cat([c, lc], 1)
        return c, grads

    def _local_search(self, box: _Box, start: Tensor, gen: torch.Generator,
                      tgt: Tensor | None = None, tau: float | None = None,
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """Phase 2 from ``start`` ``[B, d]``: accept each round's best move per sample while
        it lowers the key (against ``tgt`` ``[B]``, relaxed at ``tau``); the final points
        and their untargeted key."""
        vals = self._values(box.x, box.lo, box.hi, box.shape)
        cur = start.clone()
        em, sm = self._key(cur, box.y, box.shape, tgt, tau)
        stale = torch.zeros_like(em, dtype=torch.long)  # rounds since the exact margin dropped
        for _ in range(self.options.iters):
            alive = ((em > 0) & (stale < self.options.patience)).nonzero().squeeze(1)
            if not len(alive):
                break
            d = cur.shape[1]
            pick = torch.randperm(d, generator=gen)[: min(d, self.options.coords)].to(cur.device)
            moves, nem, nsm = self._best_moves(box, cur, vals, pick, alive, tgt, tau)
            better = _lex_better(nem, nsm, em[alive], sm[alive])
            if not bool(better.any()):
                break
            dropped = torch.zeros_like(better)
            dropped[better] = nem[better] < em[alive[better]]
            stale[alive] = torch.where(dropped, 0, stale[alive] + 1)
            idx = alive[better]
            cur[idx] = moves[better]
            em[idx], sm[idx] = nem[better], nsm[better]
        if tgt is not None:  # judged untargeted from here on
            em, sm = self._key(cur, box.y, box.shape)
        return cur, em, sm

    def _best_moves(self, box: _Box, cur: Tensor, vals: Tensor, pick: Tensor, alive: Tensor,
                    tgt: Tensor | None, tau: float | None) -> tuple[Tensor, Tensor, Tensor]:
        """The lowest-key candidate of each ``alive`` sample (int ``[a]``) and its key:
        points ``[a, d]``, exact and relaxed margins ``[a]``; in chunks of samples whose
        candidates fit ``max_candidates``."""
        n = len(pick) * vals.shape[2] + 2 * len(self.options.line_taus) * self.options.line
        per = max(1, self.options.max_candidates // n)  # samples per chunk: bounds [b, n, d]
        relaxed = Relaxed(tau or self.options.key_tau)
        moves, nem, nsm = [], [], []
        for i in range(0, len(alive), per):
            a = alive[i:i + per]
            c, grads = self._candidates(box[a], cur[a], vals[a], pick)
            b, n, d = c.shape
            c, ya = c.reshape(b * n, d), box.y[a].repeat_interleave(n)
            ta = None if tgt is None else tgt[a].repeat_interleave(n)
            cem = self._margins(c, ya, box.shape, ta).view(b, n)
            # the relaxed margin only decides among each sample's lowest exact margins,
            # at most relaxed_top of them: those its first-order change ranks lowest
            lowest = cem == cem.amin(1, keepdim=True)
            top = self.options.relaxed_top
            if top and bool((lowest.sum(1) > top).any()):
                g = grads.get(relaxed.tau) if tgt is None else None  # the lines' own
                if g is None:
                    g = self._relaxed_grad(cur[a], box.y[a], box.shape, relaxed.tau,
                                           None if tgt is None else tgt[a])
                drop = torch.einsum("bnd,bd->bn", c.view(b, n, d) - cur[a, None], g)
                drop = drop.masked_fill(~lowest, math.inf)
                keep = drop.topk(top, 1, largest=False).indices
                lowest = torch.zeros_like(lowest).scatter_(1, keep, True) & lowest
            lowest = lowest.view(-1).nonzero().squeeze(1)
            csm = torch.full((b * n,), math.inf, device=c.device, dtype=cem.dtype)
            csm[lowest] = self._margins(c[lowest], ya[lowest], box.shape,
                                        None if ta is None else ta[lowest], relaxed)
            csm = csm.view(b, n)
            k = csm.argmin(1)
            rows = torch.arange(b, device=c.device)
            moves.append(c.view(b, n, d)[rows, k])
            nem.append(cem[rows, k])
            nsm.append(csm[rows, k])
        return torch.cat(moves), torch.cat(nem), torch.cat(nsm)

    # ------------------------------------------------------------------ attack
    def perturb(self, model, x: Tensor, y: Tensor, eps: float) -> Tensor:
        if self.options.prove is None:
            return self._search(x, y, eps)
        with torch.no_grad():  # certified: nothing in the ball breaks them, so skip them
            proved = self.clf.bnet.certified(x, y, eps, self.options.prove,
                                           noise=self.clf.eval_noise(x))
        out = x.clone()
        todo = (~proved).nonzero().squeeze(1).to(x.device)
        if len(todo):
            out[todo] = self._search(x[todo], y[todo], eps)
        return out

    def _search(self, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """The two phases on ``x`` ``[B, ...]`` (module doc); the best point per sample."""
        xf = x.reshape(x.shape[0], -1)
        box = _Box(xf, y, (xf - eps).clamp(0, 1), (xf + eps).clamp(0, 1), eps, tuple(x.shape[1:]))
        gen = torch.Generator().manual_seed(self.seed)
        best = xf.clone()
        bem, bsm = self._key(best, y, box.shape)
        if self.options.pgd_steps:
            best, bem, bsm = self._relaxed_pgd(box, best, bem, bsm)
        with torch.no_grad():  # competitors, most threatening first (relaxed clean scores)
            rank = self._scores(xf, box.shape, Relaxed(self.options.key_tau)).scatter(
                1, y[:, None], float("-inf")).argsort(1, descending=True)
        for r in range(self.options.restarts):
            alive = (bem > 0).nonzero().squeeze(1)
            if not len(alive):
                break
            tgt = tau = None
            if r == 0:
                start = best[alive]
            else:
                corner = torch.randint(0, 2, (len(alive), xf.shape[1]), generator=gen).to(xf)
                start = box.lo[alive] + corner * (box.hi[alive] - box.lo[alive])
                if r % 2 == 0:  # even restarts aim at one competitor: ties are pairwise
                    tgt = rank[alive, (r // 2 - 1) % min(3, rank.shape[1] - 1)]
                tau = self.options.key_tau * (1.0, 3.0, 1 / 3)[r % 3]
            cur, em, sm = self._local_search(box[alive], start, gen, tgt, tau)
            upd = _lex_better(em, sm, bem[alive], bsm[alive])
            idx = alive[upd]
            best[idx], bem[idx], bsm[idx] = cur[upd], em[upd], sm[upd]
        best = best.reshape(x.shape)
        alive = (bem > 0).nonzero().squeeze(1)
        if self.options.milp_nodes > 0 and len(alive):
            best[alive] = self._milp_phase(x[alive], y[alive], eps, best[alive])
        return best

    def _milp_phase(self, x: Tensor, y: Tensor, eps: float, anchors: Tensor) -> Tensor:
        """Phase 3 on ``x`` ``[b, ...]`` from ``anchors``: the counterexamples found, else the
        anchors (``[b, ...]``)."""
        o = self.options
        opts = FalsifyOptions(node_limit=o.milp_nodes, max_neuron_steps=o.milp_neuron_steps)
        points, _ = falsify(self.clf.bnet, x, y, eps, self.clf.eval_noise(x), anchors, opts)
        return points.to(anchors)

"""S-CROWN: linear bounds by back-substitution over the unrolled (layer, time) DAG.

A lower bound of ``C @ scores`` is built backwards from the readout: every
quantity is kept as coefficients ``lam`` on the values of one node (per time
step), and each operation turns coefficients on its output into coefficients
on its input plus a constant:

* linear ops (Linear, Conv2d, AvgPool2d, BatchNorm, Flatten, Identity) are
  exact (``ops``' ``backward``/``bias``), batched over time; relaxed ops
  (MaxPool2d) replace themselves by lines chosen from their input bounds
  (``op.backward_relaxed``);
* a neuron layer (Leaky, Synaptic) is walked from the last step to the first:
  everything a membrane feeds, its spike ``H(U_t - θ)`` and the decay-and-reset
  term ``f(U_t)`` of the next step (``relax.py``), is replaced by one lower line
  (``op.linear_backward``), and
  ``U_t = f(U_{t-1}) + I_t + e_t`` with a rounding term ``|e_t| <= pad_t``
  (the membrane slack of the interval code, ``bnet.slack``);
* at the input, the bound is concretised over the threat: an L-inf box (the
  direct encoding's coefficients summed over time first), the per-step spike
  box of the rate encoding, or the event threats (a flip mask is a box; a flip
  budget is handled exactly, see :func:`concretize`).

Upper bounds are lower bounds of ``-C``, computed in the same pass.
Floating-point rounding of the bound computation itself is covered by
subtracting ``slack * mag``, ``mag`` the total magnitude of the terms summed.

Methods registered here: ``"crown-ibp"`` (intermediate bounds from S-IBP, one
backward pass, differentiable) and ``"crown"`` (each unstable membrane bound
refined by its own back-substitution first, without autograd: its gradient
flows through the final passes only, the refined bounds being constants; the
output is bounded with both slope rules of the joint neuron relaxation). Both
return the elementwise best of themselves and S-IBP. Spec rows and refined
neurons are processed in chunks that fit the call's memory budget
(:class:`~snncertify.budget.Plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from . import propagate
from .budget import CostModel, Plan, Sizes, ibp_cost
from .methods import register_method, spec_interval
from .ops import BoundOp
from .ops.base import dot_neurons as _dot
from .ops.base import rounding_pad
from .ops.neuron import Backward, Coefficients, StepBounds
from .progress import progress_bar
from .propagate import Propagation, ends_in_neuron
from .readout import readout_bounds
from .threat import Threat

#: coefficient-sized tensors alive at once per (sample, spec row), per element per step
ROW_TENSORS = 8
#: relaxation tensors per neuron per step (bounds, lines, masks)
RELAX_TENSORS = 24
#: tensors autograd keeps per (sample, spec row), per element per step (calibrated:
#: benchmarks/bench_memory.py measures 0.75-0.9x of this on the paper's FC and CONV)
ROW_KEPT = 7


def linear_cost(sizes: Sizes, rows: int) -> CostModel:
    """Memory model of CROWN-IBP and full CROWN (:mod:`snncertify.budget`)."""
    ibp = ibp_cost(sizes, rows)
    step = sizes.steps * sizes.itemsize
    return CostModel(
        per_sample=ibp.per_sample + RELAX_TENSORS * step * sizes.neurons,
        per_row=ROW_TENSORS * step * sizes.widest,
        kept_per_sample=ibp.kept_per_sample + rows * ROW_KEPT * step * sizes.total,
    )


class UnsupportedOpError(TypeError):
    """An op without a linear rule (e.g. MaxPool2d) under a linear bound method."""


@dataclass(frozen=True)
class Problem:
    """The fixed part of one bounding problem: everything a back-substitution needs
    but the intermediate bounds (:class:`Intermediate`).

    Attributes:
        ops: the op list; ``in_shapes[i]``: per-sample input shape of ``ops[i]``.
        static: direct encoding (ops before the first neuron run once).
        first_neuron: index of the first neuron op.
        lo, hi: input box, ``[B, ...]`` if static else ``[T, B, ...]``.
        x0: the clean event frames (flip budget) or None.
        threat: the threat model.
        out_pad: per-step output padding ``[T, B, K]`` (None if the net ends in a neuron).
        slack: rounding slack (0 at a point threat).
        num_steps, batch: T and B.
        plan: the memory plan (rows per pass); None: every row at once.
    """

    ops: list[BoundOp]
    in_shapes: list[tuple[int, ...]]
    static: bool
    first_neuron: int
    lo: Tensor
    hi: Tensor
    x0: Tensor | None
    threat: Threat
    out_pad: Tensor | None
    slack: float
    num_steps: int
    batch: int
    plan: Plan | None = None

    def rows_per_pass(self, rows: int) -> int:
        return rows if self.plan is None else self.plan.rows_for(self.batch, rows)


@dataclass(frozen=True)
class Intermediate:
    """Sound intermediate bounds of one problem, keyed by op index.

    Attributes:
        mem_l, mem_u: per-step membrane bounds of each neuron op, T tensors ``[B, ...]``.
        cur: bounds ``(lower, upper)`` of each neuron op's input currents (T tensors
            ``[B, ...]`` each).
        inputs: input bounds of each relaxed op (``Propagation.inputs``, stacked).
    """

    mem_l: dict[int, list[Tensor]]
    mem_u: dict[int, list[Tensor]]
    cur: dict[int, tuple[list[Tensor], list[Tensor]]]
    inputs: dict[int, tuple[Tensor, Tensor]]

    @staticmethod
    def of(ops: list[BoundOp], prop: Propagation) -> Intermediate:
        """The bounds an interval propagation ``prop`` of ``ops`` found."""
        mem_l, mem_u, cur = {}, {}, {}
        for i, rec in zip(neuron_indices(ops), prop.layers, strict=True):
            mem_l[i], mem_u[i] = rec.steps("mem_l"), rec.steps("mem_u")
            cur[i] = (rec.steps("cur_l"), rec.steps("cur_u"))
        return Intermediate(mem_l, mem_u, cur, relaxed_inputs(prop))

    def with_membrane(self, j: int, t: int, lower: Tensor, upper: Tensor) -> Intermediate:
        """These bounds with op ``j``'s membrane bounds at step ``t`` replaced (``[B, ...]``)."""
        mem_l, mem_u = dict(self.mem_l), dict(self.mem_u)
        mem_l[j], mem_u[j] = list(mem_l[j]), list(mem_u[j])
        mem_l[j][t], mem_u[j][t] = lower, upper
        return replace(self, mem_l=mem_l, mem_u=mem_u)


@dataclass(frozen=True)
class LineChoice:
    """How one pass picks the neurons' relaxation lines.

    Attributes:
        rule: slope rule of the joint relaxation, ``"scrown"`` (the paper's) or
            ``"split"`` (spike and reset lines summed).
        slopes: op index -> α-CROWN's optimised slope positions σ ``[T, B, M, ...]``.
        record: return the σ of the slopes the pass used (α-CROWN's start).
    """

    rule: str = "scrown"
    slopes: dict[int, Tensor] = field(default_factory=dict)
    record: bool = False


SCROWN = LineChoice()


def neuron_indices(ops: list[BoundOp]) -> list[int]:
    """Indices of the neuron (stateful) ops."""
    return [i for i, op in enumerate(ops) if op.stateful]


def check_supported(ops: list[BoundOp], method: str) -> None:
    """UnsupportedOpError naming the first op without a linear rule."""
    for op in ops:
        if not (op.stateful or op.linear or op.relaxed):
            raise UnsupportedOpError(
                f"method {method!r} does not support {type(op.module).__name__} at "
                f"{op.path!r}; use method='ibp'"
            )


def _in_shapes(ops: list[BoundOp], sample_shape: tuple[int, ...], like: Tensor) -> list:
    shapes = []
    z = like.new_zeros((1, *sample_shape))
    with torch.no_grad():
        for op in ops:
            shapes.append(tuple(z.shape[1:]))
            if not op.stateful:
                z = op.forward(z)
    return shapes


def make_problem(bnet, x: Tensor, threat: Threat, noise: Tensor | None, prop: Propagation,
                 method: str, plan: Plan | None = None) -> tuple[Problem, Intermediate]:
    """The problem of bounding ``bnet`` at ``x`` and its intermediate bounds from the
    IBP propagation ``prop``."""
    ops = bnet.ops
    check_supported(ops, method)
    lo, hi, static = bnet.encoding.input_interval(x, threat, noise)
    sample = bnet.encoding.sample_shape(x)
    slack = 0.0 if threat.is_point() else bnet.slack
    out_pad = None
    if slack and not ends_in_neuron(ops):
        out_pad = rounding_pad(prop.out_l, prop.out_u, slack)
    problem = Problem(
        ops=ops, in_shapes=_in_shapes(ops, sample, x), static=static,
        first_neuron=neuron_indices(ops)[0], lo=lo, hi=hi,
        x0=bnet.encoding.clean_frames(x, threat), threat=threat, out_pad=out_pad,
        slack=slack, num_steps=bnet.steps_for(x), batch=bnet.batch_size(x), plan=plan,
    )
    return problem, Intermediate.of(ops, prop)


# ------------------------------------------------------------------- neurons
def neuron_backward(problem: Problem, bounds: Intermediate, lines: LineChoice, index: int,
                    lam: Coefficients, steps: int) -> Backward:
    """Back through the neuron op ``problem.ops[index]`` (:meth:`NeuronOp.linear_backward`)
    with its intermediate bounds, the pass's line choice and the rounding slack."""
    cur_l, cur_u = bounds.cur[index]
    ctx = StepBounds(bounds.mem_l[index], bounds.mem_u[index], cur_l, cur_u, problem.slack,
                     lines.rule, lines.slopes.get(index), lines.record)
    return problem.ops[index].linear_backward(lam, steps, ctx)


# ------------------------------------------------------------ linear ops
def affine_backward(op: BoundOp, lam: Tensor, in_shape: tuple[int, ...], timed: bool):
    """Back through a linear op. ``lam``: ``[T, B, M, ...]`` if ``timed`` else ``[B, M, ...]``.

    Returns ``(lam_in, const [B, M], mag [B, M])``.
    """
    lead = lam.shape[: 3 if timed else 2]
    bias = op.bias(len(lam.shape) - len(lead) + 1)
    if bias is not None:
        total = lam.sum(0) if timed else lam
        const, mag = _dot(total, bias), _dot(lam.abs().sum(0) if timed else lam.abs(), bias.abs())
    else:
        const = mag = None
    new = op.backward(lam.reshape((-1, *lam.shape[len(lead):])), in_shape)
    return new.reshape((*lead, *in_shape)), const, mag


def relaxed_inputs(prop: Propagation) -> dict[int, tuple[Tensor, Tensor]]:
    """The input bounds of the relaxed ops of ``prop`` as tensors (per-step lists stacked)."""
    return {i: tuple(v if isinstance(v, Tensor) else torch.stack(v) for v in pair)
            for i, pair in prop.inputs.items()}


def relaxed_backward(op: BoundOp, lam: Tensor, bounds: tuple[Tensor, Tensor], timed: bool,
                     steps: int):
    """Back through a relaxed op (lines from its input bounds ``[T, B, ...]`` or
    ``[B, ...]``). ``lam``: ``[steps, B, M, ...]`` if ``timed`` else ``[B, M, ...]``.

    Returns ``(lam_in, const [B, M], mag [B, M])``.
    """
    lo, hi = bounds
    if not timed:
        return op.backward_relaxed(lam, lo, hi)
    lead = lam.shape[:3]
    new, c, m = op.backward_relaxed(lam.flatten(0, 1), lo[:steps].flatten(0, 1),
                                    hi[:steps].flatten(0, 1))
    return new.reshape((*lead, *new.shape[2:])), c.reshape(lead).sum(0), m.reshape(lead).sum(0)


# --------------------------------------------------------------- the pass
def back_substitute(problem: Problem, bounds: Intermediate, lines: LineChoice, start: int,
                    lam: Tensor | None, lam_mem: Tensor | None, steps: int,
                    mem_terms: dict[int, Tensor] | None = None, timed: bool = True,
                    ) -> tuple[Tensor, dict[int, list[Tensor | None]]]:
    """Lower bound ``[B, M]`` of ``sum_t lam_t · out_t + lam_mem_t · U_t`` (plus, for
    each neuron op ``i`` in ``mem_terms``, ``sum_t mem_terms[i]_t · U^i_t``: terms on the
    membranes of earlier layers, ``[T, B, M, ...]``, e.g. branch and bound's split
    multipliers), and (when ``lines.record``) op index -> the per-step σ of the
    neuron slopes used, else ``{}``.

    ``out_t`` is the output of ``ops[start - 1]`` (``lam``: ``[steps, B, M, ...]``
    or None); ``U_t`` the membrane of ``ops[start - 1]``, which must then be a
    neuron (``lam_mem`` likewise, or None). Only steps ``< steps`` are walked.
    ``timed=False``: ``lam`` is ``[B, M, ...]``, already summed over the steps of a
    static input (``start`` at or before the first neuron op).
    """
    ref = lam if lam is not None else lam_mem
    const = ref.new_zeros(ref.shape[1:3] if timed else ref.shape[:2])
    mag = torch.zeros_like(const)
    used = {}
    for i in reversed(range(start)):
        op = problem.ops[i]
        if op.stateful:
            mem = lam_mem if i == start - 1 else None
            if mem_terms and i in mem_terms:
                extra = mem_terms[i][:steps]
                mem = extra if mem is None else mem + extra
            res = neuron_backward(problem, bounds, lines, i, Coefficients(lam, mem), steps)
            lam, c, m, lam_mem = res.lam, res.const, res.mag, None
            if lines.record:
                used[i] = res.slopes
            if i == problem.first_neuron and problem.static:
                lam, timed = lam.sum(0), False
        else:
            if lam is None:  # nothing flows through (membrane readout tail)
                continue
            if op.relaxed:
                lam, c, m = relaxed_backward(op, lam, bounds.inputs[i], timed, steps)
            else:
                lam, c, m = affine_backward(op, lam, problem.in_shapes[i], timed)
        if c is not None:
            const, mag = const + c, mag + m
    bound, m = concretize(problem, lam, timed, steps)
    bound = const + bound
    if problem.slack:
        bound = bound - problem.slack * (mag + m)
    return bound, used


def concretize(problem: Problem, lam: Tensor, timed: bool, steps: int) -> tuple[Tensor, Tensor]:
    """Minimum of ``lam · input`` over the threat, and the magnitude of its terms
    (the threat's own geometry: ``concretize`` of :mod:`snncertify.threat`).

    ``lam``: ``[steps, B, M, ...]`` (timed) or ``[B, M, ...]`` (static input).
    Returns ``(value [B, M], mag [B, M])``.
    """
    lo, hi, x0 = problem.lo, problem.hi, problem.x0
    if timed:
        lo, hi = lo[:steps].unsqueeze(2), hi[:steps].unsqueeze(2)  # [steps, B, 1, ...]
        x0 = None if x0 is None else x0[:steps].unsqueeze(2)
    else:
        lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)  # [B, 1, ...]
    return problem.threat.concretize(lam, lo, hi, x0, timed)


# --------------------------------------------------------------- outputs
def full_spec(C: Tensor | None, batch: int, num_classes: int, like: Tensor) -> Tensor:
    if C is not None:
        return C
    eye = torch.eye(num_classes, dtype=like.dtype, device=like.device)
    return eye.unsqueeze(0).expand(batch, num_classes, num_classes)


def output_lower(bnet, problem: Problem, bounds: Intermediate, C: Tensor,
                 lines: LineChoice = SCROWN) -> Tensor:
    """Lower bound ``[B, M]`` of ``C @ scores`` (``C``: ``[B, M, K]``), in chunks of
    rows that fit the problem's memory plan."""
    step = problem.rows_per_pass(C.shape[1])
    if step >= C.shape[1]:
        return output_pass(bnet, problem, bounds, C, lines)[0]
    return torch.cat([output_pass(bnet, problem, bounds, C[:, a:a + step], lines)[0]
                      for a in range(0, C.shape[1], step)], dim=1)


def output_pass(bnet, problem: Problem, bounds: Intermediate, C: Tensor, lines: LineChoice,
                mem_terms: dict[int, Tensor] | None = None,
                ) -> tuple[Tensor, dict[int, list[Tensor | None]]]:
    """One back-substitution from the readout for all rows of ``C``: the lower bound
    ``[B, M]`` and the σ used (see :func:`back_substitute`, also for ``mem_terms``)."""
    T = problem.num_steps
    scale = 1.0 if bnet.readout == "count" else 1.0 / T
    lam = (C * scale).unsqueeze(0).expand((T, *C.shape))
    ops = problem.ops
    if bnet.readout == "membrane":
        last = max(neuron_indices(ops))
        return back_substitute(problem, bounds, lines, last + 1, None, lam, T, mem_terms)
    bound, used = back_substitute(problem, bounds, lines, len(ops), lam, None, T, mem_terms)
    if problem.out_pad is not None:
        bound = bound - torch.einsum("tbmk,tbk->bm", lam.abs(), problem.out_pad)
    return bound, used


def _nonzero_rows(C: Tensor) -> Tensor | None:
    """Indices ``[B, M']`` of the non-zero rows of ``C`` (in order), when every sample
    has the same number ``M' < M`` of them (a margin spec's row ``j = y``); else None."""
    keep = (C != 0).any(2)  # [B, M]
    counts = keep.sum(1)
    m = int(counts[0]) if counts.numel() else 0
    if m == C.shape[1] or not bool((counts == m).all()):
        return None
    return torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :m]


class SpecRows:
    """The rows a back-substitution bounds from below for a spec ``C`` ``[B, M, K]``.

    All-zero rows of ``C`` are dropped (their bound, exactly 0, is IBP's);
    ``-C`` rows are appended only when upper bounds are needed.
    """

    def __init__(self, C: Tensor, need_upper: bool = True) -> None:
        self.idx = _nonzero_rows(C)
        kept = C if self.idx is None else C.gather(
            1, self.idx.unsqueeze(2).expand(-1, -1, C.shape[2]))
        self.m = kept.shape[1]
        self.need_upper = need_upper
        self.rows = torch.cat([kept, -kept], dim=1) if need_upper else kept

    def merge(self, res: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Elementwise best of ``(lower, upper)`` ``[B, M]`` and the row bounds ``res``."""
        m, idx = self.m, self.idx
        lo = res[:, :m]
        if idx is None:
            lower = torch.maximum(lower, lo)
        else:
            lower = lower.scatter(1, idx, torch.maximum(lower.gather(1, idx), lo))
        if self.need_upper:
            hi = -res[:, m:]
            if idx is None:
                upper = torch.minimum(upper, hi)
            else:
                upper = upper.scatter(1, idx, torch.minimum(upper.gather(1, idx), hi))
        return lower, upper

    def as_rows(self, lower: Tensor, upper: Tensor) -> Tensor:
        """``(lower, upper)`` ``[B, M]`` in the rows' layout (lower bounds of the rows)."""
        if self.idx is not None:
            lower, upper = lower.gather(1, self.idx), upper.gather(1, self.idx)
        return torch.cat([lower, -upper], dim=1) if self.need_upper else lower


def linear_bounds(bnet, problem: Problem, bounds: Intermediate, C: Tensor, lower: Tensor,
                  upper: Tensor, need_upper: bool = True, lines: LineChoice = SCROWN
                  ) -> tuple[Tensor, Tensor]:
    """Elementwise best of ``(lower, upper)`` and one back-substitution for ``C``
    (lower bounds only, upper kept, when ``need_upper`` is False)."""
    spec = SpecRows(C, need_upper)
    return spec.merge(output_lower(bnet, problem, bounds, spec.rows, lines), lower, upper)


def _prepare(bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None):
    prop = bnet.interval_propagation(x, threat, noise)
    ibp_l, ibp_u = spec_interval(C, *readout_bounds(bnet.readout, prop))
    return prop, ibp_l, ibp_u


def best_of(lower: Tensor, upper: Tensor, ibp_l: Tensor, ibp_u: Tensor):
    return torch.maximum(lower, ibp_l), torch.minimum(upper, ibp_u)


def crown_ibp(bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None,
              need_upper: bool = True, plan: Plan | None = None):
    """CROWN-IBP: IBP intermediate bounds, one backward pass; differentiable.

    ``need_upper=False``: lower bounds only (the upper bound returned is IBP's).
    ``plan``: memory plan (spec rows per pass).
    """
    check_supported(bnet.ops, "crown-ibp")  # before any work
    prop, ibp_l, ibp_u = _prepare(bnet, x, threat, noise, C)
    if threat.is_point():  # the forward itself, exactly
        return ibp_l, ibp_u
    problem, bounds = make_problem(bnet, x, threat, noise, prop, "crown-ibp", plan)
    C = full_spec(C, bnet.batch_size(x), ibp_l.shape[1], ibp_l)
    return linear_bounds(bnet, problem, bounds, C, ibp_l, ibp_u, need_upper)


# ------------------------------------------------- intermediate refinement
def repropagate(problem: Problem, bounds: Intermediate) -> tuple[Intermediate, Propagation]:
    """S-IBP again, every neuron's membrane interval intersected at every step with
    ``bounds`` (refined) before thresholding. Returns the new bounds (those
    intersections) and the propagation. Every interval involved is sound, so the
    result is; it is at least as tight as both S-IBP and the refined bounds."""
    prop = propagate.interval(
        problem.ops, problem.lo, problem.hi, problem.static, problem.num_steps, problem.slack,
        mem_bounds={i: (bounds.mem_l[i], bounds.mem_u[i]) for i in neuron_indices(problem.ops)},
    )
    return Intermediate.of(problem.ops, prop), prop


def refine_intermediate(problem: Problem, bounds: Intermediate
                        ) -> tuple[Intermediate, Propagation]:
    """Tighten every unstable membrane bound ``U_t`` of every neuron op (in order)
    by its own back-substitution, keeping the elementwise best with ``bounds``.

    Before each neuron op after the first, and once at the end, the refined
    bounds are pushed forward with the exact interval rules
    (:func:`repropagate`): refining layer j then uses the tightened bounds of
    the layers before it, and step t those of the steps before it. A progress
    bar (tqdm, shown on a terminal) counts the (layer, step) pairs. Returns the
    refined bounds and the final interval propagation.
    """
    neurons = neuron_indices(problem.ops)
    bar = progress_bar(total=len(neurons) * problem.num_steps, desc="crown: refining membranes",
                       unit="step", leave=False, log=False)
    for n, j in enumerate(neurons):
        if n:
            bounds, _ = repropagate(problem, bounds)
        for t in range(problem.num_steps):
            bar.update()
            bounds = refine_step(problem, bounds, j, t)
    bar.close()
    return repropagate(problem, bounds)


def refine_step(problem: Problem, bounds: Intermediate, j: int, t: int) -> Intermediate:
    """``bounds`` with the unstable membrane bounds of op ``j`` at step ``t`` tightened,
    neurons in chunks that fit the problem's memory plan."""
    thr = problem.ops[j].threshold()
    lo, hi = bounds.mem_l[j][t], bounds.mem_u[j][t]
    unstable = ((lo <= thr) & (hi > thr)).flatten(1)  # [B, n]
    width = int(unstable.sum(1).max())
    if width == 0:
        return bounds
    idx = torch.topk(unstable.to(lo.dtype), width, dim=1).indices  # [B, W]
    chunk = max(1, problem.rows_per_pass(2 * width) // 2)
    new_l, new_u = lo.flatten(1), hi.flatten(1)
    own = own_layer_rows(problem, bounds, j, t)
    for a in range(0, width, chunk):
        sel = idx[:, a:a + chunk]
        if own is None:
            res, _ = back_substitute(problem, bounds, SCROWN, j + 1, None, _unit_rows(sel, lo, t),
                                     t + 1)
        else:
            res = own.below(problem, bounds, sel)
        m = sel.shape[1]
        cl, cu = res[:, :m], -res[:, m:]
        new_l = new_l.scatter(1, sel, torch.maximum(new_l.gather(1, sel), cl))
        new_u = new_u.scatter(1, sel, torch.minimum(new_u.gather(1, sel), cu))
    return bounds.with_membrane(j, t, new_l.reshape(lo.shape), new_u.reshape(hi.shape))


@dataclass(frozen=True)
class OwnLayerRows:
    """Every neuron's own stretch of its refinement rows, computed for all neurons at once.

    The row bounding ``±U^j_t`` of one neuron keeps its coefficients on that neuron
    alone while it walks back through layer ``j``'s own steps (a neuron's membrane
    depends on its own past and its input current only, and every relaxation line is
    per neuron), so the walk runs once, elementwise, with the neurons as samples:
    ``O(t n)`` instead of ``O(t n W)`` for ``W`` rows. Only then are the rows expanded
    onto the currents ``I^j`` and carried on through the layers below.

    Attributes:
        j: the op index of the layer refined.
        lam: per neuron its two rows' (+, -) coefficients on its own current,
            ``[t + 1, B, n, 2]``.
        const, mag: per neuron the rows' constants and term magnitudes ``[B, n, 2]``.
        shape: the layer's per-sample neuron shape.
    """

    j: int
    lam: Tensor
    const: Tensor
    mag: Tensor
    shape: tuple[int, ...]

    def below(self, problem: Problem, bounds: Intermediate, sel: Tensor) -> Tensor:
        """Lower bounds ``[B, 2W]`` of ``U^j_t`` (rows ``0..W-1``) and ``-U^j_t`` of the
        neurons ``sel`` ``[B, W]`` (flat indices)."""
        steps, B, n = self.lam.shape[:3]
        vals = _pick_rows(self.lam, sel)  # [steps, B, 2W]
        where = torch.cat([sel, sel], dim=1)  # [B, 2W]: each row's own neuron
        lam = vals.new_zeros((*vals.shape, n))
        lam.scatter_(3, where.expand(steps, *where.shape).unsqueeze(3), vals.unsqueeze(3))
        lam = lam.reshape((*vals.shape, *self.shape))
        timed = not (self.j == problem.first_neuron and problem.static)
        if not timed:
            lam = lam.sum(0)
        res, _ = back_substitute(problem, bounds, SCROWN, self.j, lam, None, steps, timed=timed)
        return res + _pick_rows(self.const, sel) - problem.slack * _pick_rows(self.mag, sel)


def _pick_rows(v: Tensor, sel: Tensor) -> Tensor:
    """The (+, -) row values ``v`` ``[..., B, n, 2]`` of the neurons ``sel`` ``[B, W]``,
    in the rows' layout ``[..., B, 2W]`` (the + rows first)."""
    g = v.gather(-2, sel.unsqueeze(-1).expand((*v.shape[:-3], *sel.shape, 2)))
    return torch.cat([g[..., 0], g[..., 1]], dim=-1)


def own_layer_rows(problem: Problem, bounds: Intermediate, j: int, t: int) -> OwnLayerRows | None:
    """The own-layer stretch of op ``j``'s refinement rows at step ``t``
    (:class:`OwnLayerRows`), or None where the neurons cannot run as samples (a
    per-neuron parameter tensor: the dense rows are used then)."""
    op = problem.ops[j]
    params = [op.beta(), op.threshold()] + ([op.alpha()] if hasattr(op, "alpha") else [])
    if any(p.numel() > 1 for p in params):
        return None
    like = bounds.mem_l[j][t]
    B, shape, n = like.shape[0], tuple(like.shape[1:]), like[0].numel()

    def flat(seq: list[Tensor] | None) -> list[Tensor] | None:
        return None if seq is None else [v.reshape(B * n, 1) for v in seq[: t + 1]]

    cur_l, cur_u = bounds.cur[j]
    ctx = StepBounds(flat(bounds.mem_l[j]), flat(bounds.mem_u[j]), flat(cur_l), flat(cur_u),
                     problem.slack)
    mem = like.new_zeros((t + 1, B * n, 2, 1))
    mem[t, :, 0], mem[t, :, 1] = 1.0, -1.0
    res = op.linear_backward(Coefficients(None, mem), t + 1, ctx)
    return OwnLayerRows(j, res.lam.reshape(t + 1, B, n, 2), res.const.reshape(B, n, 2),
                        res.mag.reshape(B, n, 2), shape)


def _unit_rows(sel: Tensor, like: Tensor, t: int) -> Tensor:
    """Coefficients ``[t + 1, B, 2W, ...]`` on the membranes of one layer (shaped like
    ``like`` ``[B, ...]``) picking, at step ``t`` only, the neurons ``sel`` ``[B, W]``
    with sign + (rows ``0..W-1``, lower bounds) and - (upper bounds)."""
    B, n = like.shape[0], like[0].numel()
    rows = torch.zeros((B, sel.shape[1], n), dtype=like.dtype, device=like.device)
    rows.scatter_(2, sel.unsqueeze(2), 1.0)
    rows = rows.reshape((B, sel.shape[1], *like.shape[1:]))
    rows = torch.cat([rows, -rows], dim=1)
    lam = torch.zeros((t + 1, *rows.shape), dtype=like.dtype, device=like.device)
    lam[t] = rows
    return lam


@dataclass(frozen=True)
class CrownBounds:
    """What full CROWN found: the problem (None at a point threat), its refined
    intermediate bounds, the spec ``C`` used and the bounds ``[B, M]``."""

    problem: Problem | None
    bounds: Intermediate | None
    spec: Tensor | None
    lower: Tensor
    upper: Tensor


def crown_bounds(bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None,
                 method: str = "crown", need_upper: bool = True, plan: Plan | None = None
                 ) -> CrownBounds:
    """Full CROWN: the refined problem and the elementwise best of CROWN, CROWN-IBP
    and IBP (``upper`` is IBP's when ``need_upper`` is False). The refinement
    records no autograd graph; the CROWN-IBP and final passes follow the caller's
    grad mode."""
    check_supported(bnet.ops, method)
    prop, ibp_l, ibp_u = _prepare(bnet, x, threat, noise, C)
    if threat.is_point():
        return CrownBounds(None, None, C, ibp_l, ibp_u)
    problem, bounds = make_problem(bnet, x, threat, noise, prop, method, plan)
    C = full_spec(C, bnet.batch_size(x), ibp_l.shape[1], ibp_l)
    lower, upper = linear_bounds(bnet, problem, bounds, C, ibp_l, ibp_u, need_upper)  # crown-ibp
    with torch.no_grad():
        bounds, prop = refine_intermediate(problem, bounds)
    # the refined bounds pushed forward by the exact interval rules
    lower, upper = best_of(*spec_interval(C, *readout_bounds(bnet.readout, prop)), lower, upper)
    for rule in ("split", "scrown"):  # the best of both slope rules
        lower, upper = linear_bounds(bnet, problem, bounds, C, lower, upper, need_upper,
                                     LineChoice(rule))
    return CrownBounds(problem, bounds, C, lower, upper)


def crown(bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None,
          need_upper: bool = True, plan: Plan | None = None):
    """Full CROWN: every unstable intermediate membrane refined, then the output.

    Returns the elementwise best of this, CROWN-IBP and IBP (upper: IBP's when
    ``need_upper`` is False).
    """
    res = crown_bounds(bnet, x, threat, noise, C, need_upper=need_upper, plan=plan)
    return res.lower, res.upper


def full_crown_cost(sizes: Sizes, rows: int) -> CostModel:
    """CROWN-IBP's model with three passes' graphs kept (the CROWN-IBP pass and the final
    pass with each slope rule; the refinement keeps none)."""
    c = linear_cost(sizes, rows)
    ibp = ibp_cost(sizes, rows)
    return CostModel(c.per_sample, c.per_row,
                     ibp.kept_per_sample + 3 * (c.kept_per_sample - ibp.kept_per_sample))


register_method("crown-ibp", crown_ibp, linear_cost)
register_method("crown", crown, full_crown_cost)

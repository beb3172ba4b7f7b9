"""S-CROWN: linear bounds by back-substitution over the unrolled (layer, time) DAG.

A lower bound of ``C @ scores`` is built backwards from the readout: every
quantity is kept as coefficients ``lam`` on the values of one node (per time
step), and each operation turns coefficients on its output into coefficients
on its input plus a constant:

* linear ops (Linear, Conv2d, AvgPool2d, BatchNorm, Flatten, Identity) are
  exact (``ops``' ``backward``/``bias``), batched over time; relaxed ops
  (MaxPool2d) replace themselves by lines chosen from their input bounds
  (``op.backward_relaxed``);
* a Leaky layer is walked from the last step to the first: the spike
  ``H(U_t - θ)`` and the decay-and-reset term ``f(U_{t-1})`` (``relax.py``)
  are replaced by lines chosen by the sign of their coefficient, and
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
output is bounded with both slope rules of the joint Leaky relaxation). Both
return the elementwise best of themselves and S-IBP. Spec rows and refined
neurons are processed in chunks that fit the call's memory budget
(:class:`~snncertify.budget.Plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import propagate
from .budget import CostModel, Plan, Sizes, ibp_cost
from .methods import register_method, spec_interval
from .ops import BoundOp
from .ops.base import dot_neurons as _dot
from .ops.base import rounding_pad
from .progress import progress_bar
from .propagate import Propagation, ends_in_leaky
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
        per_sample=ibp.per_sample + RELAX_TENSORS * step * sizes.leaky,
        per_row=ROW_TENSORS * step * sizes.widest,
        kept_per_sample=ibp.kept_per_sample + rows * ROW_KEPT * step * sizes.total,
    )


class UnsupportedOpError(TypeError):
    """An op without a linear rule (e.g. MaxPool2d) under a linear bound method."""


@dataclass
class Setup:
    """Everything a back-substitution needs about one bounding problem.

    Attributes:
        ops: the op list; ``in_shapes[i]``: per-sample input shape of ``ops[i]``.
        static: direct encoding (ops before the first Leaky run once).
        first_leaky: index of the first Leaky op.
        lo, hi: input box, ``[B, ...]`` if static else ``[T, B, ...]``.
        x0: the clean event frames (flip budget) or None.
        threat: the threat model.
        mem_l, mem_u: op index -> per-step membrane bounds, lists of ``[B, ...]``.
        cur: op index -> bounds ``(lower, upper)`` (T tensors ``[B, ...]`` each) of each neuron
            layer's input currents.
        out_pad: per-step output padding ``[T, B, K]`` (None if the net ends in a Leaky).
        inputs: op index -> input bounds of each relaxed op (``Propagation.inputs``).
        slack: rounding slack (0 at a point threat).
        num_steps, batch: T and B.
        rule: slope rule of the joint Leaky relaxation, ``"scrown"`` (the
            paper's) or ``"split"`` (spike and reset lines summed).
        alpha: op index -> σ tensor ``[T, B, M, ...]`` of the joint slopes (α-CROWN).
        alpha_start: op index -> a tensor the next pass fills with the σ
            of the slopes it uses (α-CROWN's starting point), else empty.
        plan: the memory plan (rows per pass); None: every row at once.
    """

    ops: list[BoundOp]
    in_shapes: list[tuple[int, ...]]
    static: bool
    first_leaky: int
    lo: Tensor
    hi: Tensor
    x0: Tensor | None
    threat: Threat
    mem_l: dict[int, list[Tensor]]
    mem_u: dict[int, list[Tensor]]
    cur: dict[int, tuple[Tensor, Tensor]]
    out_pad: Tensor | None
    inputs: dict[int, tuple[Tensor, Tensor]]
    slack: float
    num_steps: int
    batch: int
    rule: str = "scrown"
    alpha: dict[int, Tensor] = field(default_factory=dict)
    alpha_start: dict[int, Tensor] = field(default_factory=dict)
    plan: Plan | None = None

    def rows_per_pass(self, rows: int) -> int:
        return rows if self.plan is None else self.plan.rows_for(self.batch, rows)


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


def make_setup(bnet, x: Tensor, threat: Threat, noise: Tensor | None, prop: Propagation,
               method: str, plan: Plan | None = None) -> Setup:
    """Collect the input box, shapes and IBP membrane bounds (``prop``) for ``bnet``."""
    ops = bnet.ops
    check_supported(ops, method)
    lo, hi, static = bnet.encoding.input_interval(x, threat, noise)
    sample = bnet.encoding.sample_shape(x)
    leaky = [i for i, op in enumerate(ops) if op.stateful]
    mem_l, mem_u, cur = {}, {}, {}
    for i, rec in zip(leaky, prop.layers, strict=True):
        mem_l[i], mem_u[i] = rec.steps("mem_l"), rec.steps("mem_u")
        cur[i] = (rec.steps("cur_l"), rec.steps("cur_u"))
    slack = 0.0 if threat.is_point() else bnet.slack
    out_pad = None
    if slack and not ends_in_leaky(ops):
        out_pad = rounding_pad(prop.out_l, prop.out_u, slack)
    return Setup(
        ops=ops, in_shapes=_in_shapes(ops, sample, x), static=static, first_leaky=leaky[0],
        lo=lo, hi=hi, x0=bnet.encoding.clean_frames(x, threat), threat=threat,
        mem_l=mem_l, mem_u=mem_u, cur=cur, out_pad=out_pad, inputs=relaxed_inputs(prop),
        slack=slack, num_steps=bnet.steps_for(x),
        batch=bnet.batch_size(x), plan=plan,
    )


# --------------------------------------------------------------------- leaky
def leaky_backward(
    setup: Setup, index: int, lam_s: Tensor | None, lam_u: Tensor | None, steps: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Back through the Leaky op ``setup.ops[index]`` (:meth:`LeakyOp.linear_backward`)
    with the setup's membrane bounds, slope rule, α-CROWN σ and rounding slack."""
    return setup.ops[index].linear_backward(
        lam_s, lam_u, steps, setup.mem_l[index], setup.mem_u[index], setup.rule,
        setup.alpha.get(index), setup.alpha_start.get(index), setup.slack,
        *setup.cur[index])


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
def back_substitute(
    setup: Setup, start: int, lam: Tensor | None, lam_mem: Tensor | None, steps: int
) -> Tensor:
    """Lower bound ``[B, M]`` of ``sum_t lam_t · out_t + lam_mem_t · U_t``.

    ``out_t`` is the output of ``ops[start - 1]`` (``lam``: ``[steps, B, M, ...]``
    or None); ``U_t`` the membrane of ``ops[start - 1]``, which must then be a
    Leaky (``lam_mem`` likewise, or None). Only steps ``< steps`` are walked.
    """
    ref = lam if lam is not None else lam_mem
    const = ref.new_zeros(ref.shape[1:3])
    mag = torch.zeros_like(const)
    timed = True
    for i in reversed(range(start)):
        op = setup.ops[i]
        if op.stateful:
            lam, c, m = leaky_backward(setup, i, lam, lam_mem if i == start - 1 else None, steps)
            lam_mem = None
            if i == setup.first_leaky and setup.static:
                lam, timed = lam.sum(0), False
        else:
            if lam is None:  # nothing flows through (membrane readout tail)
                continue
            if op.relaxed:
                lam, c, m = relaxed_backward(op, lam, setup.inputs[i], timed, steps)
            else:
                lam, c, m = affine_backward(op, lam, setup.in_shapes[i], timed)
        if c is not None:
            const, mag = const + c, mag + m
    bound, m = concretize(setup, lam, timed, steps)
    bound = const + bound
    if setup.slack:
        bound = bound - setup.slack * (mag + m)
    return bound


def concretize(setup: Setup, lam: Tensor, timed: bool, steps: int) -> tuple[Tensor, Tensor]:
    """Minimum of ``lam · input`` over the threat, and the magnitude of its terms
    (the threat's own geometry: ``concretize`` of :mod:`snncertify.threat`).

    ``lam``: ``[steps, B, M, ...]`` (timed) or ``[B, M, ...]`` (static input).
    Returns ``(value [B, M], mag [B, M])``.
    """
    lo, hi, x0 = setup.lo, setup.hi, setup.x0
    if timed:
        lo, hi = lo[:steps].unsqueeze(2), hi[:steps].unsqueeze(2)  # [steps, B, 1, ...]
        x0 = None if x0 is None else x0[:steps].unsqueeze(2)
    else:
        lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)  # [B, 1, ...]
    return setup.threat.concretize(lam, lo, hi, x0, timed)


# --------------------------------------------------------------- outputs
def full_spec(C: Tensor | None, batch: int, num_classes: int, like: Tensor) -> Tensor:
    if C is not None:
        return C
    eye = torch.eye(num_classes, dtype=like.dtype, device=like.device)
    return eye.unsqueeze(0).expand(batch, num_classes, num_classes)


def output_lower(bnet, setup: Setup, C: Tensor) -> Tensor:
    """Lower bound ``[B, M]`` of ``C @ scores`` (``C``: ``[B, M, K]``), in chunks of
    rows that fit the setup's memory plan."""
    step = setup.rows_per_pass(C.shape[1])
    if step >= C.shape[1]:
        return _output_lower(bnet, setup, C)
    return torch.cat([_output_lower(bnet, setup, C[:, a:a + step])
                      for a in range(0, C.shape[1], step)], dim=1)


def _output_lower(bnet, setup: Setup, C: Tensor) -> Tensor:
    T = setup.num_steps
    scale = 1.0 if bnet.readout == "count" else 1.0 / T
    lam = (C * scale).unsqueeze(0).expand((T, *C.shape))
    ops = setup.ops
    if bnet.readout == "membrane":
        last = max(i for i, op in enumerate(ops) if op.stateful)
        return back_substitute(setup, last + 1, None, lam, T)
    bound = back_substitute(setup, len(ops), lam, None, T)
    if setup.out_pad is not None:
        bound = bound - torch.einsum("tbmk,tbk->bm", lam.abs(), setup.out_pad)
    return bound


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


def linear_bounds(bnet, setup: Setup, C: Tensor, lower: Tensor, upper: Tensor,
                  need_upper: bool = True) -> tuple[Tensor, Tensor]:
    """Elementwise best of ``(lower, upper)`` and one back-substitution for ``C``
    (lower bounds only, upper kept, when ``need_upper`` is False)."""
    spec = SpecRows(C, need_upper)
    return spec.merge(output_lower(bnet, setup, spec.rows), lower, upper)


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
    setup = make_setup(bnet, x, threat, noise, prop, "crown-ibp", plan)
    C = full_spec(C, bnet.batch_size(x), ibp_l.shape[1], ibp_l)
    return linear_bounds(bnet, setup, C, ibp_l, ibp_u, need_upper)


# ------------------------------------------------- intermediate refinement
def repropagate(setup: Setup) -> Propagation:
    """S-IBP again, every Leaky's membrane interval intersected at every step
    with the setup's (refined) bounds before thresholding; the setup's bounds
    become those intersections. Every interval involved is sound, so the
    result is; it is at least as tight as both S-IBP and the refined bounds."""
    leaky = [i for i, op in enumerate(setup.ops) if op.stateful]
    prop = propagate.interval(
        setup.ops, setup.lo, setup.hi, setup.static, setup.num_steps, setup.slack,
        mem_bounds={i: (setup.mem_l[i], setup.mem_u[i]) for i in leaky},
    )
    for i, rec in zip(leaky, prop.layers, strict=True):
        setup.mem_l[i], setup.mem_u[i] = rec.steps("mem_l"), rec.steps("mem_u")
        setup.cur[i] = (rec.steps("cur_l"), rec.steps("cur_u"))
    setup.inputs = relaxed_inputs(prop)
    return prop


def refine_intermediate(setup: Setup) -> Propagation:
    """Tighten every unstable membrane bound ``U_t`` of every Leaky (in order)
    by its own back-substitution, keeping the elementwise best with IBP.

    Before each Leaky after the first, and once at the end, the refined
    bounds are pushed forward with the exact interval rules
    (:func:`repropagate`): refining layer j then uses the tightened bounds of
    the layers before it. Neurons are refined in chunks that fit the setup's
    memory plan; a progress bar (tqdm, shown on a terminal) counts the
    (layer, step) pairs. Returns the final interval propagation.
    """
    first = True
    leaky = [j for j, op in enumerate(setup.ops) if op.stateful]
    bar = progress_bar(total=len(leaky) * setup.num_steps, desc="crown: refining membranes",
                       unit="step", leave=False, log=False)
    for j in leaky:
        op = setup.ops[j]
        if not first:
            repropagate(setup)
        first = False
        thr = op.threshold()
        for t in range(setup.num_steps):
            bar.update()
            lo, hi = setup.mem_l[j][t], setup.mem_u[j][t]
            unstable = ((lo <= thr) & (hi > thr)).flatten(1)  # [B, n]
            width = int(unstable.sum(1).max())
            if width == 0:
                continue
            idx = torch.topk(unstable.to(lo.dtype), width, dim=1).indices  # [B, W]
            n = unstable.shape[1]
            chunk = max(1, setup.rows_per_pass(2 * width) // 2)
            new_l, new_u = lo.flatten(1), hi.flatten(1)
            for a in range(0, width, chunk):
                sel = idx[:, a:a + chunk]
                rows = torch.zeros((lo.shape[0], sel.shape[1], n), dtype=lo.dtype, device=lo.device)
                rows.scatter_(2, sel.unsqueeze(2), 1.0)
                rows = rows.reshape((lo.shape[0], sel.shape[1], *lo.shape[1:]))
                rows = torch.cat([rows, -rows], dim=1)
                lam = torch.zeros((t + 1, *rows.shape), dtype=lo.dtype, device=lo.device)
                lam[t] = rows
                res = back_substitute(setup, j + 1, None, lam, t + 1)
                m = sel.shape[1]
                cl, cu = res[:, :m], -res[:, m:]
                new_l = new_l.scatter(1, sel, torch.maximum(new_l.gather(1, sel), cl))
                new_u = new_u.scatter(1, sel, torch.minimum(new_u.gather(1, sel), cu))
            setup.mem_l[j][t] = new_l.reshape(lo.shape)
            setup.mem_u[j][t] = new_u.reshape(hi.shape)
    bar.close()
    return repropagate(setup)


def crown_setup(bnet, x, threat, noise, prop, method: str, plan: Plan | None = None) -> Setup:
    """A setup with every unstable membrane bound refined (no autograd)."""
    setup = make_setup(bnet, x, threat, noise, prop, method, plan)
    with torch.no_grad():
        refine_intermediate(setup)
    return setup


def crown_bounds(bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None,
                 method: str = "crown", need_upper: bool = True, plan: Plan | None = None):
    """Full CROWN. Returns ``(setup, C, lower, upper)``: the refined setup, the
    spec used, and the elementwise best of CROWN, CROWN-IBP and IBP (``[B, M]``;
    ``upper`` is IBP's when ``need_upper`` is False). The refinement records no
    autograd graph; the CROWN-IBP and final passes follow the caller's grad mode."""
    check_supported(bnet.ops, method)
    prop, ibp_l, ibp_u = _prepare(bnet, x, threat, noise, C)
    if threat.is_point():
        return None, C, ibp_l, ibp_u
    setup = make_setup(bnet, x, threat, noise, prop, method, plan)
    C = full_spec(C, bnet.batch_size(x), ibp_l.shape[1], ibp_l)
    lower, upper = linear_bounds(bnet, setup, C, ibp_l, ibp_u, need_upper)  # crown-ibp
    with torch.no_grad():
        prop = refine_intermediate(setup)
    # the refined bounds pushed forward by the exact interval rules
    lower, upper = best_of(*spec_interval(C, *readout_bounds(bnet.readout, prop)), lower, upper)
    for rule in ("split", "scrown"):  # the best of both slope rules, ending on the default
        setup.rule = rule
        lower, upper = linear_bounds(bnet, setup, C, lower, upper, need_upper)
    return setup, C, lower, upper


def crown(bnet, x: Tensor, threat: Threat, noise: Tensor | None, C: Tensor | None,
          need_upper: bool = True, plan: Plan | None = None):
    """Full CROWN: every unstable intermediate membrane refined, then the output.

    Returns the elementwise best of this, CROWN-IBP and IBP (upper: IBP's when
    ``need_upper`` is False).
    """
    return crown_bounds(bnet, x, threat, noise, C, need_upper=need_upper, plan=plan)[2:]


def full_crown_cost(sizes: Sizes, rows: int) -> CostModel:
    """CROWN-IBP's model with three passes' graphs kept (the CROWN-IBP pass and the final
    pass with each slope rule; the refinement keeps none)."""
    c = linear_cost(sizes, rows)
    ibp = ibp_cost(sizes, rows)
    return CostModel(c.per_sample, c.per_row,
                     ibp.kept_per_sample + 3 * (c.kept_per_sample - ibp.kept_per_sample))


register_method("crown-ibp", crown_ibp, linear_cost)
register_method("crown", crown, full_crown_cost)

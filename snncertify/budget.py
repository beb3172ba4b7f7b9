"""Memory budget of the bound methods: how much they may materialise at once.

Every bound call runs within a budget in bytes (``memory_budget=`` on
:func:`snncertify.certify` or per call; default :func:`default_budget`). A
method splits its work into chunks that fit (the batch, then spec rows, then
the neurons full CROWN refines) using a per-method cost model,
:class:`CostModel`, in bytes per sample and per (sample, spec row). The model
is calibrated against measured peaks in ``benchmarks/bench_memory.py``.

What autograd keeps cannot be chunked away: when the call records a graph
(grad mode on and something requires grad), the whole batch's graph is
counted against the budget at once. Work that needs no gradient (full
CROWN's intermediate refinement, α-CROWN's inner loop) records none.
Where even one chunk does not fit, :class:`MemoryBudgetError` names the
method, the size and what to use instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .specs import parse_size

#: fraction of the available memory a call may use by default
CPU_FRACTION = 0.5
CUDA_FRACTION = 0.8


class MemoryBudgetError(MemoryError):
    """A bound computation cannot fit the memory budget, even in its smallest chunk."""


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory available now: free device memory on CUDA (plus what torch's caching
    allocator holds unused), else the system's ``MemAvailable`` (or free pages)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_budget(device: torch.device | str = "cpu") -> int:
    """Half the available system memory on the CPU, 80 % of free device memory on CUDA."""
    device = torch.device(device)
    frac = CUDA_FRACTION if device.type == "cuda" else CPU_FRACTION
    return int(frac * available_bytes(device))


def parse_budget(value: int | float | str | None, device: torch.device | str = "cpu") -> int:
    """Bytes from ``value``: a number of bytes, a string such as ``"4GB"`` or
    ``"512 MiB"``, or None for :func:`default_budget`."""
    if value is None:
        return default_budget(device)
    return parse_size(value, "memory_budget")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass(frozen=True)
class CostModel:
    """Estimated bytes of one bound call.

    Attributes:
        per_sample: bytes per sample that do not scale with spec rows (interval
            records, relaxations).
        per_row: bytes per (sample, spec row) of the widest chunk a method
            materialises (coefficients through the widest layer, all steps).
        kept_per_sample: bytes per sample autograd keeps when a graph is
            recorded (all spec rows included).
    """

    per_sample: float
    per_row: float
    kept_per_sample: float


@dataclass(frozen=True)
class Plan:
    """How a call is split: ``batch`` samples per chunk, ``rows`` spec rows per pass;
    ``budget`` and the cost model's ``per_row`` bytes size later chunks (neurons refined)."""

    batch: int
    rows: int
    budget: int
    per_row: float = 0.0

    def rows_for(self, batch: int, rows: int) -> int:
        """Rows per pass for a chunk of ``batch`` samples and ``rows`` rows in all."""
        return row_chunk(self.per_row, batch, rows, self.budget)


#: bytes of a call that no model counts (thread pools, allocator slack, small tensors)
FIXED_OVERHEAD = 64 * 2**20


def plan_chunks(method: str, cost: CostModel, batch: int, rows: int, budget: int,
                graph: bool) -> Plan:
    """The largest chunks that fit ``budget`` (bytes).

    Whole rows are preferred over large batch chunks: the batch is split first,
    then (at one sample per chunk) the spec rows. When a graph is recorded, what
    autograd keeps for the whole batch is reserved first and chunks share the rest;
    :data:`FIXED_OVERHEAD` is reserved always.

    Raises:
        MemoryBudgetError: one sample with one spec row does not fit, or the
            graph autograd keeps for the whole batch does not.
    """
    avail = budget - FIXED_OVERHEAD
    one_row = cost.per_sample + cost.per_row
    if graph:
        kept = batch * cost.kept_per_sample
        if kept + one_row > avail:
            raise MemoryBudgetError(
                f"method {method!r} would keep about {fmt_bytes(kept)} for autograd on a batch "
                f"of {batch} (budget {fmt_bytes(budget)}): call it under torch.no_grad() when "
                "no gradient is needed, or use a smaller batch, method='ibp', or a larger "
                "memory_budget")
        avail -= kept
    if one_row > avail:
        raise MemoryBudgetError(
            f"method {method!r} needs about {fmt_bytes(one_row + FIXED_OVERHEAD)} for a single "
            f"sample and spec row (budget {fmt_bytes(budget)}): use a cheaper method ('ibp' or "
            "'crown-ibp') or a larger memory_budget")
    per_full = cost.per_sample + rows * cost.per_row
    b = int(avail // per_full) if per_full > 0 else batch
    if b >= 1:
        return Plan(min(batch, b), rows, int(avail), cost.per_row)
    r = int((avail - cost.per_sample) // cost.per_row)
    return Plan(1, max(1, min(rows, r)), int(avail), cost.per_row)


def row_chunk(per_row: float, batch: int, rows: int, budget: int) -> int:
    """Rows per pass so that ``batch * rows * per_row`` bytes fit ``budget`` (at least 1)."""
    if per_row <= 0:
        return rows
    return max(1, min(rows, int(budget // (batch * per_row))))


@dataclass(frozen=True)
class Sizes:
    """Per-sample sizes of a network, in elements per time step: ``steps`` T, ``widest``
    (largest op input or output), ``total`` (sum of op outputs) and ``neurons`` (sum of
    neuron layers); ``itemsize`` bytes per element. A direct-encoded input is static
    before the current of the first neuron layer (computed and back-substituted
    once, not per step): those sizes count ``1/T``."""

    steps: int
    widest: float
    total: float
    neurons: int
    itemsize: int


def network_sizes(bnet, x: torch.Tensor) -> Sizes:
    """:class:`Sizes` of ``bnet`` on inputs like ``x`` (one zero sample through the ops)."""
    sample = bnet.encoding.sample_shape(x)
    steps = bnet.steps_for(x)
    z = torch.zeros((1, *sample), dtype=x.dtype, device=x.device)
    share = 1 / steps if bnet.encoding.static else 1.0  # static part: once, not per step
    widest = total = z.numel() * share
    neurons = 0
    ops = bnet.ops
    with torch.no_grad():
        for i, op in enumerate(ops):
            if op.stateful:
                neurons += z.numel()
            else:
                z = op.fixed_forward(z)
            if i + 1 < len(ops) and ops[i + 1].stateful:
                share = 1.0  # a neuron's input current is per step in every pass
            widest, total = max(widest, z.numel() * share), total + z.numel() * share
    return Sizes(steps, widest, total, neurons, x.element_size())


#: tensors of the interval pass alive at once, per element per step (calibrated)
IBP_TENSORS = 12
#: tensors autograd keeps per element per step of the interval pass
IBP_KEPT = 10


def ibp_cost(sizes: Sizes, rows: int) -> CostModel:
    step = sizes.steps * sizes.itemsize
    return CostModel(per_sample=IBP_TENSORS * step * sizes.total, per_row=0.0,
                     kept_per_sample=IBP_KEPT * step * sizes.total)

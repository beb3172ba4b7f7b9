"""Readouts: from per-step outputs to class scores ``[B, K]``.

* ``rate``: mean over steps of the network's per-step output (the spike rate
  of the last Leaky when the network ends with one);
* ``count``: sum over steps (spike count);
* ``membrane``: mean over steps of the last Leaky's membrane potential.

All three are non-decreasing in their inputs, so bounds map through directly.
"""

from __future__ import annotations

from torch import Tensor

from .propagate import Propagation

READOUTS = ("rate", "count", "membrane")


def _reduce(readout: str, seq: Tensor) -> Tensor:
    return seq.sum(0) if readout == "count" else seq.mean(0)


def readout_bounds(readout: str, prop: Propagation) -> tuple[Tensor, Tensor]:
    """``(lower, upper)`` scores ``[B, K]`` of a propagation (equal for a forward)."""
    if readout == "membrane":
        last = prop.layers[-1]
        lo, hi = last.mem_l, last.mem_u
    else:
        lo, hi = prop.out_l, prop.out_u
    if lo.ndim != 3:
        raise ValueError(
            f"the network's per-step output must be [B, K] for a readout, got "
            f"{list(lo.shape[1:])}: add nn.Flatten() before the last layers"
        )
    lower = _reduce(readout, lo)
    return lower, (lower if hi is lo else _reduce(readout, hi))

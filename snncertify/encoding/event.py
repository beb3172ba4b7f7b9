"""``Event``: the input already is binary frames; threats flip spikes."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..gradmode import GradMode
from ..milp import to_np
from ..threat import FlipBudget, FlipMask, Threat
from .base import Encoding, MilpInputs, register_encoding


@register_encoding
@dataclass(frozen=True)
class Event(Encoding):
    """Binary frames ``[T, B, ...]`` (values 0 or 1) are the per-step input; the
    model's ``num_steps`` may be None (then the frames set T). Threats: a
    :class:`~snncertify.threat.FlipMask` (``eps`` a bool mask) or a
    :class:`~snncertify.threat.FlipBudget` (``eps`` an int). No L-inf attack applies."""

    name = "event"
    time_major = True
    attackable = False
    threat_types = (FlipMask, FlipBudget)
    threat_words = "a FlipMask or FlipBudget threat"

    def check_num_steps(self, num_steps: int | None) -> None:
        if num_steps is not None:
            super().check_num_steps(num_steps)

    def steps_for(self, x: Tensor, num_steps: int | None) -> int:
        if num_steps is not None and x.shape[0] != num_steps:
            raise ValueError(f"event input has {x.shape[0]} frames, the model runs {num_steps} steps")
        return x.shape[0]

    def _check_values(self, x: Tensor, what: str, hint: str) -> None:
        if bool(torch.isnan(x).any()):
            raise ValueError(f"{what} contains NaN")
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("event input must be binary frames (values 0 or 1)")

    def encode(self, x: Tensor, noise: Tensor | None,
               grad: GradMode | None = None) -> tuple[Tensor, bool]:
        return x, False

    def _parse_eps(self, eps, batch_size: int) -> Threat:
        if isinstance(eps, Tensor) and eps.dtype == torch.bool:
            return FlipMask(eps)
        if isinstance(eps, numbers.Integral) and not isinstance(eps, bool):
            return FlipBudget(int(eps))
        raise ValueError(
            "event encoding: eps must be a bool mask of positions that may flip "
            f"or an int flip budget, got {type(eps).__name__}"
        )

    def input_interval(self, x: Tensor, threat: Threat,
                       noise: Tensor | None) -> tuple[Tensor, Tensor, bool]:
        mask = threat.flippable(x)
        on = x > 0
        return (on & ~mask).to(x.dtype), (on | mask).to(x.dtype), False

    def clean_frames(self, x: Tensor, threat: Threat) -> Tensor | None:
        return x if isinstance(threat, FlipBudget) else None

    def milp_inputs(self, model, x: Tensor, threat: Threat, noise: Tensor | None, b: int,
                    num_steps: int) -> MilpInputs:
        """A binary per position that may flip (the threat adds its budget row)."""
        T = num_steps
        frames = to_np(x[:, b])  # [T, ...]
        shape = tuple(frames.shape[1:])
        n = math.prod(shape)
        free = threat.flippable(x)[:, b].reshape(T, n).cpu().numpy()
        xs = frames.reshape(T, n)
        cols = model.add_vars(np.zeros(int(free.sum())), 1.0, integer=True)
        vals = np.zeros((T, n), dtype=np.int64)
        vals[free] = cols
        threat.add_milp_rows(model, free, vals, xs)
        seq = [model.mixed_expr(free[t], vals[t][free[t]], xs[t], shape, True) for t in range(T)]

        def witness(sol: np.ndarray) -> Tensor:
            out = xs.copy()
            out[free] = np.round(sol[vals[free]])
            return torch.from_numpy(out).to(x.dtype).reshape((T, 1, *shape)).to(x.device)

        return MilpInputs(None, seq, witness)

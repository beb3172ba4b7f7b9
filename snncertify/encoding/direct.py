"""``Direct``: the image is the first layer's input current at every step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..gradmode import GradMode
from ..milp import to_np
from ..threat import LinfBall, Threat
from .base import Encoding, MilpInputs, register_encoding


@register_encoding
@dataclass(frozen=True)
class Direct(Encoding):
    """``x`` ``[B, ...]`` in [0, 1] is the input at every step: a static sequence,
    computed once up to the first neuron layer. Threat: an L-inf ball in [0, 1]."""

    name = "direct"
    static = True
    threat_types = (LinfBall,)
    threat_words = "an L-inf eps"

    def encode(self, x: Tensor, noise: Tensor | None,
               grad: GradMode | None = None) -> tuple[Tensor, bool]:
        return x, True

    def _parse_eps(self, eps, batch_size: int) -> Threat:
        return LinfBall.parse(eps, batch_size)

    def input_interval(self, x: Tensor, threat: Threat,
                       noise: Tensor | None) -> tuple[Tensor, Tensor, bool]:
        lo, hi = threat.box(x)
        return lo, hi, True

    def milp_inputs(self, model, x: Tensor, threat: Threat, noise: Tensor | None, b: int,
                    num_steps: int) -> MilpInputs:
        """One continuous variable per pixel in its box, the same at every step."""
        lo_t, hi_t = threat.box(x)
        lo, hi = to_np(lo_t[b]).ravel(), to_np(hi_t[b]).ravel()
        shape = tuple(x.shape[1:])
        cols = model.add_vars(lo, hi, integer=False)

        def witness(sol: np.ndarray) -> Tensor:
            v = np.clip(sol[cols], lo, hi)
            return torch.from_numpy(v).to(x.dtype).reshape((1, *shape)).to(x.device)

        return MilpInputs(model.var_expr(cols, shape), None, witness, continuous=True)

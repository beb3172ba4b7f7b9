"""snncertify: certified and measured robustness for snnTorch spiking networks.

>>> bnet = certify(net, num_steps=10)            # net: an unmodified snnTorch Sequential
>>> lower, upper = bnet.bounds(x, eps=0.02)      # [B, K] each, sound for |dx|_inf <= eps
>>> ok = bnet.certified(x, y, eps=0.02)           # bool [B]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import alpha as _alpha  # noqa: F401  (registers "alpha-crown")
from . import bab as _bab  # noqa: F401  (registers "bab": branch and bound)
from . import crown as _crown  # noqa: F401  (registers "crown-ibp", "crown")
from . import exact as _exact  # noqa: F401  (registers "exact": small nets only)
from .budget import MemoryBudgetError
from .correctness import strict_correct
from .encoding import Direct, Encoding, Event, Rate, register_encoding
from .methods import available_methods, register_method
from .threat import FlipBudget, FlipMask, LinfBall
from .wrapper import BoundedSNN

__version__ = "0.1.0"


def certify(
    net: nn.Sequential,
    num_steps: int | None,
    encoding: str | Encoding = "direct",
    readout: str = "rate",
    seed: int | None = None,
    slack: float = 1e-5,
    memory_budget: int | float | str | None = None,
) -> BoundedSNN:
    """Wrap an unmodified snnTorch network for forward passes and sound bounds.

    Args:
        net: ``nn.Sequential`` (nested allowed) of Linear, Conv2d, AvgPool2d,
            MaxPool2d, Flatten, Dropout/Identity, BatchNorm1d/2d (eval) and
            ``snn.Leaky`` (reset subtract/zero/none; beta and threshold scalar,
            per-neuron or per-channel, learnable or not).
        num_steps: time steps T (may be None for the event encoding).
        encoding: an :class:`~snncertify.encoding.Encoding` or its name:
            ``"direct"`` (image as current at every step), ``"rate"``
            (Bernoulli spikes ``x > r``, one noise draw per certificate; the
            same as ``Rate(seed)``) or ``"event"`` (binary frames ``[T, B, ...]``).
        readout: ``"rate"`` (mean of the last layer's spikes), ``"count"``
            (spike count) or ``"membrane"`` (mean membrane of the last Leaky).
        seed: seed of the default rate-encoding noise draw (with a name; an
            encoding object carries its own, default 0).
        slack: relative widening of membrane bounds against float rounding
            (applied only when the threat is not a single point).
        memory_budget: bytes (or a size string such as ``"4GB"``) a bound call
            may materialise; None: half the available memory (80 % of free
            device memory on CUDA), read at each call. Work is chunked to fit
            (:mod:`snncertify.budget`); what cannot fit raises
            :class:`~snncertify.budget.MemoryBudgetError`.

    Returns:
        A :class:`BoundedSNN` (an ``nn.Module``) sharing ``net``'s parameters.

    Raises:
        TypeError: an unsupported module (class and position named).
        ValueError: a bad argument.
    """
    return BoundedSNN(net, num_steps, encoding, readout, seed, slack, memory_budget)


@torch.no_grad()
def verified_accuracy(
    bnet: BoundedSNN, x: Tensor, y: Tensor, eps, method: str = "ibp", batch_size: int = 256,
    noise: Tensor | None = None,
) -> float:
    """Fraction of samples that are certified (which implies correctly classified).

    ``x``: ``[N, ...]`` (``[T, N, ...]`` frames for the event encoding), ``y``: ``[N]``;
    ``noise`` (rate encoding): ``[T, N, ...]``. Batched by ``batch_size``.
    """
    threat = bnet.threat(x, eps)
    hits = 0
    for i in range(0, len(y), batch_size):
        sl = slice(i, i + batch_size)
        nz = None if noise is None else noise[:, sl]
        hits += int(bnet.certified(bnet.encoding.take(x, sl), y[sl], threat.take(sl, x.ndim),
                                   method, nz).sum())
    return hits / len(y)


__all__ = [
    "BoundedSNN",
    "Direct",
    "Encoding",
    "Event",
    "FlipBudget",
    "FlipMask",
    "LinfBall",
    "MemoryBudgetError",
    "Rate",
    "available_methods",
    "certify",
    "register_encoding",
    "register_method",
    "strict_correct",
    "verified_accuracy",
]

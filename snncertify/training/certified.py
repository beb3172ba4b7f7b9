"""Certified training: cross-entropy on the worst-case margins from the bounds.

The worst-case logits are ``z_j = -m_j`` with ``m_j`` the lower bound of
``score_y - score_j`` (``z_y = 0``), as in IBP / CROWN-IBP training (Gowal et
al. 2018; Zhang et al. 2020) and the S-IBP training of Liang et al. (2022).
eps ramps linearly from 0 to its target over the first ``ramp`` fraction of
training, and the clean term's weight ``kappa`` from 1 to ``kappa_end``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..wrapper import BoundedSNN
from .clean import LossFn, train


def linear_ramp(progress: float, ramp: float) -> float:
    """0 -> 1 over the first ``ramp`` fraction of training, then 1."""
    return 1.0 if ramp <= 0 else min(1.0, progress / ramp)


def certified_loss(
    eps: float, method: str = "ibp", kappa_end: float = 0.5, ramp: float = 0.5,
    logit_scale: float = 10.0,
) -> LossFn:
    """``kappa * CE(clean) + (1 - kappa) * CE(worst-case margins)`` with ramped eps and kappa."""

    def loss(bnet: BoundedSNN, x: Tensor, y: Tensor, noise, progress: float) -> Tensor:
        r = linear_ramp(progress, ramp)
        kappa = 1.0 - r * (1.0 - kappa_end)
        clean = F.cross_entropy(logit_scale * bnet(x, noise=noise), y)
        if r == 0:
            return clean
        margins = bnet.margin_bounds(x, y, eps * r, method=method, noise=noise)
        worst = F.cross_entropy(-logit_scale * margins, y)
        return kappa * clean + (1 - kappa) * worst

    return loss


def train_certified(
    bnet: BoundedSNN, x: Tensor, y: Tensor, eps: float, method: str = "ibp",
    kappa_end: float = 0.5, ramp: float = 0.5, logit_scale: float = 10.0, **kw,
) -> list[float]:
    """Certified training with ``method``'s bounds; ``kw`` as for :func:`train`."""
    loss = certified_loss(eps, method, kappa_end, ramp, logit_scale)
    return train(bnet, x, y, loss, desc=f"certified ({method})", **kw)

"""Training loop (BPTT through the surrogate gradients) and clean training."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..wrapper import BoundedSNN

#: ``loss_fn(bnet, x, y, noise, progress)`` -> scalar loss; ``progress`` in [0, 1) is
#: the fraction of training done (for schedules).
LossFn = Callable[[BoundedSNN, Tensor, Tensor, Tensor | None, float], Tensor]


def clean_loss(logit_scale: float = 10.0) -> LossFn:
    """Cross-entropy on ``logit_scale * scores``."""

    def loss(bnet, x, y, noise, progress):
        return F.cross_entropy(logit_scale * bnet(x, noise=noise), y)

    return loss


def train(
    bnet: BoundedSNN,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    epochs: int = 10,
    lr: float = 5e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Adam over mini-batches of ``(x [N, ...], y [N])``; returns each epoch's mean loss.

    Rate encoding draws fresh noise for every batch from a generator seeded
    with ``seed``. Deterministic under ``seed`` on a given device.
    """
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=x.device).manual_seed(seed)
    opt = torch.optim.Adam(bnet.parameters(), lr=lr)
    bnet.train()
    history = []
    steps_per_epoch = -(-len(y) // batch_size)
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        order = torch.randperm(len(y), generator=gen).to(x.device)
        total = 0.0
        for step, i in enumerate(range(0, len(y), batch_size)):
            idx = order[i : i + batch_size]
            xb, yb = x[idx], y[idx]
            noise = bnet.draw_noise(xb, noise_gen) if bnet.encoding == "rate" else None
            done = (epoch * steps_per_epoch + step) / (epochs * steps_per_epoch)
            loss = loss_fn(bnet, xb, yb, noise, done)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(y))
        bar.set_postfix(loss=f"{history[-1]:.3f}")
    bnet.eval()
    return history


def train_clean(bnet: BoundedSNN, x: Tensor, y: Tensor, logit_scale: float = 10.0, **kw) -> list[float]:
    """Clean BPTT training (cross-entropy); ``kw`` as for :func:`train`."""
    return train(bnet, x, y, clean_loss(logit_scale), **kw)


@torch.no_grad()
def evaluate_accuracy(bnet: BoundedSNN, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Clean accuracy; a tie for the top score counts as an error."""
    hits = 0
    for i in range(0, len(y), batch_size):
        scores = bnet(x[i : i + batch_size])
        top = scores.max(1, keepdim=True).values
        unique = (scores == top).sum(1) == 1
        hits += int(((scores.argmax(1) == y[i : i + batch_size]) & unique).sum())
    return hits / len(y)

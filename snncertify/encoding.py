"""Input encodings: how an input becomes the first layer's input at each step.

* ``direct``: the image ``x`` ``[B, ...]`` is the input at every step (a
  "static" sequence, computed once until the first Leaky).
* ``rate``: ``S_t = 1[x > r_t]`` with uniform noise ``r`` ``[T, B, ...]``
  (by default one seeded pattern shared by all samples, :func:`rate_pattern`);
  the gradient w.r.t. ``x`` is straight-through (the exact encoder has zero
  gradient almost everywhere, which would mask every gradient attack).
* ``event``: the input already is binary frames ``[T, B, ...]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .gradmode import GradMode, OwnSurrogate
from .threat import FlipBudget, FlipMask, LinfBall, Threat

ENCODINGS = ("direct", "rate", "event")
_OWN = OwnSurrogate()


def check_input(encoding: str, x: Tensor) -> None:
    """ValueError unless ``x`` is a finite float tensor in [0, 1] (binary for events)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating point tensor, got {x.dtype}")
    if x.ndim < (3 if encoding == "event" else 2):
        want = "[T, B, ...]" if encoding == "event" else "[B, ...]"
        raise ValueError(f"{encoding} input must have shape {want}, got {list(x.shape)}")
    if bool(torch.isnan(x).any()):
        raise ValueError("x contains NaN")
    if encoding == "event":
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("event input must be binary frames (values 0 or 1)")
    elif bool((x < 0).any()) or bool((x > 1).any()):
        raise ValueError(
            f"x must lie in [0, 1], got values in [{x.min().item():.4g}, {x.max().item():.4g}]"
        )


def rate_pattern(num_steps: int, sample_shape: tuple[int, ...], seed: int) -> Tensor:
    """The default rate-noise pattern ``[T, *sample_shape]`` (CPU, float32), uniform
    in [0, 1) from a generator seeded with ``seed``: the same for every sample,
    batch and device."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.rand((num_steps, *sample_shape), generator=gen)


def check_noise(noise: Tensor, x: Tensor, num_steps: int) -> None:
    want = (num_steps, *x.shape)
    if tuple(noise.shape) != want:
        raise ValueError(f"rate noise must have shape {list(want)}, got {list(noise.shape)}")


def encode(
    encoding: str, x: Tensor, noise: Tensor | None, grad: GradMode | None = None
) -> tuple[Tensor, bool]:
    """First-layer input. Returns ``(z, static)``: ``z`` is ``[B, ...]`` when
    static (same at every step), else ``[T, B, ...]``. ``grad`` forms the rate
    encoder's spikes (default: exact values, straight-through gradient)."""
    if encoding == "direct":
        return x, True
    if encoding == "rate":
        return (grad or _OWN).encode_rate(x, noise), False
    return x, False


def encode_interval(
    encoding: str, x: Tensor, threat: Threat, noise: Tensor | None
) -> tuple[Tensor, Tensor, bool]:
    """Bounds of the first-layer input over the threat. Returns ``(lower, upper, static)``."""
    if encoding == "event":
        mask = threat.mask if isinstance(threat, (FlipMask, FlipBudget)) else None
        if mask is None:  # a budget anywhere: every position may flip
            mask = torch.ones_like(x, dtype=torch.bool)
        mask = torch.broadcast_to(mask.to(x.device), x.shape)
        on = x > 0
        return (on & ~mask).to(x.dtype), (on | mask).to(x.dtype), False
    assert isinstance(threat, LinfBall)
    eps = torch.as_tensor(threat.eps, dtype=x.dtype, device=x.device)
    if eps.ndim == 1:
        eps = eps.reshape((-1,) + (1,) * (x.ndim - 1))
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    if threat.is_point():
        lo, hi = x, x
    if encoding == "direct":
        return lo, hi, True
    return (lo > noise).to(x.dtype), (hi > noise).to(x.dtype), False

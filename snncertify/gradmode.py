"""Gradient modes: how a forward pass forms spikes, passed explicitly to the core forward.

``BoundedSNN.forward(x, noise, grad=mode)`` hands ``mode`` to every neuron layer (Leaky, Synaptic) and to
the rate encoder for that call only: nothing is patched on the ops, so calls
with different modes may run concurrently (attacks inside training loops,
threads, DDP). ``grad=None`` is :class:`OwnSurrogate`, the network's own
``spike_grad``.

Every mode but :class:`Relaxed` keeps the forward VALUES of the real network
(strict Heaviside spikes, bit-identical scores) and changes only the backward:

* :class:`OwnSurrogate`: each neuron's own ``spike_grad`` (BPTT).
* :class:`Surrogate`: another spike function ``u -> H(u)`` for every neuron.
* :class:`RateLaw`: the spikes' gradient is that of a rate law of the
  time-averaged input current (BPTR / RGA-style; formula in the class).

:class:`Relaxed` is a different network: every Heaviside becomes
``sigmoid(u / (tau |θ|))`` in the VALUES too, and the rate encoder
``sigmoid((x - r) / tau_in)``. Its scores are continuous in the input, which
gives attacks a direction on the plateaus of spike-count outputs; they are never
a prediction (``exact = False``), and attacks judge success on the exact forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["GradMode", "OwnSurrogate", "RateLaw", "Relaxed", "Surrogate"]


class GradMode:
    """Base: the network's own surrogate. Subclasses override the hooks below.

    Hooks (``op`` is a ``NeuronOp``; tensors are ``[B, ...]`` per step):
        spike(op, u): spikes from ``u = U - θ``.
        reset(op, s): the reset signal carried to the next step (detached).
        finish(op, cur, spikes): post-process a layer's T spikes (e.g. a gradient bump).
        encode_rate(x, noise): rate-encoder spikes ``[T, B, ...]``.
    """

    name = "bptt"
    #: forward values equal the real network's (False only for relaxations)
    exact = True

    def spike(self, op, u: Tensor) -> Tensor:
        return op.module.spike_grad(u).to(u.dtype)  # snnTorch's spikes are float32

    def reset(self, op, s: Tensor) -> Tensor:
        return s.detach()

    def finish(self, op, cur: list[Tensor], spikes: list[Tensor]) -> list[Tensor]:
        return spikes

    def encode_rate(self, x: Tensor, noise: Tensor) -> Tensor:
        spikes = (x > noise).to(x.dtype)
        if x.requires_grad:
            spikes = spikes + (x - x.detach())  # + exact 0: straight-through gradient
        return spikes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class OwnSurrogate(GradMode):
    """Each neuron's own ``spike_grad`` (the default)."""


class Surrogate(GradMode):
    """Another spike function for every neuron: ``fn(u)`` must be the strict
    Heaviside ``u > 0`` in its values; only its backward differs."""

    def __init__(self, fn: Callable[[Tensor], Tensor], name: str = "surrogate") -> None:
        if not callable(fn):
            raise TypeError(f"a surrogate is a callable u -> spikes, got {type(fn).__name__}")
        self.fn = fn
        self.name = name

    def spike(self, op, u: Tensor) -> Tensor:
        return self.fn(u).to(u.dtype)


class RateLaw(GradMode):
    """Exact values; each layer's spikes carry the gradient of a rate law.

    For a Leaky with currents ``I`` (T steps) the spikes act in the backward as
    the constant sequence ``ρ(Ī)``, ``Ī = mean_t I_t``::

        ρ(Ī) = clamp((Ī - lo) / (θ - lo), 0, 1),   lo = θ / Σ_{k<T} β^k

    ``lo`` is the smallest constant current that fires within T steps, ``θ`` the
    one that fires at every step; so ``∂L/∂I_t = (1/T) ρ'(Ī) Σ_τ ∂L/∂S_τ``.
    """

    name = "rate"

    def spike(self, op, u: Tensor) -> Tensor:
        return (u > 0).to(u.dtype)

    def finish(self, op, cur: list[Tensor], spikes: list[Tensor]) -> list[Tensor]:
        cur_t = torch.stack(cur)
        beta = op.beta()
        thr = torch.as_tensor(op.threshold(), dtype=cur_t.dtype, device=cur_t.device)
        geo = sum(beta**k for k in range(len(cur)))  # Σ_{k<T} β^k, >= 1
        lo = thr / geo
        width = (thr - lo).clamp_min(1e-3)
        rate = ((cur_t.mean(0) - lo) / width).clamp(0, 1)
        bump = rate - rate.detach()  # exactly 0, carries d rate / d currents
        return [s.detach() + bump for s in spikes]


class Relaxed(GradMode):
    """Sigmoid spikes in the values: a smooth stand-in network for crafting attacks.

    Args:
        tau: temperature relative to the threshold: ``S = sigmoid(u / (tau |θ|))``.
        tau_in: temperature of the rate encoder ``sigmoid((x - r) / tau_in)``
            (input units).
    """

    exact = False

    def __init__(self, tau: float = 0.1, tau_in: float = 0.05) -> None:
        if not (tau > 0 and tau_in > 0):
            raise ValueError(f"tau and tau_in must be > 0, got {tau}, {tau_in}")
        self.tau, self.tau_in = float(tau), float(tau_in)
        self.name = f"relaxed(tau={self.tau:g})"

    def spike(self, op, u: Tensor) -> Tensor:
        scale = torch.as_tensor(op.threshold(), dtype=u.dtype, device=u.device).abs()
        return torch.sigmoid(u / (self.tau * scale.clamp_min(1e-3)))

    def reset(self, op, s: Tensor) -> Tensor:
        return s  # a soft reset, differentiable like everything else here

    def encode_rate(self, x: Tensor, noise: Tensor) -> Tensor:
        return torch.sigmoid((x - noise) / self.tau_in)

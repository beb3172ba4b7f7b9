"""``Rate``: Bernoulli spikes ``S_t = 1[x > r_t]`` for one seeded noise draw."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..gradmode import GradMode, OwnSurrogate
from ..milp import to_np
from ..threat import LinfBall, Threat
from .base import Encoding, MilpInputs, register_encoding

_OWN = OwnSurrogate()


def rate_pattern(num_steps: int, sample_shape: tuple[int, ...], seed: int) -> Tensor:
    """The default rate-noise pattern ``[T, *sample_shape]`` (CPU, float32), uniform
    in [0, 1) from a generator seeded with ``seed``: the same for every sample,
    batch and device."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.rand((num_steps, *sample_shape), generator=gen)


class _ZeroGrad(torch.autograd.Function):
    """Identity forward, zero gradient: the true rate encoder's derivative."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return torch.zeros_like(g)


@register_encoding
@dataclass(frozen=True)
class Rate(Encoding):
    """``S_t = 1[x > r_t]`` for ``x`` ``[B, ...]`` in [0, 1] and noise ``r`` ``[T, B, ...]``.

    Draw policy: a call without ``noise=`` uses ONE pattern ``[T, *sample_shape]``
    (:func:`rate_pattern` with ``seed``, on the CPU) shared by every sample, so
    a sample's default draw never depends on its batch, its position in it or
    the device. :meth:`fresh_noise` draws independent noise for every sample
    and step (training, EOT attacks). The gradient w.r.t. ``x`` is
    straight-through (the exact encoder has zero gradient almost everywhere,
    which would mask every gradient attack). Threat: an L-inf ball on ``x``;
    a certificate holds for the one draw used.
    """

    seed: int = 0

    name = "rate"
    stochastic = True
    threat_types = (LinfBall,)
    threat_words = "an L-inf eps"

    def pattern(self, num_steps: int, sample_shape: tuple[int, ...]) -> Tensor:
        """The default pattern ``[T, *sample_shape]`` (CPU, float32)."""
        return rate_pattern(num_steps, sample_shape, self.seed)

    def default_noise(self, x: Tensor, num_steps: int) -> Tensor:
        """The default draw ``[T, *x.shape]`` (one pattern, expanded over the batch)."""
        pattern = self.pattern(num_steps, tuple(x.shape[1:])).to(device=x.device, dtype=x.dtype)
        return pattern.unsqueeze(1).expand(num_steps, *x.shape)

    def fresh_noise(self, num_steps: int, batch_shape: tuple[int, ...],
                    generator: torch.Generator) -> Tensor:
        """Independent uniform noise ``[T, *batch_shape]`` on ``generator``'s device."""
        return torch.rand((num_steps, *batch_shape), generator=generator, device=generator.device)

    def check_noise(self, noise: Tensor, x: Tensor, num_steps: int) -> None:
        want = (num_steps, *x.shape)
        if tuple(noise.shape) != want:
            raise ValueError(f"rate noise must have shape {list(want)}, got {list(noise.shape)}")

    def resolve_noise(self, x: Tensor, num_steps: int, noise: Tensor | None) -> Tensor:
        if noise is None:
            return self.default_noise(x, num_steps)
        self.check_noise(noise, x, num_steps)
        return noise

    def encode(self, x: Tensor, noise: Tensor | None,
               grad: GradMode | None = None) -> tuple[Tensor, bool]:
        return (grad or _OWN).encode_rate(x, noise), False

    def search_values(self, lo: Tensor, hi: Tensor, noise: Tensor | None,
                      levels: int) -> Tensor:
        """For the fixed draw, only the draws inside ``(lo, hi)`` change a spike: the
        candidates are ``lo``, ``hi`` and each of them (``lo`` where a draw is outside);
        ``[B, d, 2 + T]``. ``levels`` is unused."""
        inside = (noise > lo[..., None]) & (noise < hi[..., None])
        return torch.cat([lo[..., None], hi[..., None],
                          torch.where(inside, noise, lo[..., None])], 2)

    def exact_encoder(self, x: Tensor) -> Tensor:
        return _ZeroGrad.apply(x)

    def _parse_eps(self, eps, batch_size: int) -> Threat:
        return LinfBall.parse(eps, batch_size)

    def input_interval(self, x: Tensor, threat: Threat,
                       noise: Tensor | None) -> tuple[Tensor, Tensor, bool]:
        lo, hi = threat.box(x)
        return (lo > noise).to(x.dtype), (hi > noise).to(x.dtype), False

    def milp_inputs(self, model, x: Tensor, threat: Threat, noise: Tensor | None, b: int,
                    num_steps: int) -> MilpInputs:
        """For the FIXED draw ``r``, a pixel's spikes ``1[x'_i > r_{t,i}]`` are exactly the
        monotone patterns "spike at every free step whose ``r`` is below a cut": one
        binary per free (t, i) and chain constraints (no threshold gap)."""
        T = num_steps
        lo_t, hi_t = threat.box(x)
        lo, hi = to_np(lo_t[b]).ravel(), to_np(hi_t[b]).ravel()
        shape = tuple(x.shape[1:])
        r = to_np(noise[:, b]).reshape(T, -1)
        s_lo, s_hi = lo[None] > r, hi[None] > r
        free = s_lo != s_hi
        cols = model.add_vars(np.zeros(int(free.sum())), 1.0, integer=True)
        vals = np.zeros(free.shape, dtype=np.int64)
        vals[free] = cols
        chains = _add_chains(model, r, free, vals)
        seq = [model.mixed_expr(free[t], vals[t][free[t]], s_lo[t].astype(np.float64),
                                shape, True) for t in range(T)]

        def witness(sol: np.ndarray) -> Tensor:
            xv = lo.copy()
            for i, r_sorted, chain_cols in chains:
                on = sol[chain_cols] > 0.5
                if not on.any():
                    continue  # x' = lo: below every free draw
                k = int(np.flatnonzero(on).max())  # chain: on is a prefix (by r)
                above = r_sorted[r_sorted > r_sorted[k]]
                xv[i] = above.min() if above.size else hi[i]
            # xv holds float32 values (a draw or a bound): exact in x's dtype
            return torch.from_numpy(xv).to(x.dtype).reshape((1, *shape)).to(x.device)

        return MilpInputs(None, seq, witness)


def _add_chains(model, r: np.ndarray, free: np.ndarray,
                vals: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Chain rows ``S_a - S_b >= 0`` (``== 0`` on tied draws) along each pixel's free
    steps sorted by ``r`` ``[T, n]``. Returns ``(pixel, sorted draws, their columns)``."""
    chains = []
    rr, cc, vv, eq_flags = [], [], [], []
    for i in np.flatnonzero(free.any(0)):
        ts = np.flatnonzero(free[:, i])
        order = ts[np.argsort(r[ts, i], kind="stable")]
        chains.append((int(i), r[order, i], vals[order, i]))
        for a, c in zip(order[:-1], order[1:], strict=True):
            k = len(eq_flags)
            rr += [k, k]
            cc += [vals[a, i], vals[c, i]]
            vv += [1.0, -1.0]
            eq_flags.append(r[a, i] == r[c, i])
    if eq_flags:
        A = sp.csr_matrix((vv, (rr, cc)), shape=(len(eq_flags), model.n))
        model.add_rows(A, 0.0, np.where(np.asarray(eq_flags), 0.0, np.inf))
    return chains

"""``AttackableSNN``: a BoundedSNN as a plain differentiable classifier for attacks.

Every forward starts from a fresh network state (``BoundedSNN`` runs the whole
time loop per call), validates that the input lies in [0, 1], and returns
``logit_scale * scores`` ``[B, K]``. How the gradient w.r.t. the input is
formed is chosen explicitly (``grad=``); the forward VALUES never change, so a
prediction is the same in every gradient mode.

Gradient modes
--------------
``"bptt"``
    Backpropagation through time with each ``snn.Leaky``'s own surrogate
    (``module.spike_grad``, e.g. snnTorch's default ``atan``).
``"surrogate:<name>"`` (optionally ``"surrogate:<name>(k=v, ...)"``)
    BPTT with another surrogate for EVERY Leaky, passed to the core forward as
    an explicit :class:`snncertify.gradmode.Surrogate` (nothing is patched). Names:
    ``atan`` (alpha=2), ``fast_sigmoid`` (slope=25), ``sigmoid`` (slope=25),
    ``triangular`` (width=1), ``straight_through``. ``triangular`` is ours:
    dS/dU = max(0, 1 - |U - θ|/width) / width (snnTorch 1.0's
    ``surrogate.triangular`` backward is +θ below and -θ above threshold, not a
    triangle). A callable ``u -> spikes`` (strict Heaviside forward) is accepted.
``"rate"``
    Backward through the firing rate (BPTR / RGA-style). Values are the exact
    forward; for every Leaky with input currents ``I`` ``[T, B, ...]`` and
    spikes ``S`` ``[T, B, ...]`` the spikes' gradient is replaced by that of a
    rate law applied to the time-averaged current ``Ī = mean_t I_t``::

        ρ(Ī) = clamp((Ī - lo) / (θ - lo), 0, 1),   lo = θ / Σ_{k<T} β^k
        ∂L/∂I_t = (1/T) · ρ'(Ī) · Σ_τ ∂L/∂S_τ

    ``lo`` is the smallest constant current that makes the neuron fire within
    T steps, ``θ`` the current at which it fires at every step (exact for
    reset "zero" and for β = 1; an approximation otherwise); in between the
    rate is taken as linear (for β = 1 this is the IF law ``clamp(Ī/θ, 0, 1)``
    with the finite-T onset). Each layer's spikes thus act as the constant
    sequence ``ρ(Ī)`` in the backward pass. Membrane potentials keep their
    exact gradient (their reset term is detached in the forward, as in
    snnTorch), so a ``membrane`` readout differentiates through them.

Rate encoding
-------------
``encoder_grad="ste"`` (default): the gradient of the Bernoulli encoder
``1[x > r]`` w.r.t. ``x`` is taken as 1 (straight-through, built into
snncertify). ``"exact"`` gives the true gradient, zero, as ``spikegen.rate``
does: this masks every gradient attack and exists to demonstrate the
:class:`ZeroGradientWarning`.

Noise policy (rate encoding): ``noise="fixed"`` uses ONE seeded draw
``r0`` ``[T, *sample_shape]`` shared by every sample, so a sample sees the
same draw whatever batch (or subset of a batch, as APGD makes) it is in; pass
``clf.eval_noise(x)`` to ``bnet.certified`` to certify for the very draw that is
attacked. ``noise="fresh"`` draws new noise ``[T, B, ...]`` at every forward
from a seeded generator (EOT). A tensor ``[T, *sample_shape]`` sets the fixed
pattern explicitly. Predictions for accuracy always use the fixed draw
(:meth:`AttackableSNN.predict`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
from snntorch import surrogate as sg
from torch import Tensor, nn

from snncertify import BoundedSNN
from snncertify.correctness import margin, strict_correct  # noqa: F401  (re-exported)
from snncertify.encoding import Direct
from snncertify.gradmode import GradMode, OwnSurrogate, RateLaw, Surrogate
from snncertify.specs import parse_call

__all__ = [
    "GRAD_MODES",
    "SURROGATES",
    "AttackableSNN",
    "ZeroGradientWarning",
    "make_surrogate",
    "strict_correct",
]

GRAD_MODES = ("bptt", "surrogate:<name>", "rate")
NOISE_MODES = ("fixed", "fresh")


_VALUES = Direct()  # the [B, ...] in [0, 1] input check of the L-inf encodings

class ZeroGradientWarning(UserWarning):
    """The gradient of the loss w.r.t. the whole input batch is exactly zero."""


# ------------------------------------------------------------------ surrogates
class _Triangular(torch.autograd.Function):
    """Strict Heaviside forward; triangle of the given width (area 1) backward."""

    @staticmethod
    def forward(ctx, u: Tensor, width: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.width = width
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        w = ctx.width
        return grad * (1 - u.abs() / w).clamp_min(0) / w, None


def _triangular(width: float = 1.0) -> Callable[[Tensor], Tensor]:
    if not width > 0:
        raise ValueError(f"triangular width must be > 0, got {width}")
    return lambda u: _Triangular.apply(u, float(width))


#: name -> factory of a spike function ``u -> H(u)`` with a surrogate backward.
SURROGATES: dict[str, Callable[..., Callable[[Tensor], Tensor]]] = {
    "atan": sg.atan,
    "fast_sigmoid": sg.fast_sigmoid,
    "sigmoid": sg.sigmoid,
    "triangular": _triangular,
    "straight_through": sg.straight_through_estimator,
}



def make_surrogate(spec: str) -> Callable[[Tensor], Tensor]:
    """``"fast_sigmoid"`` or ``"fast_sigmoid(slope=10)"`` -> spike function
    (parsed by :func:`snncertify.specs.parse_call`; values are floats)."""
    name, params = parse_call(spec, "surrogate")
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {spec!r}; known: {sorted(SURROGATES)}")
    try:
        kwargs = {k: float(v) for k, v in params.items()}
    except (TypeError, ValueError):
        raise ValueError(f"bad surrogate argument in {spec!r}: values must be numbers") from None
    return SURROGATES[name](**kwargs)


# ------------------------------------------------------------------ classifier
class AttackableSNN(nn.Module):
    """A :class:`BoundedSNN` as a classifier for torchattacks and :mod:`attacks.suite`.

    Args:
        bnet: the wrapped network (``snncertify.certify(...)``); not modified
            except transiently during a forward (see ``grad``).
        grad: gradient mode, ``"bptt"``, ``"surrogate:<name>"`` or ``"rate"``
            (module docstring), a :class:`snncertify.gradmode.GradMode`, or a
            callable spike function (taken as a surrogate).
        noise: ``"fixed"`` | ``"fresh"`` | a tensor ``[T, *sample_shape]``
            (rate encoding only; module docstring).
        encoder_grad: ``"ste"`` | ``"exact"`` (rate encoding only).
        logit_scale: logits are ``logit_scale * scores`` (scores are spike
            rates in [0, 1] for the rate readout, counts for ``count``).
        seed: seed of the fixed draw and of the fresh-noise generator
            (default: ``bnet.seed``).
        warn_zero_grad: emit :class:`ZeroGradientWarning` when a backward pass
            gives an all-zero input gradient for the whole batch.

    Input ``x``: ``[B, ...]`` floats in [0, 1]; output ``[B, K]``.

    Raises:
        NotImplementedError: for the event encoding (L-inf attacks on binary
            frames are not meaningful; flip attacks are not implemented).
    """

    def __init__(
        self,
        bnet: BoundedSNN,
        grad: str | Callable[[Tensor], Tensor] = "bptt",
        noise: str | Tensor = "fixed",
        encoder_grad: str = "ste",
        logit_scale: float = 1.0,
        seed: int | None = None,
        warn_zero_grad: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(bnet, BoundedSNN):
            raise TypeError(f"bnet must be a snncertify.BoundedSNN, got {type(bnet).__name__}")
        if not bnet.encoding.attackable:
            raise NotImplementedError(
                f"gradient attacks on the {bnet.encoding.name} encoding are not implemented: an "
                "L-inf ball on binary frames is not a meaningful threat (use flip budgets with "
                "bnet.certified(x, y, FlipBudget(k)) for certificates)"
            )
        if encoder_grad not in ("ste", "exact"):
            raise ValueError(f"encoder_grad must be 'ste' or 'exact', got {encoder_grad!r}")
        if not (isinstance(logit_scale, (int, float)) and math.isfinite(logit_scale)
                and logit_scale > 0):
            raise ValueError(f"logit_scale must be a finite number > 0, got {logit_scale!r}")
        self.bnet = bnet
        self.seed = bnet.seed if seed is None else int(seed)
        self.encoder_grad = encoder_grad
        self.logit_scale = float(logit_scale)
        self.warn_zero_grad = warn_zero_grad
        self._fixed: Tensor | None = None
        self._fixed_by_user = False
        self._gen: torch.Generator | None = None
        self.grad = grad  # validated by the setter
        self.noise = noise
        #: counters of input-gradient checks: backward passes seen, all-zero ones,
        #: and samples whose own input gradient was all zero.
        self.grad_stats = {"calls": 0, "zero_calls": 0, "samples": 0, "zero_samples": 0}
        #: called with the number of model queries made (progress bars inside attacks)
        self.on_query: Callable[[int], None] | None = None

    # ------------------------------------------------------------ configuration
    @property
    def grad(self) -> str | Callable[[Tensor], Tensor]:
        return self._grad

    @grad.setter
    def grad(self, mode: str | Callable[[Tensor], Tensor]) -> None:
        if isinstance(mode, GradMode):
            self._mode = mode
        elif callable(mode):
            self._mode = Surrogate(mode, getattr(mode, "__name__", "custom"))
        elif mode == "bptt":
            self._mode = OwnSurrogate()
        elif mode == "rate":
            self._mode = RateLaw()
        elif isinstance(mode, str) and mode.startswith("surrogate:"):
            self._mode = Surrogate(make_surrogate(mode.split(":", 1)[1]), mode)
        else:
            raise ValueError(
                f"grad must be 'bptt', 'rate', 'surrogate:<name>' ({sorted(SURROGATES)}) "
                f"or a spike function, got {mode!r}"
            )
        self._grad = mode

    @property
    def grad_name(self) -> str:
        g = self._grad
        return g if isinstance(g, str) else self._mode.name

    @property
    def noise(self) -> str | Tensor:
        return self._noise

    @noise.setter
    def noise(self, mode: str | Tensor) -> None:
        if isinstance(mode, Tensor):
            if not self.bnet.encoding.stochastic:
                raise ValueError("a noise tensor only applies to the rate encoding")
            if mode.ndim < 2 or mode.shape[0] != self.bnet.num_steps:
                raise ValueError(
                    f"noise pattern must be [T={self.bnet.num_steps}, *sample_shape], "
                    f"got {list(mode.shape)}"
                )
            self._fixed = mode.detach()
            self._fixed_by_user = True
            mode = "fixed"
        elif mode not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES} or a tensor, got {mode!r}")
        self._noise = mode

    @property
    def stochastic(self) -> bool:
        """True when two forwards of the same input may differ (fresh rate draws)."""
        return self.bnet.encoding.stochastic and self._noise == "fresh"

    @contextlib.contextmanager
    def using(
        self, grad: str | Callable | None = None, noise: str | None = None
    ) -> Iterator[AttackableSNN]:
        """Temporarily switch gradient mode and/or noise policy (None keeps it)."""
        old_grad, old_noise = self._grad, self._noise
        try:
            if grad is not None:
                self.grad = grad
            if noise is not None and self.bnet.encoding.stochastic:
                self.noise = noise
            yield self
        finally:
            self.grad, self._noise = old_grad, old_noise

    def reseed(self, seed: int) -> None:
        """Restart the fresh-noise generator from ``seed`` (the fixed draw is kept)."""
        self._gen = None
        self._gen_seed = int(seed)

    # ------------------------------------------------------------------ noise
    def eval_noise(self, x: Tensor) -> Tensor | None:
        """The fixed draw expanded to ``[T, B, ...]`` for ``x`` ``[B, ...]`` (None unless rate).

        By default the wrapper's own default pattern (``bnet.draw_noise(x)``
        when ``seed == bnet.seed``), so attacks, forward and certificates see
        the same draw for a sample whatever its batch.
        """
        enc = self.bnet.encoding
        if not enc.stochastic:
            return None
        sample = tuple(x.shape[1:])
        f = self._fixed
        if f is None or tuple(f.shape[1:]) != sample:
            if f is not None and self._fixed_by_user:
                raise ValueError(
                    f"the noise pattern has sample shape {list(f.shape[1:])}, the input "
                    f"{list(sample)}"
                )
            f = self._fixed = replace(enc, seed=self.seed).pattern(self.bnet.num_steps, sample)
        if f.device != x.device or f.dtype != x.dtype:
            f = self._fixed = f.to(device=x.device, dtype=x.dtype)
        return f.unsqueeze(1).expand(f.shape[0], x.shape[0], *sample)

    def _fresh_noise(self, x: Tensor) -> Tensor:
        if self._gen is None:
            self._gen = torch.Generator(device="cpu").manual_seed(
                getattr(self, "_gen_seed", self.seed + 1)
            )
        r = self.bnet.encoding.fresh_noise(self.bnet.num_steps, tuple(x.shape), self._gen)
        return r.to(device=x.device, dtype=x.dtype)

    # ---------------------------------------------------------------- forward
    @staticmethod
    def validate(x: Tensor) -> None:
        """ValueError unless ``x`` is a float tensor ``[B, ...]`` with values in [0, 1]
        (the direct/rate input check, :meth:`snncertify.encoding.Encoding.check_input`)."""
        _VALUES.check_input(x, "attack input", " (an attack left the box, or the data is "
                            "not scaled to [0, 1])")

    def _check_grad(self, g: Tensor) -> None:
        per_sample = g.detach().reshape(g.shape[0], -1).abs().amax(1) == 0
        zero = int(per_sample.sum())
        st = self.grad_stats
        st["calls"] += 1
        st["samples"] += g.shape[0]
        st["zero_samples"] += zero
        if zero == g.shape[0]:
            st["zero_calls"] += 1
            if self.warn_zero_grad:
                warnings.warn(
                    f"the input gradient is exactly zero for the whole batch (grad="
                    f"{self.grad_name!r}, encoding={self.bnet.encoding.name!r}, encoder_grad="
                    f"{self.encoder_grad!r}): gradient attacks cannot move; robust accuracy "
                    "from them would be MASKED. Use another gradient mode / surrogate, the "
                    "straight-through rate encoder, or a gradient-free attack (Square).",
                    ZeroGradientWarning,
                    stacklevel=2,
                )

    def _noise_for(self, x: Tensor) -> Tensor | None:
        if not self.bnet.encoding.stochastic:
            return None
        return self._fresh_noise(x) if self._noise == "fresh" else self.eval_noise(x)

    def count_query(self, n: int = 1) -> None:
        """Report ``n`` batched model queries to ``on_query`` (if set)."""
        if self.on_query is not None:
            self.on_query(n)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, K]`` = ``logit_scale * bnet(x, noise)`` from a fresh state."""
        self.validate(x)
        self.count_query()
        noise = self._noise_for(x)
        if torch.is_grad_enabled() and x.requires_grad:
            x = x.view_as(x)
            x.register_hook(self._check_grad)
            if self.encoder_grad == "exact":
                x = self.bnet.encoding.exact_encoder(x)
        scores = self.bnet(x, noise, grad=self._mode)
        return scores if self.logit_scale == 1.0 else scores * self.logit_scale

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """Scores ``[B, K]`` for accuracy: no gradient, the FIXED rate draw always."""
        out = []
        with self.using(noise="fixed"):
            for i in range(0, x.shape[0], batch_size):
                out.append(self.forward(x[i:i + batch_size]))
        return torch.cat(out) if out else x.new_zeros((0, 0))

    def correct(self, x: Tensor, y: Tensor) -> Tensor:
        """Bool ``[B]``: strictly correct on the fixed draw (see :func:`strict_correct`)."""
        return strict_correct(self.predict(x), y.to(x.device))

    def extra_repr(self) -> str:
        return (
            f"grad={self.grad_name!r}, noise={self._noise!r}, encoder_grad="
            f"{self.encoder_grad!r}, logit_scale={self.logit_scale}, seed={self.seed}"
        )

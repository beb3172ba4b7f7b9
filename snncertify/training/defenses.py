"""Defenses: each one is its loss, as each torchattacks attack is its ``forward``.

The loop (:mod:`snncertify.training.loop`) owns devices, data, optimiser,
progress, checkpoints and DDP; a :class:`Defense` only says how one batch
becomes a loss. ``Defense.loss(bnet, x, y, noise, progress)`` returns a scalar
(``x`` ``[B, ...]``, ``y`` ``[B]``, ``noise`` the batch's rate draw
``[T, B, ...]`` or None, ``progress`` in [0, 1) the fraction of training done,
for schedules). A defense that needs several optimiser updates per batch
(HIRE) overrides :meth:`Defense.train_batch`.

Logits are ``logit_scale * scores`` (scores are spike rates in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..wrapper import BoundedSNN


class Defense:
    """Base class. Subclasses set ``name`` and implement :meth:`loss`.

    Constructor keywords are the defense's hyperparameters; :meth:`hparams`
    returns them for the checkpoint's config.
    """

    name = "defense"
    updates_per_batch = 1  #: optimiser updates per batch (for the LR schedule)

    def __init__(self, logit_scale: float = 10.0) -> None:
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale}")
        self.logit_scale = float(logit_scale)

    def hparams(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"

    def ce(self, scores: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self.logit_scale * scores, y)

    def loss(self, bnet: BoundedSNN, x: Tensor, y: Tensor, noise: Tensor | None,
             progress: float) -> Tensor:
        raise NotImplementedError

    def train_batch(self, step: Callable[..., float], x: Tensor, y: Tensor,
                    noise: Tensor | None, progress: float) -> float:
        """One batch. ``step(x, y, noise, progress, **kw)`` runs ``loss`` through the
        (possibly DDP-wrapped) model, back-propagates, updates and returns the loss."""
        return step(x, y, noise, progress)


class Clean(Defense):
    """BPTT with each Leaky's own surrogate gradient: cross-entropy on the scores."""

    name = "clean"

    def loss(self, bnet, x, y, noise, progress):
        return self.ce(bnet(x, noise=noise), y)


def _linear_ramp(progress: float, ramp: float) -> float:
    """0 -> 1 over the first ``ramp`` fraction of training, then 1."""
    return 1.0 if ramp <= 0 else min(1.0, progress / ramp)


class Certified(Defense):
    """``kappa * CE(clean) + (1 - kappa) * CE(-margin lower bounds)`` (IBP / CROWN-IBP training).

    The worst-case logits are ``z_j = -m_j`` with ``m_j`` the lower bound of
    ``score_y - score_j`` (Gowal et al. 2018; Zhang et al. 2020; the S-IBP
    training of Liang et al. 2022). eps ramps linearly from 0 to ``eps`` over
    the first ``ramp`` fraction of training, after ``warmup`` (clean only);
    kappa goes from 1 to ``kappa_end`` with the same ramp. ``cert_steps``
    (optional, < T) bounds a network run for fewer steps than inference, as
    the paper trains; its rate draw is the first ``cert_steps`` of the batch's.
    """

    name = "certified"

    def __init__(self, eps: float, method: str = "ibp", kappa_end: float = 0.5,
                 ramp: float = 0.5, warmup: float = 0.0, cert_steps: int | None = None,
                 logit_scale: float = 10.0) -> None:
        super().__init__(logit_scale)
        if not 0 < eps <= 1:
            raise ValueError(f"certified training needs eps in (0, 1], got {eps}")
        if method not in ("ibp", "crown-ibp"):
            raise ValueError(f"method must be 'ibp' or 'crown-ibp', got {method!r}")
        if not (0 <= kappa_end <= 1 and 0 <= warmup < 1 and 0 <= ramp <= 1):
            raise ValueError("need 0 <= kappa_end <= 1, 0 <= warmup < 1, 0 <= ramp <= 1")
        if cert_steps is not None and cert_steps < 1:
            raise ValueError(f"cert_steps must be >= 1, got {cert_steps}")
        self.eps, self.method, self.kappa_end = float(eps), method, float(kappa_end)
        self.ramp, self.warmup, self.cert_steps = float(ramp), float(warmup), cert_steps

    def schedule(self, progress: float) -> tuple[float, float]:
        """``(eps, kappa)`` at ``progress``."""
        if progress < self.warmup:
            return 0.0, 1.0
        r = _linear_ramp((progress - self.warmup) / (1 - self.warmup), self.ramp)
        return self.eps * r, 1.0 - r * (1.0 - self.kappa_end)

    def bound_net(self, bnet: BoundedSNN) -> BoundedSNN:
        return bnet if self.cert_steps is None else bnet.with_steps(self.cert_steps)

    def loss(self, bnet, x, y, noise, progress):
        eps, kappa = self.schedule(progress)
        clean = self.ce(bnet(x, noise=noise), y)
        if eps == 0:
            return clean
        cnet = self.bound_net(bnet)
        cnoise = None if noise is None else noise[: cnet.num_steps]
        margins = cnet.margin_bounds(x, y, eps, method=self.method, noise=cnoise)
        worst = F.cross_entropy(-self.logit_scale * margins, y)
        return kappa * clean + (1 - kappa) * worst


class _AttackDefense(Defense):
    """A defense that attacks its own network during training (through :mod:`attacks`)."""

    def __init__(self, eps: float, grad: str = "bptt", logit_scale: float = 10.0) -> None:
        super().__init__(logit_scale)
        if not 0 < eps <= 1:
            raise ValueError(f"{self.name} needs eps in (0, 1], got {eps}")
        self.eps, self.grad = float(eps), grad

    def classifier(self, bnet: BoundedSNN):
        import attacks  # the attack layer sits above the core; imported on use

        if not bnet.encoding.attackable:
            raise ValueError(
                f"the {self.name!r} defense crafts L-inf perturbations, which do not apply "
                "to binary event frames: train event models with 'clean' or 'certified'"
            )
        noise = "fresh" if bnet.encoding.stochastic else "fixed"
        return attacks.AttackableSNN(bnet, grad=self.grad, noise=noise, warn_zero_grad=False)


class PGDAT(_AttackDefense):
    """PGD adversarial training (Madry et al.): CE on PGD points from :mod:`attacks`.

    ``steps`` PGD iterations of ``step_size`` (default ``2.5 eps / steps``),
    random start, gradient mode ``grad`` (``"bptt"``, ``"rate"``,
    ``"surrogate:<name>"``); eps ramps from 0 over the first ``ramp`` of training.
    Rate input: the attack sees fresh noise per forward (EOT-style).
    """

    name = "pgd-at"

    def __init__(self, eps: float, steps: int = 7, step_size: float | None = None,
                 grad: str = "bptt", ramp: float = 0.2, logit_scale: float = 10.0) -> None:
        super().__init__(eps, grad, logit_scale)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps, self.step_size, self.ramp = int(steps), step_size, float(ramp)

    def loss(self, bnet, x, y, noise, progress):
        import attacks

        eps = self.eps * _linear_ramp(progress, self.ramp)
        if eps > 0:
            pgd = attacks.PGD(steps=self.steps, step_size=self.step_size, random_start=True)
            x = pgd(self.classifier(bnet), x, y, eps)
        return self.ce(bnet(x, noise=noise), y)


class Stable(_AttackDefense):
    """Robust-Stable SNN (Ding et al., ICML 2024).

    ``chi * CE(x) + (1 - chi) * CE(x~) + rho * MPPD`` where ``x~`` is ``x`` plus
    Gaussian noise of std ``sigma`` (clipped to [0, 1]) or the FGSM point at
    ``eps``, and MPPD is the mean over steps, samples and neurons of ``d_t^2``
    with ``d_t = beta d_{t-1} + (I_t(x) - I_t(x~))``, the leaky-integrated
    difference of the last spiking layer's input currents (``beta`` that
    layer's own, clamped to [0, 1]).
    """

    name = "stable"

    def __init__(self, eps: float = 0.1, perturb: str = "fgsm", sigma: float = 0.1,
                 chi: float = 0.5, rho: float = 1.0, grad: str = "bptt",
                 logit_scale: float = 10.0) -> None:
        super().__init__(eps, grad, logit_scale)
        if perturb not in ("fgsm", "gaussian"):
            raise ValueError(f"perturb must be 'fgsm' or 'gaussian', got {perturb!r}")
        if not (0 <= chi <= 1 and rho >= 0 and sigma >= 0):
            raise ValueError("need 0 <= chi <= 1, rho >= 0, sigma >= 0")
        self.perturb, self.sigma, self.chi, self.rho = perturb, float(sigma), float(chi), float(rho)

    def perturbed(self, bnet: BoundedSNN, x: Tensor, y: Tensor) -> Tensor:
        if self.perturb == "gaussian":
            return (x + self.sigma * torch.randn_like(x)).clamp(0, 1)
        import attacks

        return attacks.FGSM()(self.classifier(bnet), x, y, self.eps)

    def loss(self, bnet, x, y, noise, progress):
        xt = self.perturbed(bnet, x, y)
        s, prop = bnet.trace(x, noise)
        st, prop_t = bnet.trace(xt, noise)
        last = len(prop.layers) - 1
        beta = bnet.ops[[i for i, op in enumerate(bnet.ops) if op.stateful][last]].beta()
        diff = prop.layers[last].cur_l - prop_t.layers[last].cur_l  # [T, B, ...]
        d, total = torch.zeros_like(diff[0]), diff.new_zeros(())
        for t in range(diff.shape[0]):
            d = beta * d + diff[t]
            total = total + d.pow(2).mean()
        mppd = total / diff.shape[0]
        return self.chi * self.ce(s, y) + (1 - self.chi) * self.ce(st, y) + self.rho * mppd


class Hire(_AttackDefense):
    """HIRE-SNN-style crafted input noise (Kundu et al., ICCV 2021), as we read it.

    The paper's training code was never published. Our reading: the T steps
    are split into ``periods`` equal parts; each batch is trained ``periods``
    times on a network run for ``T / periods`` steps, on ``x + delta`` (clipped
    to [0, 1]), with one optimiser update per period. ``delta`` starts at 0;
    after each period's backward, the input gradient of that same pass crafts
    the next period's noise, ``delta <- clip(delta + step * sign(grad),
    -eps, eps)``, so the noise costs no extra forward or backward pass (as in
    "free" adversarial training). Total simulated steps per batch: T, as in
    clean training. ``step`` defaults to ``eps`` (one full signed step).
    Rate input: period ``p`` uses steps ``[p T/P, (p+1) T/P)`` of the batch's draw.
    """

    name = "hire"

    def __init__(self, eps: float = 0.1, periods: int = 2, step: float | None = None,
                 logit_scale: float = 10.0) -> None:
        super().__init__(eps, "bptt", logit_scale)
        if periods < 1:
            raise ValueError(f"periods must be >= 1, got {periods}")
        self.periods, self.step = int(periods), step

    @property
    def updates_per_batch(self) -> int:
        return self.periods

    def period_net(self, bnet: BoundedSNN) -> BoundedSNN:
        if not bnet.encoding.attackable:
            self.classifier(bnet)  # raises the clear error
        if bnet.num_steps % self.periods:
            raise ValueError(f"hire: T = {bnet.num_steps} is not divisible by periods = "
                             f"{self.periods}")
        return bnet.with_steps(bnet.num_steps // self.periods)

    def loss(self, bnet, x, y, noise, progress, period: int = 0):
        pnet = self.period_net(bnet)
        t0 = period * pnet.num_steps
        pnoise = None if noise is None else noise[t0 : t0 + pnet.num_steps]
        return self.ce(pnet(x, noise=pnoise), y)

    def train_batch(self, step, x, y, noise, progress):
        delta = torch.zeros_like(x)
        size = self.eps if self.step is None else self.step
        total = 0.0
        for p in range(self.periods):
            xp = (x + delta).clamp(0, 1).requires_grad_(True)
            total += step(xp, y, noise, progress, period=p)
            with torch.no_grad():
                delta = (delta + size * xp.grad.sign()).clamp(-self.eps, self.eps)
        return total / self.periods


DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (Clean, Hire, Stable, PGDAT, Certified)
}


def make_defense(name: str, **kwargs) -> Defense:
    """The defense ``name`` (``DEFENSES``) with its hyperparameters."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; known: {sorted(DEFENSES)}")
    return DEFENSES[name](**kwargs)

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

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..loss_bound import FUSED_METHODS, LOSSES, robust_ce
from ..wrapper import BoundedSNN
from .options import check, option, public_name

EPS_HELP = "L-inf radius of the defense (input units, [0, 1])"


@dataclasses.dataclass
class Defense:
    """Base class. Subclasses set ``name``, declare their hyperparameters as dataclass fields
    (:func:`~snncertify.training.options.option`: default, help, flag name) and implement
    :meth:`loss`. Those fields are the defense's one home: the constructor, the command-line
    flags, the keywords of ``train_model`` and ``config.json``'s ``defense_params``
    (:meth:`hparams`) all come from them.
    """

    logit_scale: float = option("logits = scale * spike rates", 10.0, kw_only=True)

    name: ClassVar[str] = "defense"
    updates_per_batch: ClassVar[int] = 1  #: optimiser updates per batch (for the LR schedule)

    def __post_init__(self) -> None:
        check(self)
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")

    def hparams(self) -> dict[str, Any]:
        """Every hyperparameter by field name (``config.json``'s ``defense_params``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

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


@dataclasses.dataclass
class Clean(Defense):
    """BPTT with each Leaky's own surrogate gradient: cross-entropy on the scores."""

    name = "clean"

    def loss(self, bnet, x, y, noise, progress):
        return self.ce(bnet(x, noise=noise), y)


def _linear_ramp(progress: float, ramp: float) -> float:
    """0 -> 1 over the first ``ramp`` fraction of training, then 1."""
    return 1.0 if ramp <= 0 else min(1.0, progress / ramp)


@dataclasses.dataclass
class Certified(Defense):
    """``kappa * CE(clean) + (1 - kappa) * (upper bound of the worst-case CE)`` (IBP / CROWN-IBP
    training).

    ``robust_loss="margins"``: the worst-case logits are ``z_j = -m_j`` with ``m_j`` the
    lower bound of ``score_y - score_j`` (Gowal et al. 2018; Zhang et al. 2020; the S-IBP
    training of Liang et al. 2022). ``"fused"``: one linear row bounds the CE itself
    (:mod:`snncertify.loss_bound`), with the memory of one row instead of K - 1
    (``fused_rows = r``: the r likeliest classes keep their margin row, r + 1 rows). eps ramps linearly from 0 to ``eps`` over
    the first ``ramp`` fraction of training, after ``warmup`` (clean only);
    kappa goes from 1 to ``kappa_end`` with the same ramp. ``cert_steps``
    (optional, < T) bounds a network run for fewer steps than inference, as
    the paper trains; its rate draw is the first ``cert_steps`` of the batch's.
    """

    eps: float = option(EPS_HELP)
    method: str = option("bound method of the worst-case term", "ibp", name="bound_method",
                         choices=("ibp", "crown-ibp"))
    kappa_end: float = option("final weight of the clean loss", 0.5)
    ramp: float = option("fraction of training to ramp eps", 0.5)
    warmup: float = option("clean-only fraction before the ramp", 0.0)
    cert_steps: int | None = option("time steps of the bound term (None: T)", None)
    robust_loss: str = option(
        "bound of the worst-case CE: 'margins' (K-1 margin rows) or 'fused' (one linear row, "
        "loss fusion; crown-ibp only)", "margins", choices=LOSSES)
    fused_rows: int = option(
        "with robust_loss='fused': classes (highest IBP bound first) that keep their own "
        "margin row; the others share the fused row", 0)
    linear_end: float = option(
        "crown-ibp: weight of the linear bound's loss at the end of the ramp, from 1 (the rest "
        "is IBP's; Zhang et al. 2020's beta schedule)", 1.0)

    name = "certified"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.eps <= 1:
            raise ValueError(f"certified training needs eps in (0, 1], got {self.eps}")
        if not (0 <= self.kappa_end <= 1 and 0 <= self.warmup < 1 and 0 <= self.ramp <= 1):
            raise ValueError("need 0 <= kappa_end <= 1, 0 <= warmup < 1, 0 <= ramp <= 1")
        if self.cert_steps is not None and self.cert_steps < 1:
            raise ValueError(f"cert_steps must be >= 1, got {self.cert_steps}")
        if self.robust_loss == "fused" and self.method not in FUSED_METHODS:
            raise ValueError(f"robust_loss='fused' bounds through {list(FUSED_METHODS)}, "
                             f"not bound_method={self.method!r}")
        if not 0 <= self.linear_end <= 1 or (self.linear_end != 1 and self.method == "ibp"):
            raise ValueError(f"linear_end must be in [0, 1] and applies to crown-ibp, got "
                             f"{self.linear_end} with bound_method={self.method!r}")
        if self.fused_rows < 0 or (self.fused_rows and self.robust_loss != "fused"):
            raise ValueError(f"fused_rows must be >= 0 and applies to robust_loss='fused', "
                             f"got {self.fused_rows} with robust_loss={self.robust_loss!r}")

    def schedule(self, progress: float) -> tuple[float, float]:
        """``(eps, kappa)`` at ``progress``."""
        if progress < self.warmup:
            return 0.0, 1.0
        r = self._ramp(progress)
        return self.eps * r, 1.0 - r * (1.0 - self.kappa_end)

    def _ramp(self, progress: float) -> float:
        return _linear_ramp((progress - self.warmup) / (1 - self.warmup), self.ramp)

    def linear_weight(self, progress: float) -> float:
        """Weight of the linear bound's loss at ``progress`` (1 -> ``linear_end``)."""
        return 1.0 - max(self._ramp(progress), 0.0) * (1.0 - self.linear_end)

    def bound_net(self, bnet: BoundedSNN) -> BoundedSNN:
        return bnet if self.cert_steps is None else bnet.with_steps(self.cert_steps)

    def loss(self, bnet, x, y, noise, progress):
        eps, kappa = self.schedule(progress)
        clean = self.ce(bnet(x, noise=noise), y)
        if eps == 0:
            return clean
        cnet = self.bound_net(bnet)
        cnoise = None if noise is None else noise[: cnet.num_steps]
        w = self.linear_weight(progress)
        worst = 0.0
        if w > 0:  # a convex combination of two upper bounds is one
            worst = w * robust_ce(cnet, x, y, eps, self.method, cnoise, self.logit_scale,
                                  self.robust_loss, reduction="mean", top_rows=self.fused_rows)
        if w < 1:
            worst = worst + (1 - w) * robust_ce(cnet, x, y, eps, "ibp", cnoise,
                                                self.logit_scale, reduction="mean")
        return kappa * clean + (1 - kappa) * worst


class _AttackDefense(Defense):
    """A defense that attacks its own network during training (through :mod:`attacks`).

    Subclasses declare the fields ``eps`` and ``grad`` (the gradient mode of the attack).
    """

    eps: float
    grad: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.eps <= 1:
            raise ValueError(f"{self.name} needs eps in (0, 1], got {self.eps}")

    def classifier(self, bnet: BoundedSNN):
        import attacks  # the attack layer sits above the core; imported on use

        if not bnet.encoding.attackable:
            raise ValueError(
                f"the {self.name!r} defense crafts L-inf perturbations, which do not apply "
                "to binary event frames: train event models with 'clean' or 'certified'"
            )
        noise = "fresh" if bnet.encoding.stochastic else "fixed"
        return attacks.AttackableSNN(bnet, grad=self.grad, noise=noise, warn_zero_grad=False)


@dataclasses.dataclass
class PGDAT(_AttackDefense):
    """PGD adversarial training (Madry et al.): CE on PGD points from :mod:`attacks`.

    ``steps`` PGD iterations of ``step_size`` (default ``2.5 eps / steps``),
    random start, gradient mode ``grad`` (``"bptt"``, ``"rate"``,
    ``"surrogate:<name>"``); eps ramps from 0 over the first ``ramp`` of training.
    Rate input: the attack sees fresh noise per forward (EOT-style).
    """

    eps: float = option(EPS_HELP)
    steps: int = option("PGD iterations", 7, name="pgd_steps")
    step_size: float | None = option("PGD step (None: 2.5 eps / steps)", None)
    grad: str = option("gradient mode (bptt, rate, surrogate:NAME)", "bptt")
    ramp: float = option("fraction of training to ramp eps", 0.2)

    name = "pgd-at"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ValueError(f"pgd_steps must be >= 1, got {self.steps}")

    def loss(self, bnet, x, y, noise, progress):
        import attacks

        eps = self.eps * _linear_ramp(progress, self.ramp)
        if eps > 0:
            pgd = attacks.PGD(steps=self.steps, step_size=self.step_size, random_start=True)
            x = pgd(self.classifier(bnet), x, y, eps)
        return self.ce(bnet(x, noise=noise), y)


@dataclasses.dataclass
class Stable(_AttackDefense):
    """Robust-Stable SNN (Ding et al., ICML 2024).

    ``chi * CE(x) + (1 - chi) * CE(x~) + rho * MPPD`` where ``x~`` is ``x`` plus
    Gaussian noise of std ``sigma`` (clipped to [0, 1]) or the FGSM point at
    ``eps``, and MPPD is the mean over steps, samples and neurons of ``d_t^2``
    with ``d_t = beta d_{t-1} + (I_t(x) - I_t(x~))``, the leaky-integrated
    difference of the last spiking layer's input currents (``beta`` that
    layer's own, clamped to [0, 1]).
    """

    eps: float = option(EPS_HELP, 0.1)
    perturb: str = option("x~", "fgsm", choices=("fgsm", "gaussian"))
    sigma: float = option("Gaussian std", 0.1)
    chi: float = option("weight of CE(x)", 0.5)
    rho: float = option("weight of MPPD", 1.0)
    grad: str = option("gradient mode (bptt, rate, surrogate:NAME)", "bptt")

    name = "stable"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.chi <= 1 and self.rho >= 0 and self.sigma >= 0):
            raise ValueError("need 0 <= chi <= 1, rho >= 0, sigma >= 0")

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


@dataclasses.dataclass
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

    eps: float = option(EPS_HELP, 0.1)
    periods: int = option("periods the T steps are split into", 2)
    step: float | None = option("noise step (None: eps)", None, name="step_size")
    grad: str = option("gradient mode (always bptt)", "bptt", init=False, cli=False)

    name = "hire"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.periods < 1:
            raise ValueError(f"periods must be >= 1, got {self.periods}")

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
#: method names that mean a defense with one hyperparameter fixed: name -> (defense, fields)
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ibp": ("certified", {"method": "ibp"}), "crown-ibp": ("certified", {"method": "crown-ibp"}),
}
#: every ``--method`` (defenses and aliases)
METHODS: tuple[str, ...] = tuple(sorted([*DEFENSES, *ALIASES]))


def make_defense(name: str, **kwargs: Any) -> Defense:
    """The defense ``name`` (``DEFENSES``) with its hyperparameters (by field name)."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; known: {sorted(DEFENSES)}")
    return DEFENSES[name](**kwargs)


def options(cls: type[Defense]) -> dict[str, dataclasses.Field]:
    """The settable hyperparameters of ``cls`` by keyword / flag name (``bound_method``
    for ``Certified.method``, ``pgd_steps`` for ``PGDAT.steps``, ...)."""
    return {public_name(f): f for f in dataclasses.fields(cls) if f.init}


def build_defense(method: str, settings: Mapping[str, Any]) -> Defense:
    """The defense of ``method`` (a defense or an alias of ``ALIASES``) from ``settings`` keyed
    by option name (:func:`options`); a None value keeps the default.

    Raises:
        ValueError: unknown method, an option the defense does not take, a required one
            missing (``eps`` of ``certified`` / ``pgd-at``), or one that contradicts the alias.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
    name, fixed = ALIASES.get(method, (method, {}))
    known = options(DEFENSES[name])
    kw = {}
    for key, value in settings.items():
        if value is None:
            continue
        if key not in known:
            raise ValueError(f"option {key!r} does not apply to the {name!r} defense "
                             f"(it takes {sorted(known)})")
        kw[known[key].name] = value
    for key, value in fixed.items():
        if kw.setdefault(key, value) != value:
            flag = next(o for o, f in known.items() if f.name == key)
            raise ValueError(f"--method {method} conflicts with --{flag.replace('_', '-')} "
                             f"{kw[key]}")
    for key, f in known.items():
        if f.name not in kw and f.default is dataclasses.MISSING:
            raise ValueError(f"the {name!r} defense needs --{key.replace('_', '-')}")
    return DEFENSES[name](**kw)


def defense_from_params(name: str, params: Mapping[str, Any]) -> Defense:
    """The defense of a ``config.json``: ``defense`` ``name`` and ``defense_params``
    (:meth:`Defense.hparams`, by field name; fixed fields must hold their value)."""
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; known: {sorted(DEFENSES)}")
    fixed = {f.name: f.default for f in dataclasses.fields(DEFENSES[name]) if not f.init}
    for key, value in fixed.items():
        if params.get(key, value) != value:
            raise ValueError(f"defense {name!r}: {key} is always {value!r}, got {params[key]!r}")
    return make_defense(name, **{k: v for k, v in params.items() if k not in fixed})

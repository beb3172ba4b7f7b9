"""L-inf attacks over an :class:`AttackableSNN`, by name, with checked outputs.

One base class (:class:`Attack`) owns what every attack must do the same way:
switch the classifier's gradient mode / noise policy for the attack's
duration, seed the RNG (torchattacks' random starts use the global torch RNG,
so it is forked and seeded: no side effect on the caller's RNG), and RE-CHECK
every output: ``|x_adv - x|_inf <= eps`` (tolerance ``ATOL``) and ``x_adv`` in
[0, 1]; the output is then projected onto ``[x - eps, x + eps] ∩ [0, 1]``, so
it always lies in the box the certificate covers. Each attack is a short
subclass, mostly a thin adapter over the torchattacks class.

Default configuration (the evaluation protocol, see README.md, "Attack evaluation protocol"):

==============  =====================================================  =========
name            what                                                   gradient
==============  =====================================================  =========
``fgsm``        1 step of size eps                                     yes
``pgd``         40 steps, step 2.5·eps/40, uniform random start,       yes
                1 restart (CE loss)
``apgd-ce``     APGD, 100 steps, 1 restart, rho 0.75, CE loss          yes
``apgd-dlr``    same with the DLR loss (scale-invariant)               yes
``square``      Square, 5000 queries, p_init 0.8, margin loss          no
``autoattack``  torchattacks AutoAttack "standard": APGD-CE, APGD-T,   yes (+ no)
                FAB-T, Square-5000
``eot-pgd``     PGD-40 averaging the gradient over 10 fresh rate       yes
                draws per step (noise="fresh"); 1 draw if the model
                is deterministic (identical gradients)
``transfer``    PGD-40 on a SOURCE model, evaluated on the target      no
==============  =====================================================  =========
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Callable

import torch
import torchattacks
from torch import Tensor, nn

from snncertify import BoundedSNN
from snncertify.gradmode import OwnSurrogate
from snncertify.specs import parse_spec

from .classifier import AttackableSNN, strict_correct

__all__ = [
    "ATOL",
    "ATTACKS",
    "APGD",
    "FGSM",
    "PGD",
    "Attack",
    "AutoAttack",
    "EOTPGD",
    "OutOfBallWarning",
    "Square",
    "Transfer",
    "make_attack",
    "project",
    "tie_aware",
    "register_attack",
    "worst_case",
]

#: tolerance of the L-inf check on outputs before projection (float32 rounding).
ATOL = 1e-6


class OutOfBallWarning(UserWarning):
    """An attack returned a point outside the eps-ball or [0, 1] (it is projected back)."""


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto ``[x - eps, x + eps] ∩ [0, 1]`` (elementwise; shapes ``[B, ...]``)."""
    x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    return x_adv.clamp(0.0, 1.0)


def check_ball(x_adv: Tensor, x: Tensor, eps: float, atol: float = ATOL) -> tuple[float, float]:
    """``(max |x_adv - x| - eps, max distance outside [0, 1])``; both <= ``atol`` is valid."""
    if x_adv.shape != x.shape:
        raise ValueError(f"attack returned shape {list(x_adv.shape)} for input {list(x.shape)}")
    if not bool(torch.isfinite(x_adv).all()):
        return math.inf, math.inf
    over = float((x_adv - x).abs().max()) - eps if x.numel() else 0.0
    box = float(torch.maximum(-x_adv, x_adv - 1).max().clamp_min(0)) if x.numel() else 0.0
    return over, box


def worst_case(masks: dict[str, Tensor] | list[Tensor]) -> Tensor:
    """Per-sample AND of "still correct" masks (bool ``[B]`` each): robust to ALL attacks."""
    vals = list(masks.values()) if isinstance(masks, dict) else list(masks)
    if not vals:
        raise ValueError("worst_case needs at least one mask")
    out = vals[0].clone()
    for m in vals[1:]:
        out &= m
    return out


def image_shape(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A ``(C, H, W)`` view of a sample shape for torchattacks' APGD / Square / FAB,
    which assume 4-D image batches: 3-D samples stay, others become ``1 x h x w``
    with ``h`` the largest divisor of the size not above its square root."""
    if len(sample_shape) == 3:
        return tuple(sample_shape)  # type: ignore[return-value]
    d = math.prod(sample_shape)
    h = max(k for k in range(1, math.isqrt(d) + 1) if d % k == 0)
    return (1, h, d // h)


class _ImageView(nn.Module):
    """``[B, C, H, W]`` in, the classifier's own sample shape inside (no copy)."""

    def __init__(self, clf: nn.Module, sample_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.clf = clf
        self.sample_shape = tuple(sample_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.clf(x.reshape(x.shape[0], *self.sample_shape))


#: the torchattacks releases whose internals :func:`tie_aware` hooks (pinned in pyproject.toml)
TORCHATTACKS_SUPPORTED = ">=3.5.1,<3.6"
#: the torchattacks methods :func:`tie_aware` overrides and calls, per attack class
_TORCHATTACKS_NEEDS = {
    "FGSM": ("get_logits", "forward"), "PGD": ("get_logits", "forward"),
    "EOTPGD": ("get_logits", "forward"),
    "APGD": ("get_logits", "forward", "attack_single_run"),
    "Square": ("get_logits", "forward", "attack_single_run", "margin_and_loss"),
}


def tie_aware(cls: type) -> type:
    """A torchattacks attack class whose logits count a TIE as a success.

    torchattacks decides success by ``argmax`` (a tie won by the lower index
    counts as correct) and its losses do not aim at ties. The subclass lowers the
    TRUE class's logit by ``TIE_MARGIN * (1 + |logit|)`` (far below one spike's
    worth of score), so a tie reads as misclassified in its tests, its best-point
    tracking and its losses. The labels of the batch being attacked are
    registered where torchattacks receives them (``forward``, APGD's and
    Square's ``attack_single_run``, Square's ``margin_and_loss``) and matched by
    batch size, the most recent first. Final success is always re-judged by
    :func:`strict_correct` on the real scores, so the shift can never count a
    sample as broken that is not.
    """

    missing = [f"{cls.__name__}.{m}" for m in _TORCHATTACKS_NEEDS.get(cls.__name__, ("get_logits",))
               if not callable(getattr(cls, m, None))]
    params = list(inspect.signature(cls.get_logits).parameters)[:3] if not missing else []
    if not missing and params[:2] != ["self", "inputs"]:
        missing.append(f"{cls.__name__}.get_logits(self, inputs, ...) (found {params})")
    if missing:
        raise ImportError(
            f"the tie-aware torchattacks wrappers need torchattacks internals that "
            f"torchattacks {getattr(torchattacks, '__version__', '?')} lacks or changed: "
            f"{', '.join(missing)}. Supported: torchattacks {TORCHATTACKS_SUPPORTED} "
            f"(pip install 'torchattacks{TORCHATTACKS_SUPPORTED}')")

    def register(self, y):
        if "_tie_labels" not in self.__dict__:  # past torchattacks' attribute tracking
            object.__setattr__(self, "_tie_labels", {})
        self._tie_labels[len(y)] = y

    def get_logits(self, inputs, labels=None, *args, **kwargs):
        logits = cls.get_logits(self, inputs, labels, *args, **kwargs)
        y = self.__dict__.get("_tie_labels", {}).get(len(inputs))
        if y is None:
            return logits
        true = logits.gather(1, y.view(-1, 1))
        shift = TIE_MARGIN * (1 + true.detach().abs())
        return logits.scatter(1, y.view(-1, 1), true - shift)

    body: dict = {"get_logits": get_logits}
    for name in ("forward", "attack_single_run", "margin_and_loss"):
        if hasattr(cls, name):
            def hook(self, x, y, *a, _name=name, **k):
                register(self, y)
                return getattr(cls, _name)(self, x, y, *a, **k)
            body[name] = hook
    return type(f"TieAware{cls.__name__}", (cls,), body)


#: relative amount by which :func:`tie_aware` attacks lower the true class's logit.
TIE_MARGIN = 1e-5
_TA = {name: tie_aware(getattr(torchattacks, name))
       for name in ("FGSM", "PGD", "EOTPGD", "APGD", "Square")}


class Attack:
    """Base class: an L-inf attack run at a given eps on an :class:`AttackableSNN`.

    Subclasses set ``name`` and implement :meth:`perturb`. ``grad`` / ``noise``
    (None: the classifier's own) are applied for the attack's duration only.

    Call: ``attack(clf, x, y, eps) -> x_adv`` with ``x`` ``[B, ...]`` in
    [0, 1], ``y`` ``[B]`` int64, ``eps`` the L-inf radius (input units);
    ``x_adv`` ``[B, ...]`` is guaranteed inside the ball and [0, 1].
    """

    name = "attack"
    gradient_based = True  #: uses input gradients of the attacked model
    transfer = False  #: crafted on another model
    #: a search judged on the exact forward (its gradients, if any, are a relaxed network's):
    #: the gradient-masking check counts it with the gradient-free attacks
    search = False
    images = True  #: perturb() sees 4-D ``[B, C, H, W]`` views (torchattacks' convention)

    def __init__(self, grad: str | None = None, noise: str | None = None, seed: int = 0) -> None:
        self.grad = grad
        self.noise = noise
        self.seed = int(seed)
        self.last_violation: tuple[float, float] = (0.0, 0.0)
        self.clf: AttackableSNN | None = None  #: the classifier during a call

    @property
    def label(self) -> str:
        """Name for tables: e.g. ``"PGD-40"`` or ``"PGD-40 [rate]"``."""
        base = self._label()
        return base if self.grad is None else f"{base} [{self.grad}]"

    def _label(self) -> str:
        return self.name

    @property
    def expected_queries(self) -> int | None:
        """About how many batched model queries one call makes (a progress bar's total;
        None: not known in advance)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r})"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """The raw attack: ``model`` maps ``x`` (4-D view if ``images``) to logits."""
        raise NotImplementedError

    def __call__(self, clf: AttackableSNN, x: Tensor, y: Tensor, eps: float) -> Tensor:
        if not isinstance(clf, AttackableSNN):
            raise TypeError(f"attack a wrapped model (AttackableSNN), got {type(clf).__name__}")
        if not (isinstance(eps, (int, float)) and 0 <= eps <= 1):
            raise ValueError(f"eps must be a number in [0, 1], got {eps!r}")
        AttackableSNN.validate(x)
        x = x.detach()
        y = y.to(x.device)
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        model: nn.Module = clf
        xin = x
        if self.images and x.ndim != 4:
            model = _ImageView(clf, tuple(x.shape[1:]))
            xin = x.reshape(x.shape[0], *image_shape(tuple(x.shape[1:])))
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), clf.using(self.grad, self.noise):
            torch.manual_seed(self.seed)
            clf.reseed(self.seed)
            was_training = clf.training
            clf.eval()
            self.clf = clf
            try:
                x_adv = self.perturb(model, xin, y, float(eps)).detach().reshape(x.shape)
            finally:
                clf.train(was_training)
                self.clf = None
        over, box = self.last_violation = check_ball(x_adv, x, float(eps))
        if over > ATOL or box > ATOL:
            warnings.warn(
                f"{self.label} returned points {over:.3g} beyond eps={eps} and {box:.3g} "
                "outside [0, 1]; projected back",
                OutOfBallWarning,
                stacklevel=2,
            )
        x_adv = torch.nan_to_num(x_adv, nan=0.0)
        return project(x_adv, x, float(eps))


# ------------------------------------------------------------------ attacks
class FGSM(Attack):
    """Fast gradient sign method: ``x + eps * sign(grad CE)``, one step."""

    name = "FGSM"

    def perturb(self, model, x, y, eps):
        return _TA["FGSM"](model, eps=eps)(x, y)


class PGD(Attack):
    """L-inf PGD with CE loss (Madry et al.).

    Args:
        steps: iterations (default 40).
        step_size: absolute step; ``None`` = ``rel_step * eps / steps``.
        rel_step: default 2.5 (so the walk can cross the ball 2.5 times).
        random_start: uniform start in the ball (clipped to [0, 1]).
        restarts: independent runs; a sample counts as broken if any run breaks it
            (later restarts only run on samples not yet broken).
    """

    name = "PGD"

    def __init__(
        self, steps: int = 40, step_size: float | None = None, rel_step: float = 2.5,
        random_start: bool = True, restarts: int = 1, **kw,
    ) -> None:
        super().__init__(**kw)
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        self.steps, self.step_size, self.rel_step = int(steps), step_size, rel_step
        self.random_start, self.restarts = random_start, int(restarts)

    def _label(self) -> str:
        r = f"x{self.restarts}" if self.restarts > 1 else ""
        return f"{self.name}-{self.steps}{r}"

    def alpha(self, eps: float) -> float:
        return self.step_size if self.step_size is not None else self.rel_step * eps / self.steps

    def _one(self, model, x, y, eps):
        return _TA["PGD"](
            model, eps=eps, alpha=self.alpha(eps), steps=self.steps, random_start=self.random_start
        )(x, y)

    def perturb(self, model, x, y, eps):
        best = self._one(model, x, y, eps)
        for _ in range(self.restarts - 1):
            with torch.no_grad(), self.clf.using(noise="fixed"):
                alive = strict_correct(model(project(best, x, eps)), y)
            if not bool(alive.any()):
                break
            idx = alive.nonzero().squeeze(1)
            best[idx] = self._one(model, x[idx], y[idx], eps)
        return best


class EOTPGD(PGD):
    """PGD whose step direction is the sign of a gradient SUMMED over ``eot_iter``
    forwards with fresh rate draws (Expectation over Transformation).

    Defaults: 40 steps, eot_iter 10, ``noise="fresh"``. For a deterministic
    model (direct encoding or fixed noise) the draws are identical, so one
    forward gives the same step and is used.
    """

    name = "EOT-PGD"

    def __init__(self, steps: int = 40, eot_iter: int = 10, noise: str | None = "fresh", **kw):
        super().__init__(steps=steps, noise=noise, **kw)
        if eot_iter < 1:
            raise ValueError("eot_iter must be >= 1")
        self.eot_iter = int(eot_iter)

    def _label(self) -> str:
        return f"{super()._label()}x{self.eot_iter}"

    def _one(self, model, x, y, eps):
        n = self.eot_iter if self.clf.stochastic else 1
        return _TA["EOTPGD"](
            model, eps=eps, alpha=self.alpha(eps), steps=self.steps, eot_iter=n,
            random_start=self.random_start,
        )(x, y)


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020), torchattacks' implementation.

    Args:
        loss: ``"ce"`` or ``"dlr"`` (difference of logits ratio; needs >= 3 classes).
        steps: iterations per restart (default 100, as in AutoAttack).
        restarts: random restarts (default 1).
        rho: step-size halving criterion (default 0.75).
        eot_iter: gradient samples per step (use with ``noise="fresh"``).
    """

    def __init__(
        self, loss: str = "ce", steps: int = 100, restarts: int = 1, rho: float = 0.75,
        eot_iter: int = 1, **kw,
    ) -> None:
        super().__init__(**kw)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD loss must be 'ce' or 'dlr', got {loss!r}")
        self.loss, self.steps, self.restarts = loss, int(steps), int(restarts)
        self.rho, self.eot_iter = rho, int(eot_iter)
        self.name = f"APGD-{loss.upper()}"

    def _label(self) -> str:
        return f"{self.name}-{self.steps}" + (f"x{self.restarts}" if self.restarts > 1 else "")

    def perturb(self, model, x, y, eps):
        return _TA["APGD"](
            model, norm="Linf", eps=eps, steps=self.steps, n_restarts=self.restarts,
            seed=self.seed, loss=self.loss, eot_iter=self.eot_iter, rho=self.rho,
        )(x, y)


class Square(Attack):
    """Square attack (Andriushchenko et al. 2020): gradient-free, random search.

    Args:
        n_queries: model queries per sample (default 5000).
        p_init: initial fraction of pixels changed (default 0.8).
        restarts: default 1.
        loss: ``"margin"`` (default) or ``"ce"``.
    """

    name = "Square"
    gradient_based = False

    def __init__(
        self, n_queries: int = 5000, p_init: float = 0.8, restarts: int = 1,
        loss: str = "margin", **kw,
    ) -> None:
        super().__init__(**kw)
        self.n_queries, self.p_init, self.restarts, self.loss = (
            int(n_queries), p_init, int(restarts), loss)

    def _label(self) -> str:
        return f"Square-{self.n_queries}"

    @property
    def expected_queries(self) -> int:
        return (self.n_queries + 1) * self.restarts

    def perturb(self, model, x, y, eps):
        return _TA["Square"](
            model, norm="Linf", eps=eps, n_queries=self.n_queries, n_restarts=self.restarts,
            p_init=self.p_init, loss=self.loss, resc_schedule=True, seed=self.seed,
        )(x, y)


class AutoAttack(Attack):
    """torchattacks' AutoAttack (``version="standard"``: APGD-CE, APGD-T, FAB-T,
    Square-5000, each on the samples still robust). ``n_classes`` is inferred."""

    name = "AutoAttack"

    def __init__(self, version: str = "standard", **kw) -> None:
        super().__init__(**kw)
        self.version = version

    def perturb(self, model, x, y, eps):
        with torch.no_grad():
            k = model(x[:1]).shape[1]
        return torchattacks.AutoAttack(
            model, norm="Linf", eps=eps, version=self.version, n_classes=k, seed=self.seed
        )(x, y)


class Transfer(Attack):
    """Craft on a SOURCE model with ``attack`` (default PGD-40), evaluate on the target.

    Args:
        source: a :class:`BoundedSNN` (wrapped with the same settings as the
            attacked classifier unless ``source_kwargs`` says otherwise), an
            :class:`AttackableSNN`, or any ``nn.Module`` mapping ``[B, ...]``
            in [0, 1] to logits ``[B, K]`` (e.g. an ANN surrogate).
        attack: the attack run on the source.
        name: label prefix (default ``"Transfer"``).
    """

    gradient_based = False
    transfer = True
    images = False

    def __init__(
        self, source: nn.Module, attack: Attack | None = None, name: str = "Transfer",
        source_kwargs: dict | None = None, **kw,
    ) -> None:
        super().__init__(**kw)
        if isinstance(source, BoundedSNN):
            source = AttackableSNN(source, **(source_kwargs or {}))
        elif not isinstance(source, AttackableSNN):
            source = _AnyClassifier(source)
        self.source = source
        self.inner = attack if attack is not None else PGD()
        self.name = name

    def _label(self) -> str:
        return f"{self.name}({self.inner.label})"

    def perturb(self, model, x, y, eps):
        return self.inner(self.source, x, y, eps)


class _AnyClassifier(AttackableSNN):
    """Lets any ``[0, 1] -> logits`` module be a transfer source (no SNN specifics)."""

    def __init__(self, model: nn.Module) -> None:
        nn.Module.__init__(self)  # deliberately not AttackableSNN.__init__: no SNN here
        self.model = model
        self._grad, self._noise, self._mode = "bptt", "fixed", OwnSurrogate()
        self.grad_stats = {"calls": 0, "zero_calls": 0, "samples": 0, "zero_samples": 0}
        self.warn_zero_grad = True
        self.encoder_grad = "ste"
        self.seed = 0

    @property
    def stochastic(self) -> bool:
        return False

    def using(self, grad=None, noise=None):  # type: ignore[override]
        return contextlib.nullcontext(self)

    def reseed(self, seed: int) -> None:
        pass

    def forward(self, x: Tensor) -> Tensor:
        self.validate(x)
        if torch.is_grad_enabled() and x.requires_grad:
            x = x.view_as(x)
            x.register_hook(self._check_grad)
        return self.model(x)

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        return torch.cat([self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    @property
    def grad_name(self) -> str:
        return "bptt"

    def extra_repr(self) -> str:
        return ""


# ------------------------------------------------------------------ registry
#: attack name -> factory (keyword arguments are passed on).
ATTACKS: dict[str, Callable[..., Attack]] = {
    "fgsm": FGSM,
    "pgd": PGD,
    "apgd-ce": lambda **kw: APGD(loss="ce", **kw),
    "apgd-dlr": lambda **kw: APGD(loss="dlr", **kw),
    "square": Square,
    "autoattack": AutoAttack,
    "eot-pgd": EOTPGD,
    "transfer": Transfer,
}
# "spike-search" (attacks.spike_search.SpikeSearch) is registered by the package's __init__.


def register_attack(name: str, factory: Callable[..., Attack], replace: bool = False) -> None:
    """Make ``factory`` (keyword arguments -> :class:`Attack`) known as ``name`` to
    :func:`make_attack`; an existing name is refused (ValueError) unless ``replace=True``."""
    key = name.strip().lower()
    if key in ATTACKS and ATTACKS[key] is not factory and not replace:
        raise ValueError(f"attack {key!r} is already registered; pass replace=True to replace it")
    ATTACKS[key] = factory


def make_attack(spec: str | Attack, **kwargs) -> Attack:
    """An attack from a name (``"pgd"``), a name with parameters
    (``"square(n_queries=1000)"``), a name with a gradient mode (``"pgd@rate"``,
    ``"apgd-ce(steps=50)@surrogate:fast_sigmoid"``), or an instance. Keyword
    arguments given here win over the spec's."""
    if isinstance(spec, Attack):
        if kwargs:
            raise ValueError("keyword arguments only apply to attacks given by name")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an attack is a name or an Attack, got {type(spec).__name__}")
    parsed = parse_spec(spec, "attack spec")
    key = parsed.name.lower()
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {parsed.name!r} in {spec!r}; known: {sorted(ATTACKS)}")
    for k, v in parsed.params.items():
        kwargs.setdefault(k, v)
    if parsed.grad:
        kwargs.setdefault("grad", parsed.grad)
    if key == "transfer" and "source" not in kwargs:
        raise ValueError("the transfer attack needs a source model: pass "
                         "attacks.Transfer(source_model) (or make_attack('transfer', source=...))")
    return ATTACKS[key](**kwargs)

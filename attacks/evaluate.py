"""``evaluate``: clean, per-attack, worst-case (robust) and certified accuracy per eps.

Definitions (all on the same inputs and, for rate encoding, the same fixed
noise draw; "correct" means the true score STRICTLY beats every other score,
so a tie is wrong, as in ``BoundedSNN.certify``):

* clean accuracy: correct on ``x``;
* an attack's accuracy at eps: correct on ``x`` AND on the attack's output
  (``x`` itself lies in the ball, so a misclassified clean sample is never
  robust); attacks only run on clean-correct samples;
* robust accuracy at eps: correct on ``x`` and on EVERY attack's output for
  that sample (per-sample worst case over all attacks);
* certified accuracy at eps: ``bnet.certified(x, y, eps, method, noise=the fixed
  draw)`` for each bound method of ``bounds=``; it implies robustness, and a
  certified sample broken by an attack is reported as a
  :class:`~attacks.checks.SoundnessWarning`.

The settings of a run are one :class:`EvalConfig` (the zoo's measurement,
``examples/compare_defenses.py`` and the Python API share it). The run reads
top to bottom: data and noise, then per eps and batch the attack columns, the
exact column and the bound columns, then the rows, then the sanity checks.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from snncertify import BoundedSNN
from snncertify import report as tables
from snncertify.progress import progress_bar

from . import checks
from .classifier import AttackableSNN
from .classifier import margin as score_margin
from .suite import Attack, check_ball, make_attack

__all__ = ["DEFAULT_ATTACKS", "EvalConfig", "Results", "certified_column", "certified_method",
           "evaluate"]

#: the default suite (see README.md, "Attack evaluation protocol"); add "autoattack", "eot-pgd", transfer as needed.
DEFAULT_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square", "spike-search")


def certified_column(method: str) -> str:
    """The column (and mask) name of the samples ``method`` certifies."""
    return f"certified ({method})"


def certified_method(column: str) -> str:
    """The bound method of a :func:`certified_column` name."""
    if not (column.startswith("certified (") and column.endswith(")")):
        raise ValueError(f"not a certified column: {column!r}")
    return column[len("certified ("):-1]


@dataclass(frozen=True)
class EvalConfig:
    """The settings of one :func:`evaluate` run (JSON form: :meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        eps: L-inf radii in input units (the data's [0, 1] scale), each in [0, 1].
        attacks: specs (``"pgd"``, ``"pgd@rate"``, ``"square(n_queries=1000)"``; see
            :data:`attacks.ATTACKS`) or :class:`~attacks.suite.Attack` instances. Specs get
            ``seed``.
        bounds: snncertify bound methods (``"ibp"`` or several) whose certified accuracy
            columns are added (``certified (<method>)``).
        grad, noise, logit_scale: how a ``BoundedSNN`` is wrapped
            (``AttackableSNN(model, grad, noise, logit_scale=...)``).
        batch_size: samples per batch for ``(x, y)`` data.
        seed: seed of the attacks given by spec (deterministic results).
        device: move model and data there (None: the model's device).
        progress: a tqdm bar over (eps, batch, column) and, inside each attack call, one
            over its model queries (Square: of ``n_queries``).
        run_sanity_checks: run :mod:`attacks.checks` and warn on findings.
        expect_broken_at: declare the model clean-trained: robust accuracy at eps >= this
            must be <= ``near_zero`` (a fraction).
        margin: "wide margin" (a fraction) of the Square-vs-gradient and transfer checks.
        keep_adversarial: keep every attack's outputs in ``Results.adversarial``.
        exact: add the column ``"exact"``: the exact MILP verifier
            (``snncertify.exact.verify``, small networks only: it raises a ValueError
            naming the size otherwise) searched every sample the attacks left robust for
            a counterexample; a sample counts iff none exists. Where every sample is
            decided (row field ``undecided`` = 0) this is the TRUE robust accuracy, and
            ``robust - exact`` is what the attacks missed. Attack breaks of samples the
            verifier proved robust are a :class:`~attacks.checks.SoundnessWarning`.
        exact_time_limit: seconds per MILP solve.
    """

    eps: Sequence[float]
    attacks: Sequence[str | Attack] = DEFAULT_ATTACKS
    bounds: str | Sequence[str] | None = ()
    grad: str = "bptt"
    noise: str = "fixed"
    logit_scale: float = 1.0
    batch_size: int = 256
    seed: int = 0
    device: str | torch.device | None = None
    progress: bool = True
    run_sanity_checks: bool = True
    expect_broken_at: float | None = None
    near_zero: float = 0.05
    margin: float = 0.10
    keep_adversarial: bool = False
    exact: bool = False
    exact_time_limit: float = 30.0

    def __post_init__(self) -> None:
        eps = (self.eps,) if isinstance(self.eps, (int, float)) else self.eps
        eps = tuple(float(e) for e in eps)
        if any(not 0 <= e <= 1 for e in eps):
            raise ValueError(f"eps must lie in [0, 1], got {list(eps)}")
        bounds = (self.bounds,) if isinstance(self.bounds, str) else tuple(self.bounds or ())
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "attacks", tuple(self.attacks))
        object.__setattr__(self, "bounds", bounds)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values (lists for sequences, the device as a string);
        ValueError if an attack is an instance (only specs have a JSON form)."""
        objects = [a for a in self.attacks if not isinstance(a, str)]
        if objects:
            raise ValueError(f"EvalConfig.to_dict: attacks {objects} are instances; give them "
                             "as spec strings to store the config")
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(eps=list(self.eps), attacks=list(self.attacks), bounds=list(self.bounds))
        if self.device is not None:
            out["device"] = str(self.device)
        return out

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> EvalConfig:
        """The config of :meth:`to_dict`'s output; ValueError naming unknown keys."""
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"EvalConfig: unknown settings {unknown}; known: {config_fields()}")
        return cls(**settings)


def config_fields() -> list[str]:
    """The names of :class:`EvalConfig`'s settings (the keywords of :func:`evaluate`)."""
    return [f.name for f in dataclasses.fields(EvalConfig)]


class Results(list):
    """The rows (a list of dicts, long format: one per eps x column) plus details.

    Attributes:
        masks: ``{eps: {column: bool [N]}}`` per-sample "still correct" masks
            (columns: ``"clean"``, each attack label, ``"robust"``,
            ``"certified (<method>)"``, ``"exact"``), in data order.
        adversarial: ``{eps: {attack label: [N, ...]}}`` when ``keep_adversarial``
            (clean-misclassified samples keep their clean input).
        warnings: the sanity-check findings (also emitted as warnings).
        grad_stats: the classifier's input-gradient counters.
    """

    def __init__(self, rows=()) -> None:
        super().__init__(rows)
        self.masks: dict[float, dict[str, Tensor]] = {}
        self.adversarial: dict[float, dict[str, Tensor]] = {}
        self.warnings: list[str] = []
        self.grad_stats: dict[str, int] = {}

    def to_csv(self, path) -> None:
        tables.results_to_csv(self, path)

    def to_markdown(self, path=None) -> str:
        """The rows as a Markdown table, accuracies in percent (``snncertify.report.results_markdown``)."""
        return tables.results_markdown(self, path)

    def plot(self, path, title: str | None = None) -> None:
        tables.plot_results(self, path, title)

    def accuracy(self, eps: float, column: str) -> float:
        """The accuracy of one cell (``column``: an attack label, "clean", "robust", ...)."""
        for r in self:
            if r["attack"] == column and abs(float(r["eps"]) - eps) < 1e-12:
                return float(r["accuracy"])
        raise KeyError(f"no row for eps={eps}, column {column!r}")


# ------------------------------------------------------------------ the run, top to bottom
def evaluate(
    model: BoundedSNN | AttackableSNN,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]],
    eps: Sequence[float] | None = None,
    attacks: Sequence[str | Attack] | None = None,
    *,
    config: EvalConfig | None = None,
    **settings: Any,
) -> Results:
    """Attack ``model`` at every eps with every attack; return the table rows.

    Args:
        model: a ``BoundedSNN`` (wrapped as ``AttackableSNN(model, grad, noise,
            logit_scale=logit_scale)``) or an ``AttackableSNN``.
        data: ``(x, y)`` (``x`` ``[N, ...]`` in [0, 1], ``y`` ``[N]``) or an
            iterable of such batches (e.g. a DataLoader).
        eps, attacks: see :class:`EvalConfig` (given here, they win over ``config``'s).
        config: the run's settings (default ``EvalConfig(eps)``).
        **settings: any other :class:`EvalConfig` field (``bounds=``, ``seed=``, ...),
            winning over ``config``'s. ``certify=`` is the deprecated name of ``bounds=``.

    Returns:
        :class:`Results` (a list of row dicts: ``eps``, ``attack`` (column
        label), ``kind``, ``accuracy``, ``correct``, ``n``, ``grad``,
        ``gradient_based``, ``search``, ``transfer``, ``seconds``; attack and
        robust rows add ``flips`` and ``ties``, the exact row ``undecided``).
    """
    cfg = _config(eps, attacks, config, settings)
    run = _Run(model, data, cfg)
    results = Results()
    proved_by_eps: dict[float, dict[str, Tensor]] = {}
    try:
        for e in cfg.eps:
            cols = run.eps_columns(e)
            results.masks[e] = cols.masks
            if cfg.keep_adversarial:
                results.adversarial[e] = cols.adversarial
            proved_by_eps[e] = cols.proved
            results += run.rows(e, cols)
    finally:
        run.bar.close()
    results.grad_stats = run.grad_stats()
    if cfg.run_sanity_checks:
        _sanity_checks(results, run.true_labels(), proved_by_eps, cfg)
    return results


def _config(eps: Sequence[float] | None, attacks: Sequence[str | Attack] | None,
            config: EvalConfig | None, settings: dict[str, Any]) -> EvalConfig:
    """``config`` (or a new one) updated by the keywords of :func:`evaluate`."""
    if "certify" in settings:
        if "bounds" in settings:
            raise TypeError("evaluate(): give bounds= only (certify= is its deprecated name)")
        warnings.warn("evaluate(certify=...) is deprecated: use bounds=... (the bound methods "
                      "whose certified accuracy is added)", DeprecationWarning, stacklevel=3)
        settings["bounds"] = settings.pop("certify")
    unknown = sorted(set(settings) - set(config_fields()))
    if unknown:
        raise TypeError(f"evaluate() got unknown settings {unknown}; known: {config_fields()}")
    given = {"eps": eps, "attacks": attacks}
    settings = {**{k: v for k, v in given.items() if v is not None}, **settings}
    if config is None:
        if "eps" not in settings:
            raise TypeError("evaluate() needs eps (or config=EvalConfig(eps=...))")
        return EvalConfig(**settings)
    return dataclasses.replace(config, **settings)


@dataclass
class _EpsColumns:
    """The per-sample columns of one eps over all batches (bool ``[N]`` masks on the CPU)."""

    masks: dict[str, Tensor] = field(default_factory=dict)  #: column -> still correct
    strict: dict[str, Tensor] = field(default_factory=dict)  #: column -> broken by a strict flip
    seconds: dict[str, float] = field(default_factory=dict)  #: attack label -> wall seconds
    adversarial: dict[str, Tensor] = field(default_factory=dict)  #: label -> ``[N, ...]``
    proved: dict[str, Tensor] = field(default_factory=dict)  #: method (or "exact") -> proved
    undecided: int = 0  #: samples the exact verifier left undecided


class _Run:
    """One :func:`evaluate` call: the wrapped classifier, its batches and clean masks,
    the attacks and the progress bar."""

    def __init__(self, model: BoundedSNN | AttackableSNN, data, cfg: EvalConfig) -> None:
        self.cfg = cfg
        clf = model if isinstance(model, AttackableSNN) else AttackableSNN(
            model, grad=cfg.grad, noise=cfg.noise, logit_scale=cfg.logit_scale)
        self.clf = clf.to(cfg.device) if cfg.device is not None else clf
        self.attacks = [make_attack(a, seed=cfg.seed) if isinstance(a, str) else make_attack(a)
                        for a in cfg.attacks]
        self.labels = [a.label for a in self.attacks]
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"two attacks have the same label: {self.labels}")
        self.batches = _device_batches(self.clf, data, cfg.batch_size)
        self.n = sum(len(y) for _, y in self.batches)
        self.start_stats = dict(self.clf.grad_stats)
        self.clean = [self.clf.correct(x, y) for x, y in self.batches]
        per_batch = len(self.attacks) + len(cfg.bounds) + int(cfg.exact)
        self.bar = progress_bar(total=len(cfg.eps) * len(self.batches) * per_batch,
                                disable=not cfg.progress, desc="evaluate", unit="column",
                                leave=False)

    def true_labels(self) -> Tensor:
        """The labels ``[N]`` of every batch, on the CPU."""
        return torch.cat([y for _, y in self.batches]).cpu()

    def grad_stats(self) -> dict[str, int]:
        """The classifier's input-gradient counters of this run."""
        stats = self.clf.grad_stats
        return {k: stats[k] - self.start_stats.get(k, 0) for k in stats}

    # ------------------------------------------------------------ columns
    def eps_columns(self, e: float) -> _EpsColumns:
        """Every column at ``e``: per batch the attacks, the exact verifier and the bounds
        (in this order), concatenated; then the worst case over the attacks."""
        parts: dict[str, list[tuple[Tensor, ...]]] = {}
        seconds = dict.fromkeys(self.labels, 0.0)
        for (x, y), ok0 in zip(self.batches, self.clean, strict=True):
            for key, cols in self.batch_columns(x, y, ok0, e, seconds).items():
                parts.setdefault(key, []).append(cols)
        cat = {k: [torch.cat(p).cpu() for p in zip(*v, strict=True)] for k, v in parts.items()}
        out = _EpsColumns(masks={"clean": torch.cat(self.clean).cpu()}, seconds=seconds)
        for lab in self.labels:
            out.masks[lab], out.strict[lab], *adv = cat[lab]
            if adv:
                out.adversarial[lab] = adv[0]
        self._worst_case(out)
        for m in self.cfg.bounds:
            (out.masks[certified_column(m)],) = cat[certified_column(m)]
            out.proved[m] = out.masks[certified_column(m)]
        if self.cfg.exact:
            no_cex, undecided, out.proved["exact"] = cat["exact"]
            out.masks["exact"] = no_cex & out.masks["robust"]
            out.undecided = int(undecided.sum())
        return out

    def _worst_case(self, out: _EpsColumns) -> None:
        """``robust``: clean and still correct under every attack; its strict flips."""
        robust = out.masks["clean"].clone()
        strict_any = torch.zeros_like(robust)
        for lab in self.labels:
            robust &= out.masks[lab]
            strict_any |= out.strict[lab]
        out.strict["robust"] = strict_any
        out.masks["robust"] = robust

    def batch_columns(self, x: Tensor, y: Tensor, ok0: Tensor, e: float,
                      seconds: dict[str, float]) -> dict[str, tuple[Tensor, ...]]:
        """One batch's columns at ``e``: per attack label ``(correct, strict flip[,
        adversarial on the CPU])``, ``"exact"``: ``(no counterexample, undecided, proved)``,
        per bound method ``(certified,)``; bool ``[B]`` each. Adds to ``seconds``."""
        out: dict[str, tuple[Tensor, ...]] = {}
        for atk, lab in zip(self.attacks, self.labels, strict=True):
            self.bar.set_postfix_str(f"eps={e:g} {lab}")
            t0 = time.perf_counter()
            ok, strict, x_out = self.attack_column(atk, x, y, ok0, e)
            seconds[lab] += time.perf_counter() - t0
            out[lab] = (ok, strict, x_out.cpu()) if self.cfg.keep_adversarial else (ok, strict)
            self.bar.update(1)
        if self.cfg.exact:
            self.bar.set_postfix_str(f"eps={e:g} exact")
            out["exact"] = _exact_column(self.clf, x, y, ok0, e, self.cfg.exact_time_limit)
            self.bar.update(1)
        for m in self.cfg.bounds:
            self.bar.set_postfix_str(f"eps={e:g} certify {m}")
            with torch.no_grad():
                out[certified_column(m)] = (
                    self.clf.bnet.certified(x, y, e, m, noise=self.clf.eval_noise(x)),)
            self.bar.update(1)
        return out

    def attack_column(self, atk: Attack, x: Tensor, y: Tensor, ok0: Tensor,
                      e: float) -> tuple[Tensor, Tensor, Tensor]:
        """``atk`` at ``e`` on the clean-correct samples (``ok0``, bool ``[B]``) of ``x``:
        (still correct, broken by a strict flip (not a tie only)) bool ``[B]`` each, and
        the outputs ``[B, ...]`` (the clean input where not attacked)."""
        ok, strict, x_out = torch.zeros_like(ok0), torch.zeros_like(ok0), x.clone()
        idx = ok0.nonzero().squeeze(1)
        if not len(idx):
            return ok, strict, x_out
        inner = progress_bar(total=atk.expected_queries, desc=f"  {atk.label}", unit="query",
                             disable=not self.cfg.progress, leave=False, position=1)
        self.clf.on_query = inner.update
        try:
            x_adv = atk(self.clf, x[idx], y[idx], e)
        finally:
            self.clf.on_query = None
            inner.close()
        over, box = check_ball(x_adv, x[idx], e)
        if over > 1e-6 or box > 0:  # the attack wrapper guarantees this
            raise AssertionError(f"{atk.label}: output outside the ball after projection")
        m_adv = score_margin(self.clf.predict(x_adv), y[idx].to(x_adv.device))
        ok[idx], strict[idx], x_out[idx] = m_adv > 0, m_adv < 0, x_adv
        return ok, strict, x_out

    # ------------------------------------------------------------ rows
    def rows(self, e: float, cols: _EpsColumns) -> list[dict]:
        """The rows of ``e``: clean, each attack, robust, exact, each bound method."""
        out = [self.row(e, "clean", "clean", cols)]
        out += [self.row(e, lab, "attack", cols, atk, cols.seconds[lab])
                for atk, lab in zip(self.attacks, self.labels, strict=True)]
        out.append(self.row(e, "robust", "robust", cols, sec=sum(cols.seconds.values())))
        if self.cfg.exact:
            out.append({**self.row(e, "exact", "exact", cols), "undecided": cols.undecided})
        out += [self.row(e, certified_column(m), "certified", cols) for m in self.cfg.bounds]
        return out

    def row(self, e: float, col: str, kind: str, cols: _EpsColumns, atk: Attack | None = None,
            sec: float = 0.0) -> dict:
        """One row: column ``col``'s accuracy (a fraction of ``n``) at ``e``; on attack and
        robust rows, its breaks of clean-correct samples by ties only and by flips."""
        mask = cols.masks[col]
        gradient_based = bool(atk is not None and atk.gradient_based)
        out = {
            "eps": e, "attack": col, "kind": kind,
            "accuracy": float(mask.sum()) / max(self.n, 1),
            "correct": int(mask.sum()), "n": self.n,
            "grad": (atk.grad or self.clf.grad_name) if gradient_based else "",
            "gradient_based": gradient_based,
            "search": bool(atk is not None and atk.search),
            "transfer": bool(atk is not None and atk.transfer),
            "seconds": round(sec, 3),
        }
        if col in cols.strict:
            broken = cols.masks["clean"] & ~mask
            out["flips"] = int((broken & cols.strict[col]).sum())
            out["ties"] = int(broken.sum()) - out["flips"]
        return out


def _device_batches(clf: AttackableSNN, data, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    """``data`` as checked batches on the classifier's device (``y`` int64)."""
    dev = next(clf.parameters()).device
    batches = [(x.to(dev), y.to(dev).long()) for x, y in _batches(data, batch_size)]
    for x, _ in batches:
        AttackableSNN.validate(x)
    return batches


def _batches(data, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples, y has {y.shape[0]}")
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]
    if isinstance(data, Iterable):
        return [(b[0], b[1]) for b in data]
    raise TypeError("data must be (x, y) tensors or an iterable of (x, y) batches")


def _exact_column(clf: AttackableSNN, x: Tensor, y: Tensor, ok0: Tensor, eps: float,
                  time_limit: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample (bool ``[B]`` each): no counterexample exists (among clean-correct
    ones), the verifier left it undecided, and it is PROVED robust."""
    from snncertify import exact as exact_mod

    none = torch.zeros_like(ok0)
    idx = ok0.nonzero().squeeze(1)
    if not len(idx):
        return none, none.clone(), none.clone()
    res = exact_mod.verify(clf.bnet, x[idx], y[idx], eps, noise=clf.eval_noise(x[idx]),
                           time_limit=time_limit)
    upper = torch.tensor([r.margin_upper > 0 for r in res], device=ok0.device)
    lower = torch.tensor([r.margin_lower > 0 for r in res], device=ok0.device)
    no_cex, undecided, proved = none.clone(), none.clone(), none.clone()
    no_cex[idx], proved[idx], undecided[idx] = upper, lower, upper & ~lower
    return no_cex, undecided, proved


def _sanity_checks(results: Results, labels: Tensor, proved: dict[float, dict[str, Tensor]],
                   cfg: EvalConfig) -> None:
    """Run :mod:`attacks.checks` on the results; record and warn (at evaluate's caller)."""
    share = float(torch.bincount(labels).max()) / max(len(labels), 1) if len(labels) else None
    found = checks.run_checks(results, share, cfg.expect_broken_at, cfg.near_zero, cfg.margin)
    found += [(checks.MaskingWarning, m) for m in checks.check_zero_gradients(results.grad_stats)]
    robust = {e: masks["robust"] for e, masks in results.masks.items()}
    found += [(checks.SoundnessWarning, m)
              for m in checks.check_certified_not_broken(proved, robust)]
    for cls, msg in found:
        results.warnings.append(msg)
        warnings.warn(msg, cls, stacklevel=3)

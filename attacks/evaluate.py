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
  draw)``; it implies robustness, and a certified sample broken by an attack
  is reported as a :class:`~attacks.checks.SoundnessWarning`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from snncertify import BoundedSNN
from snncertify.progress import progress_bar

from . import checks, report
from .classifier import AttackableSNN
from .classifier import margin as score_margin
from .suite import Attack, check_ball, make_attack

__all__ = ["DEFAULT_ATTACKS", "Results", "certified_column", "certified_method", "evaluate"]

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


class Results(list):
    """The rows (a list of dicts, long format: one per eps x column) plus details.

    Attributes:
        masks: ``{eps: {column: bool [N]}}`` per-sample "still correct" masks
            (columns: ``"clean"``, each attack label, ``"robust"``,
            ``"certified (<method>)"``), in data order.
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
        report.to_csv(self, path)

    def to_markdown(self, path=None) -> str:
        """The rows as a Markdown table, accuracies in percent (``attacks.report.to_markdown``)."""
        return report.to_markdown(self, path)

    def plot(self, path, title: str | None = None) -> None:
        report.plot(self, path, title)

    def accuracy(self, eps: float, column: str) -> float:
        """The accuracy of one cell (``column``: an attack label, "clean", "robust", ...)."""
        for r in self:
            if r["attack"] == column and abs(float(r["eps"]) - eps) < 1e-12:
                return float(r["accuracy"])
        raise KeyError(f"no row for eps={eps}, column {column!r}")


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


def _batches(data, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples, y has {y.shape[0]}")
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]
    if isinstance(data, Iterable):
        return [(b[0], b[1]) for b in data]
    raise TypeError("data must be (x, y) tensors or an iterable of (x, y) batches")


def evaluate(
    model: BoundedSNN | AttackableSNN,
    data: tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]],
    eps: Sequence[float],
    attacks: Sequence[str | Attack] = DEFAULT_ATTACKS,
    *,
    grad: str = "bptt",
    noise: str = "fixed",
    logit_scale: float = 1.0,
    certify: str | Sequence[str] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    run_sanity_checks: bool = True,
    expect_broken_at: float | None = None,
    near_zero: float = 0.05,
    margin: float = 0.10,
    keep_adversarial: bool = False,
    exact: bool = False,
    exact_time_limit: float = 30.0,
) -> Results:
    """Attack ``model`` at every eps with every attack; return the table rows.

    Args:
        model: a ``BoundedSNN`` (wrapped as ``AttackableSNN(model, grad, noise,
            logit_scale=logit_scale)``) or an ``AttackableSNN``.
        data: ``(x, y)`` (``x`` ``[N, ...]`` in [0, 1], ``y`` ``[N]``) or an
            iterable of such batches (e.g. a DataLoader).
        eps: L-inf radii in input units (the data's [0, 1] scale).
        attacks: names (``"pgd"``, ``"pgd@rate"``; see :data:`attacks.ATTACKS`)
            or :class:`~attacks.suite.Attack` instances. Names get ``seed``.
        certify: ``"ibp"`` or a list of snncertify methods to add certified
            accuracy columns (needs a ``BoundedSNN`` underneath; it always is).
        batch_size: for ``(x, y)`` data.
        seed: seed of the attacks given by name (deterministic results).
        device: move model and data there (default: the model's device).
        progress: a tqdm bar over (eps, batch, attack) and, inside each attack call, one
            over its model queries (Square: of ``n_queries``).
        run_sanity_checks: run :mod:`attacks.checks` and warn on findings.
        expect_broken_at: declare the model clean-trained: robust accuracy at
            eps >= this must be <= ``near_zero``.
        margin: "wide margin" of the Square-vs-gradient and transfer checks.
        keep_adversarial: keep every attack's outputs in ``results.adversarial``.
        exact: add the column ``"exact"``: the exact MILP verifier
            (``snncertify.exact.verify``, small networks only: it raises a
            ValueError naming the size otherwise) searched every sample the
            attacks left robust for a counterexample; a sample counts iff none
            exists. Where every sample is decided (row field ``undecided`` = 0)
            this is the TRUE robust accuracy, and ``robust - exact`` is what the
            attacks missed. It also checks every attack break against the
            verifier's proofs (a proved-robust sample broken is a
            :class:`~attacks.checks.SoundnessWarning`).
        exact_time_limit: seconds per MILP solve.

    Returns:
        :class:`Results` (a list of row dicts: ``eps``, ``attack`` (column
        label), ``kind``, ``accuracy``, ``correct``, ``n``, ``grad``,
        ``gradient_based``, ``transfer``, ``seconds``).
    """
    clf = model if isinstance(model, AttackableSNN) else AttackableSNN(
        model, grad=grad, noise=noise, logit_scale=logit_scale)
    if device is not None:
        clf = clf.to(device)
    dev = next(clf.parameters()).device
    atks = [make_attack(a, seed=seed) if isinstance(a, str) else make_attack(a) for a in attacks]
    labels = [a.label for a in atks]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two attacks have the same label: {labels}")
    methods = [certify] if isinstance(certify, str) else list(certify or [])
    eps_list = [float(e) for e in eps]
    if any(not 0 <= e <= 1 for e in eps_list):
        raise ValueError(f"eps must lie in [0, 1], got {eps_list}")
    batches = [(x.to(dev), y.to(dev).long()) for x, y in _batches(data, batch_size)]
    n_total = sum(len(y) for _, y in batches)
    for x, _ in batches:
        AttackableSNN.validate(x)
    start_stats = dict(clf.grad_stats)

    clean = [clf.correct(x, y) for x, y in batches]
    results = Results()
    bar = progress_bar(total=len(eps_list) * len(batches) * (len(atks) + len(methods) + int(exact)),
                       disable=not progress, desc="evaluate", unit="column", leave=False)
    robust_by_eps: dict[float, Tensor] = {}
    cert_by_eps: dict[float, dict[str, Tensor]] = {}
    try:
        for e in eps_list:
            cols: dict[str, list[Tensor]] = {lab: [] for lab in labels}
            flips: dict[str, list[Tensor]] = {lab: [] for lab in labels}
            secs = dict.fromkeys(labels, 0.0)
            certs: dict[str, list[Tensor]] = {m: [] for m in methods}
            advs: dict[str, list[Tensor]] = {lab: [] for lab in labels}
            exact_cols: list[Tensor] = []
            exact_undecided: list[Tensor] = []
            exact_proved: list[Tensor] = []
            for (x, y), ok0 in zip(batches, clean, strict=True):
                idx = ok0.nonzero().squeeze(1)
                for atk, lab in zip(atks, labels, strict=True):
                    bar.set_postfix_str(f"eps={e:g} {lab}")
                    t0 = time.perf_counter()
                    ok = torch.zeros_like(ok0)
                    strict = torch.zeros_like(ok0)  # broken by a strict flip (not a tie only)
                    x_out = x.clone()
                    if len(idx):
                        inner = progress_bar(total=atk.expected_queries, desc=f"  {lab}",
                                             unit="query", disable=not progress, leave=False,
                                             position=1)
                        clf.on_query = inner.update
                        try:
                            x_adv = atk(clf, x[idx], y[idx], e)
                        finally:
                            clf.on_query = None
                            inner.close()
                        over, box = check_ball(x_adv, x[idx], e)
                        if over > 1e-6 or box > 0:  # the attack wrapper guarantees this
                            raise AssertionError(f"{lab}: output outside the ball after projection")
                        m_adv = score_margin(clf.predict(x_adv), y[idx].to(x_adv.device))
                        ok[idx] = m_adv > 0
                        strict[idx] = m_adv < 0
                        x_out[idx] = x_adv
                    secs[lab] += time.perf_counter() - t0
                    cols[lab].append(ok)
                    flips[lab].append(strict)
                    if keep_adversarial:
                        advs[lab].append(x_out.cpu())
                    bar.update(1)
                if exact:
                    bar.set_postfix_str(f"eps={e:g} exact")
                    ex, und, proved = _exact_column(clf, x, y, ok0, e, exact_time_limit)
                    exact_cols.append(ex)
                    exact_undecided.append(und)
                    exact_proved.append(proved)
                    bar.update(1)
                for m in methods:
                    bar.set_postfix_str(f"eps={e:g} certify {m}")
                    with torch.no_grad():
                        c = clf.bnet.certified(x, y, e, m, noise=clf.eval_noise(x))
                    certs[m].append(c)
                    bar.update(1)
            masks: dict[str, Tensor] = {"clean": torch.cat(clean).cpu()}
            strict_by: dict[str, Tensor] = {}
            for lab in labels:
                masks[lab] = torch.cat(cols[lab]).cpu()
                strict_by[lab] = torch.cat(flips[lab]).cpu()
            robust = masks["clean"].clone()
            strict_any = torch.zeros_like(robust)
            for lab in labels:
                robust &= masks[lab]
                strict_any |= strict_by[lab]
            strict_by["robust"] = strict_any
            masks["robust"] = robust
            robust_by_eps[e] = robust
            cert_by_eps[e] = {}
            for m in methods:
                masks[certified_column(m)] = cert_by_eps[e][m] = torch.cat(certs[m]).cpu()
            if exact:
                masks["exact"] = torch.cat(exact_cols).cpu() & robust
                undecided = int(torch.cat(exact_undecided).sum())
                cert_by_eps[e]["exact"] = torch.cat(exact_proved).cpu()
            results.masks[e] = masks
            if keep_adversarial:
                results.adversarial[e] = {lab: torch.cat(v) for lab, v in advs.items()}

            def row(col: str, kind: str, mask: Tensor, atk: Attack | None = None,
                    sec: float = 0.0, e: float = e, masks: dict = masks,
                    strict_by: dict = strict_by) -> dict:
                out = {
                    "eps": e, "attack": col, "kind": kind,
                    "accuracy": float(mask.sum()) / max(n_total, 1),
                    "correct": int(mask.sum()), "n": n_total,
                    "grad": (atk.grad or clf.grad_name) if atk is not None and atk.gradient_based
                    else "", "gradient_based": bool(atk is not None and atk.gradient_based),
                    "search": bool(atk is not None and atk.search),
                    "transfer": bool(atk is not None and atk.transfer),
                    "seconds": round(sec, 3),
                }
                if col in strict_by:  # breaks of clean-correct samples: ties only vs flips
                    broken = masks["clean"] & ~mask
                    out["flips"] = int((broken & strict_by[col]).sum())
                    out["ties"] = int(broken.sum()) - out["flips"]
                return out

            results.append(row("clean", "clean", masks["clean"]))
            for atk, lab in zip(atks, labels, strict=True):
                results.append(row(lab, "attack", masks[lab], atk, secs[lab]))
            results.append(row("robust", "robust", robust, sec=sum(secs.values())))
            if exact:
                results.append({**row("exact", "exact", masks["exact"]), "undecided": undecided})
            for m in methods:
                results.append(row(certified_column(m), "certified", masks[certified_column(m)]))
    finally:
        bar.close()

    results.grad_stats = {k: clf.grad_stats[k] - start_stats.get(k, 0) for k in clf.grad_stats}
    if run_sanity_checks:
        ys = torch.cat([y for _, y in batches]).cpu()
        share = float(torch.bincount(ys).max()) / max(len(ys), 1) if len(ys) else None
        found = checks.run_checks(results, share, expect_broken_at, near_zero, margin)
        found += [(checks.MaskingWarning, m) for m in checks.check_zero_gradients(results.grad_stats)]
        found += [(checks.SoundnessWarning, m)
                  for m in checks.check_certified_not_broken(cert_by_eps, robust_by_eps)]
        for cls, msg in found:
            results.warnings.append(msg)
            warnings.warn(msg, cls, stacklevel=2)
    return results


"""Sanity checks that flag gradient masking (or bugs) in an evaluation's rows.

Each check takes the long-format rows of :func:`attacks.evaluate` (dicts with
``eps``, ``attack``, ``kind``, ``accuracy``, ``gradient_based``, ``transfer``)
and returns a list of human-readable findings (empty: nothing suspicious).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from torch import Tensor

from snncertify.report import fmt_percent

__all__ = [
    "ConsistencyError",
    "MaskingWarning",
    "SanityWarning",
    "SoundnessWarning",
    "check_broken_at",
    "check_certified_not_broken",
    "check_consistency",
    "check_large_eps",
    "check_monotone",
    "check_square_vs_gradient",
    "check_transfer_vs_whitebox",
    "check_zero_gradients",
    "flags_masking",
    "run_checks",
]


class SanityWarning(UserWarning):
    """Base class of the evaluation's sanity findings."""


class MaskingWarning(SanityWarning):
    """A symptom of gradient masking / a too weak evaluation."""


class SoundnessWarning(SanityWarning):
    """An attack broke a certified sample: the certificate or the model is wrong."""


class ConsistencyError(AssertionError):
    """The table breaks certified <= worst case <= clean, or worst case <= every attack."""


def check_consistency(rows: Sequence[dict]) -> list[str]:
    """What must hold in every evaluation, per eps: each ``certified``/``exact`` column <=
    the worst case (``robust``) <= ``clean``, and the worst case <= every attack column.
    Returns the violations (empty: consistent); compares correct-sample counts."""
    found = []
    by_eps: dict[float, list[dict]] = defaultdict(list)
    for r in rows:
        by_eps[float(r["eps"])].append(r)

    def count(r: dict) -> float:
        return r["correct"] if "correct" in r else r["accuracy"]

    for e, rs in sorted(by_eps.items()):
        robust = [r for r in rs if r["kind"] == "robust"]
        clean = [r for r in rs if r["kind"] == "clean"]
        if len(robust) != 1 or len(clean) != 1:
            found.append(f"eps={e:g}: expected one clean and one worst-case row")
            continue
        rob, cl = count(robust[0]), count(clean[0])
        if rob > cl:
            found.append(f"eps={e:g}: worst case {rob} > clean {cl}")
        for r in rs:
            if r["kind"] in ("certified", "exact") and count(r) > rob:
                found.append(f"eps={e:g}: {r['attack']} {count(r)} > worst case {rob}")
            if r["kind"] == "attack" and count(r) < rob:
                found.append(f"eps={e:g}: worst case {rob} > {r['attack']} {count(r)}")
    return found


def _by_eps(rows: Sequence[dict], kind: str) -> dict[float, dict[str, dict]]:
    out: dict[float, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["kind"] == kind:
            out[float(r["eps"])][r["attack"]] = r
    return dict(sorted(out.items()))


def check_monotone(rows: Sequence[dict], tol: float = 0.0) -> list[str]:
    """Robust accuracy must not increase with eps (the balls are nested)."""
    seq = [(e, next(iter(d.values()))["accuracy"]) for e, d in _by_eps(rows, "robust").items()]
    return [
        f"robust accuracy INCREASES from {fmt_percent(a0)} at eps={e0:g} to {fmt_percent(a1)} at eps={e1:g}: "
        "the attacks fail to find points that exist (the smaller ball's attacks lie in "
        "the larger ball) - a sign of masked gradients or too few steps/restarts"
        for (e0, a0), (e1, a1) in zip(seq, seq[1:], strict=False)
        if a1 > a0 + tol
    ]


def check_large_eps(rows: Sequence[dict], max_class_share: float, tol: float = 0.05) -> list[str]:
    """At eps >= 0.5 every input can reach the constant 0.5 image, so at most the
    largest class share can be robust; more means the attacks are failing."""
    out = []
    for e, d in _by_eps(rows, "robust").items():
        acc = next(iter(d.values()))["accuracy"]
        if e >= 0.5 and acc > max_class_share + tol:
            out.append(
                f"robust accuracy {fmt_percent(acc)} at eps={e:g} exceeds the largest class share "
                f"{max_class_share:.4f}: at eps >= 0.5 all inputs can reach one common "
                "point, so the attacks are masked or too weak"
            )
    return out


def check_broken_at(rows: Sequence[dict], eps: float, near_zero: float = 0.05) -> list[str]:
    """For a CLEAN-trained model: robust accuracy at eps >= ``eps`` should be ~0."""
    out = []
    for e, d in _by_eps(rows, "robust").items():
        acc = next(iter(d.values()))["accuracy"]
        if e >= eps and acc > near_zero:
            out.append(
                f"robust accuracy {fmt_percent(acc)} at eps={e:g} of a model declared clean-trained "
                f"(expected <= {near_zero:g} at eps >= {eps:g}): masked or weak attacks"
            )
    return out


def _whitebox(d: dict[str, dict]) -> dict[str, float]:
    return {
        k: r["accuracy"] for k, r in d.items()
        if r["gradient_based"] and not r["transfer"] and not r.get("search", False)
    }


def _below_every_whitebox(rows: Sequence[dict], margin: float, select):
    """``(eps, label, accuracy, best white-box accuracy)`` for each column chosen by
    ``select(row)`` whose accuracy is at least ``margin`` below every white-box one."""
    for e, d in _by_eps(rows, "attack").items():
        grads = _whitebox(d)
        if not grads:
            continue
        best = min(grads.values())
        for k, r in d.items():
            if select(r) and r["accuracy"] <= best - margin + 1e-9:
                yield e, k, r["accuracy"], best


def _masking_at(eps: float) -> str:
    """How every GRADIENT MASKING finding at ``eps`` begins."""
    return f"GRADIENT MASKING at eps={float(eps):g}:"


def flags_masking(messages: Sequence[str], eps: float) -> bool:
    """Whether one of the findings ``messages`` (:func:`run_checks`' strings, e.g. a zoo
    card's ``warnings``) flags gradient masking at ``eps``."""
    return any(m.startswith(_masking_at(eps)) for m in messages)


def gradient_free(row: dict) -> bool:
    """A gradient-free column (Square, SpikeSearch): what the masking check holds against
    the gradient attacks."""
    return (not row["gradient_based"] or row.get("search", False)) and not row["transfer"]


def check_square_vs_gradient(rows: Sequence[dict], margin: float = 0.10) -> list[str]:
    """GRADIENT MASKING: a gradient-free attack (Square, SpikeSearch) breaks at least
    ``margin`` (a fraction: 0.10 = 10 points) more than EVERY gradient attack."""
    return [
        f"{_masking_at(e)} gradient-free {k} leaves {fmt_percent(acc)}, every "
        f"gradient attack >= {fmt_percent(best)} ({round(100 * (best - acc), 1):g} points; "
        f"flagged from {round(100 * margin, 1):g}): the gradient attacks' figures overstate "
        "robustness; trust the worst case over the full suite, or try other gradient modes"
        for e, k, acc, best in _below_every_whitebox(rows, margin, gradient_free)
    ]


def check_transfer_vs_whitebox(rows: Sequence[dict], margin: float = 0.10) -> list[str]:
    """A transfer (black-box) attack beating every white-box gradient attack."""
    return [
        f"{_masking_at(e)} transfer attack {k} leaves {fmt_percent(acc)}, "
        f"every white-box gradient attack >= {fmt_percent(best)}"
        for e, k, acc, best in _below_every_whitebox(rows, margin, lambda r: r["transfer"])
    ]


def check_zero_gradients(stats: dict[str, int], max_fraction: float = 0.5) -> list[str]:
    """Too many samples with an exactly zero input gradient (classifier.grad_stats)."""
    if not stats.get("samples"):
        return []
    frac = stats["zero_samples"] / stats["samples"]
    if frac > max_fraction:
        return [
            f"{frac:.1%} of the per-sample input gradients were exactly zero: gradient "
            "attacks barely moved; their accuracies are upper bounds at best"
        ]
    return []


def check_certified_not_broken(
    certified: dict[float, dict[str, Tensor]], robust: dict[float, Tensor]
) -> list[str]:
    """No sample may be certified at eps and broken by an attack at the same eps."""
    out = []
    for e, by_method in certified.items():
        for m, cert in by_method.items():
            bad = cert & ~robust[e]
            if bool(bad.any()):
                idx = bad.nonzero().squeeze(1)[:10].tolist()
                out.append(
                    f"eps={e:g}: {int(bad.sum())} sample(s) certified by {m} but broken by an "
                    f"attack (indices {idx}...): the certificate or the model's determinism "
                    "(rate draw) is wrong"
                )
    return out


def run_checks(
    rows: Sequence[dict],
    max_class_share: float | None = None,
    expect_broken_at: float | None = None,
    near_zero: float = 0.05,
    margin: float = 0.10,
) -> list[tuple[type[SanityWarning], str]]:
    """All row-based checks; returns ``(warning class, message)`` pairs."""
    found: list[tuple[type[SanityWarning], str]] = []
    found += [(MaskingWarning, m) for m in check_monotone(rows)]
    if max_class_share is not None:
        found += [(MaskingWarning, m) for m in check_large_eps(rows, max_class_share)]
    if expect_broken_at is not None:
        found += [(MaskingWarning, m) for m in check_broken_at(rows, expect_broken_at, near_zero)]
    found += [(MaskingWarning, m) for m in check_square_vs_gradient(rows, margin)]
    found += [(MaskingWarning, m) for m in check_transfer_vs_whitebox(rows, margin)]
    return found

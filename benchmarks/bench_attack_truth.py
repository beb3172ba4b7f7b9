"""Attack completeness: how many truly breakable samples does the attack suite break?

Trains small spiking nets on scikit-learn's digits (64-H-10, clean and IBP
certified; direct and rate input; several T, beta and reset modes), computes
the TRUTH per test sample with the exact MILP verifier
(``snncertify.exact.verify``: robust, or breakable with a witness the real
network misclassifies, split into strict misclassifications and ties), then
runs attack suites through ``attacks.evaluate`` on the same inputs and the same
rate-noise draw and reports, per setting and eps:

* ``breakable`` (``strict`` / ``tie``): truly breakable samples (clean-correct
  ones whose exact minimum margin is < 0 / exactly 0);
* per suite: samples it breaks, of those truly breakable (``found``), split into
  strict and tie, and seconds per sample;
* soundness: a sample the verifier PROVES robust but a suite breaks is a bug in
  one or the other: the benchmark raises.

Settings ``tuned`` are the ones the new attack was developed on; ``heldout``
ones (other seeds, T, beta, resets, widths) were not looked at while tuning.

The suites run first; the exact verifier is warm-started from their lowest-margin
point per sample (``exact.verify(start=...)``), and a suite's witness counts as an
achieved margin (so a sample the MILP leaves undecided but a suite breaks is
breakable). The truth is kept in ``--out/truth/`` and reused by later runs with
the same setting, eps, n and time limit (``--truth-only`` computes just that).

    python benchmarks/bench_attack_truth.py --out runs/attack_truth
    python benchmarks/bench_attack_truth.py --settings heldout --n 30

Writes ``attack_truth.csv``, ``attack_truth.md`` and ``attack_truth.png``
(found / breakable per setting and suite) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import snntorch as snn
import torch
from torch import nn

import attacks
from snncertify import certify, exact
from snncertify.correctness import margin
from snncertify.io import atomic_path
from snncertify.progress import progress_bar
from snncertify.report import to_markdown, write_csv, write_markdown
from snncertify.training import load_digits_split, train_certified, train_clean

#: the suite before the attack-truth work (README's old protocol: default + two gradient modes)
OLD_SUITE = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square", "pgd@rate",
             "pgd@surrogate:fast_sigmoid")


@dataclass(frozen=True)
class Setting:
    name: str
    group: str  # "tuned" or "heldout"
    encoding: str = "direct"
    train: str = "clean"  # "clean" or "ibp"
    T: int = 4
    beta: float = 0.8
    reset: str = "subtract"
    hidden: int = 16
    seed: int = 0


SETTINGS = [
    Setting("direct-clean", "tuned"),
    Setting("direct-ibp", "tuned", train="ibp"),
    Setting("rate-clean", "tuned", encoding="rate"),
    Setting("direct-clean-T6-zero-s1", "heldout", T=6, beta=0.9, reset="zero", seed=1),
    Setting("rate-ibp-T4-s2", "heldout", encoding="rate", train="ibp", seed=2),
    Setting("direct-clean-T8-none-h12-s3", "heldout", T=8, beta=0.7, reset="none", hidden=12,
            seed=3),
    Setting("direct-ibp-T6-zero-s4", "heldout", train="ibp", T=6, beta=0.9, reset="zero", seed=4),
    Setting("rate-clean-T6-s5", "heldout", encoding="rate", T=6, beta=0.9, seed=5),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/attack_truth", help="output folder")
    p.add_argument("--n", type=int, default=30, help="test samples per setting")
    p.add_argument("--eps", type=float, nargs="+", default=[0.05], help="L-inf radii")
    p.add_argument("--settings", nargs="+", default=["all"],
                   help="'all', 'tuned', 'heldout' or setting names")
    p.add_argument("--time-limit", type=float, default=30.0, help="seconds per MILP solve")
    p.add_argument("--truth-only", action="store_true",
                   help="compute (and keep) the exact truth only, no suite")
    p.add_argument("--suites", nargs="+", default=["old", "default"],
                   help="'old' (the previous protocol), 'default' (attacks.DEFAULT_ATTACKS)")
    return p.parse_args(argv)


def build(s: Setting) -> tuple:
    torch.manual_seed(s.seed)
    xtr, ytr, xte, yte = load_digits_split(seed=s.seed)
    net = nn.Sequential(
        nn.Linear(64, s.hidden), snn.Leaky(beta=s.beta, init_hidden=True, reset_mechanism=s.reset),
        nn.Linear(s.hidden, 10),
        snn.Leaky(beta=s.beta, init_hidden=True, output=True, reset_mechanism=s.reset),
    )
    bnet = certify(net, s.T, encoding=s.encoding, readout="rate", seed=s.seed)
    kw = dict(lr=1e-2, batch_size=100, seed=s.seed, progress=False)
    if s.train == "clean":
        train_clean(bnet, xtr, ytr, logit_scale=8.0, epochs=10, **kw)
    else:
        train_certified(bnet, xtr, ytr, eps=0.05, epochs=15, **kw)
    return bnet, xte, yte


def suites(names: list[str]) -> dict[str, tuple]:
    out = {}
    for n in names:
        out[n] = OLD_SUITE if n == "old" else tuple(attacks.DEFAULT_ATTACKS)
    return out


def truth(bnet, clf, x, y, eps: float, args, s: Setting, start: torch.Tensor | None) -> tuple:
    """The exact verifier's ``(margin upper [n], margin lower [n], seconds per sample)``,
    warm-started from ``start`` (the suites' best points), kept in ``--out/truth/``
    (atomically) and reused by a later run with the same setting, eps, n and time limit."""
    path = Path(args.out) / "truth" / f"{s.name}-eps{eps:g}-n{len(y)}-tl{args.time_limit:g}.json"
    if path.exists():
        d = json.loads(path.read_text())
        return (torch.tensor(d["upper"], dtype=torch.float64),
                torch.tensor(d["lower"], dtype=torch.float64), d["seconds_per_sample"])
    t0 = time.perf_counter()
    res = exact.verify(bnet, x, y, eps, noise=clf.eval_noise(x), start=start,
                       time_limit=args.time_limit)
    t_exact = round((time.perf_counter() - t0) / len(y), 3)
    up = [r.margin_upper for r in res]
    lo = [r.margin_lower for r in res]
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"upper": up, "lower": lo, "seconds_per_sample": t_exact}))
    return torch.tensor(up, dtype=torch.float64), torch.tensor(lo, dtype=torch.float64), t_exact


def run_suites(clf, x, y, clean, eps: float, names: list[str]
               ) -> tuple[dict, torch.Tensor | None, torch.Tensor]:
    """Each suite at ``eps`` (``clean``: the clean-correct mask [n]): ``({name:
    (broken-by-it mask [n], seconds per sample)}, the lowest-margin point per sample over
    every attack (None without suites), its real margin [n] (float64; inf where no suite
    ran))."""
    out, best, best_m = {}, None, torch.full((len(y),), math.inf, dtype=torch.float64)
    for name, suite in suites(names).items():
        t0 = time.perf_counter()
        r = attacks.evaluate(clf, (x, y), [eps], attacks=list(suite), progress=False,
                             run_sanity_checks=False, keep_adversarial=True)
        out[name] = (clean & ~r.masks[eps]["robust"], (time.perf_counter() - t0) / len(y))
        for adv in r.adversarial[eps].values():
            with torch.no_grad():
                m = margin(clf.predict(adv), y).double().cpu()
            better = m < best_m
            best = adv.clone() if best is None else torch.where(
                better.reshape((-1,) + (1,) * (x.ndim - 1)), adv, best)
            best_m = torch.minimum(best_m, m)
    return out, best, best_m


def run_setting(s: Setting, args, rows: list[dict]) -> None:
    bnet, x, y = build(s)
    x, y = x[: args.n], y[: args.n]
    clf = attacks.AttackableSNN(bnet)
    clean = clf.correct(x, y)
    for eps in args.eps:
        by_suite, start, start_m = run_suites(clf, x, y, clean, eps,
                                              [] if args.truth_only else args.suites)
        up, lo, t_exact = truth(bnet, clf, x, y, eps, args, s, start)
        up = torch.minimum(up, start_m)  # a suite's witness is an achieved margin too
        breakable = clean & (up <= 0)
        tie = breakable & (up == 0)
        proved = lo > 0
        undecided = clean & ~breakable & ~proved
        base = {"setting": s.name, "group": s.group, "encoding": s.encoding, "train": s.train,
                "T": s.T, "beta": s.beta, "reset": s.reset, "eps": eps, "n": len(y),
                "clean_correct": int(clean.sum()), "breakable": int(breakable.sum()),
                "breakable_strict": int((breakable & ~tie).sum()),
                "breakable_tie": int(tie.sum()), "undecided": int(undecided.sum()),
                "exact_s_per_sample": round(t_exact, 3)}
        for name, (broken, secs) in by_suite.items():
            wrong = broken & proved
            if bool(wrong.any()):
                raise AssertionError(
                    f"{s.name} eps={eps}: suite {name!r} broke samples "
                    f"{wrong.nonzero().squeeze(1).tolist()} that the exact verifier proves robust")
            found = broken & breakable
            rows.append({**base, "suite": name, "broken": int(broken.sum()),
                         "found": int(found.sum()), "found_strict": int((found & ~tie).sum()),
                         "found_tie": int((found & tie).sum()),
                         "found_pct": round(100 * int(found.sum()) / max(int(breakable.sum()), 1), 1),
                         "attack_s_per_sample": round(secs, 3)})
            print(f"{s.name:30s} eps={eps:g} {name:8s} breakable {int(breakable.sum()):3d} "
                  f"(tie {int(tie.sum())}) found {int(found.sum()):3d} (tie {int((found & tie).sum())})"
                  f" {secs:.2f} s/sample", flush=True)


COLUMNS = ["setting", "group", "encoding", "train", "T", "beta", "reset", "eps", "n",
           "clean_correct", "breakable", "breakable_strict", "breakable_tie", "undecided",
           "suite", "broken", "found", "found_strict", "found_tie", "found_pct",
           "attack_s_per_sample", "exact_s_per_sample"]


def totals(rows: list[dict]) -> list[dict]:
    out = []
    for group in ("tuned", "heldout", "all"):
        for suite in dict.fromkeys(r["suite"] for r in rows):
            sel = [r for r in rows if r["suite"] == suite and group in ("all", r["group"])]
            if not sel:
                continue
            b = sum(r["breakable"] for r in sel)
            f = sum(r["found"] for r in sel)
            out.append({"group": group, "suite": suite, "breakable": b,
                        "breakable_tie": sum(r["breakable_tie"] for r in sel), "found": f,
                        "found_tie": sum(r["found_tie"] for r in sel),
                        "found_pct": round(100 * f / max(b, 1), 1),
                        "attack_s_per_sample": round(
                            sum(r["attack_s_per_sample"] for r in sel) / len(sel), 3)})
    return out


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(f"{r['setting']} eps={r['eps']:g}" for r in rows))
    suites_ = list(dict.fromkeys(r["suite"] for r in rows))
    fig = Figure(figsize=(max(6, 1.1 * len(names) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / (len(suites_) + 1)
    for k, label in enumerate(["truly breakable (exact MILP)"] + [f"broken by suite '{s}'" for s in suites_]):
        vals = []
        for nm in names:
            sel = [r for r in rows if f"{r['setting']} eps={r['eps']:g}" == nm]
            vals.append(sel[0]["breakable"] if k == 0 else
                        next(r["found"] for r in sel if r["suite"] == suites_[k - 1]))
        ax.bar([i + k * width for i in range(len(names))], vals, width, label=label,
               hatch=["", "//", "..", "xx"][k % 4], edgecolor="black")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"samples (of n = {rows[0]['n']} per setting)")
    ax.set_title("Attack completeness vs exact truth (digits SNNs, L-inf)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny nets: one thread is fastest (see tests/conftest.py)
    sel = args.settings
    chosen = [s for s in SETTINGS if "all" in sel or s.group in sel or s.name in sel]
    if not chosen:
        raise SystemExit(f"no setting matches {sel}; known: {[s.name for s in SETTINGS]}")
    rows: list[dict] = []
    for s in progress_bar(chosen, desc="settings", unit="setting"):
        run_setting(s, args, rows)
    if args.truth_only:
        print(f"truth kept in {Path(args.out) / 'truth'}")
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "attack_truth.csv", COLUMNS)
    tot = totals(rows)
    write_markdown(rows, out / "attack_truth.md", COLUMNS, title="Attack suites vs exact truth")
    write_csv(tot, out / "attack_truth_totals.csv", list(tot[0]))
    plot(rows, out / "attack_truth.png")
    print(to_markdown(tot, list(tot[0])))


if __name__ == "__main__":
    main()

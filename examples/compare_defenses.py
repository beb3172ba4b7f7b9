"""Which defense makes an SNN robust, and how much of that is proved: the zoo's entries side by side.

    python examples/compare_defenses.py                      # digits entries (ship with the package)
    python examples/compare_defenses.py --dataset mnist --data-root ../shared/data

For every zoo entry of the data set, architecture and encoding (one per defense)
and every eps, on the same n test images (digits: all 360; a seeded subset
otherwise): clean accuracy, each attack's accuracy, the worst case over the
suite (a sample counts only if it survives every attack), verified accuracy by
IBP and by the best linear bound method (a sample counts if any of the linear
methods proves it). A tie is an error everywhere. Accuracy is in % of n in the
table, the CSV and the plots.

The script checks, for every defense and eps, verified <= worst case <= clean
and worst case <= every attack; a violation is an error (exit status 2). The
attack suite's sanity warnings (gradient masking, soundness) are printed.
Writes ``compare_defenses.csv`` / ``.md``, ``accuracy_vs_eps.png`` and
``certified_vs_empirical.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

import attacks
import zoo
from snncertify.report import (
    PlotOptions,
    percent,
    pivot,
    plot_bars,
    plot_lines,
    to_markdown,
    write_csv,
    write_markdown,
)
from snncertify.training.datasets import test_subset

LINEAR = ("crown-ibp", "crown", "alpha-crown")
EPS_AXIS = "eps (L-inf, input in [0, 1])"
#: the full default suite (SpikeSearch included): the cards' protocol
DEFAULT_ATTACKS = list(attacks.DEFAULT_ATTACKS)


def entries(dataset: str, arch: str | None, encoding: str) -> list[str]:
    """The zoo entries compared: one per defense of ``dataset``/``arch``/``encoding``."""
    cards = [zoo.card(n) for n in zoo.list(dataset=dataset)]
    names = [c["name"] for c in cards if (arch is None or c["arch"] == arch)
             and c["certify"]["encoding"] == encoding]
    if not names:
        raise SystemExit(f"no zoo entries for dataset={dataset} arch={arch} encoding={encoding}; "
                         f"see python -m zoo list")
    return names


def eval_config(args: argparse.Namespace) -> attacks.EvalConfig:
    """The ``attacks.evaluate`` settings of the command line (``--eps``, ``--attacks``,
    ``--methods`` as bounds, ``--seed``, ``--batch-size``, ``--device``, ``--quiet``)."""
    return attacks.EvalConfig(eps=args.eps, attacks=args.attacks, bounds=args.methods,
                              seed=args.seed, batch_size=args.batch_size, device=args.device,
                              progress=not args.quiet)


def evaluate_entry(name: str, x: torch.Tensor, y: torch.Tensor, args) -> tuple[list[dict], list[str]]:
    """Long rows (``column``, ``kind``, ``correct``, ``accuracy``: fraction) of one entry, with the
    best-linear verified column added, and the suite's warnings."""
    bnet = zoo.load_bounded(name, map_location=args.device)
    with warnings.catch_warnings():  # the findings are in res.warnings; the caller prints them
        warnings.simplefilter("ignore", attacks.SanityWarning)
        res = attacks.evaluate(bnet, (x, y), config=eval_config(args))
    rows = [dict(r) for r in res]
    linear = [m for m in args.methods if m in LINEAR]
    for e in args.eps:
        masks = res.masks[float(e)]
        if linear:
            best = torch.zeros_like(masks["clean"])
            for m in linear:
                best |= masks[attacks.certified_column(m)]
            rows.append({"eps": float(e), "attack": "verified (best linear)", "kind": "certified",
                         "correct": int(best.sum()), "n": len(y),
                         "accuracy": float(best.sum()) / len(y)})
    return rows, list(res.warnings)


def card_entry(name: str, eps: list[float]) -> tuple[list[dict], list[str], int]:
    """An entry's rows (as :func:`evaluate_entry` returns them) from its zoo card, measured
    with the card's protocol: ``(rows, warnings, n)``. The best linear verified column is
    the best single linear method of the card (a lower bound on their union). SystemExit
    when the card lacks an eps."""
    c = zoo.card(name)
    have = {float(r["eps"]) for r in c["results"]}
    missing = [e for e in eps if float(e) not in have]
    if missing:
        raise SystemExit(f"--from-cards: card {name} has no rows at eps {missing} "
                         f"(it has {sorted(have)}); measure instead (drop --from-cards)")
    rows = [{**r, "attack": r["column"]} for r in c["results"] if float(r["eps"]) in
            {float(e) for e in eps}]
    if any(r["kind"] == "robust" and "ties" not in r for r in rows):
        raise SystemExit(f"--from-cards: card {name} was measured before tie counts; "
                         f"re-measure it (python -m zoo remeasure --names {name})")
    for e in eps:
        linear = [r for r in rows if float(r["eps"]) == float(e) and r["kind"] == "certified"
                  and attacks.certified_method(r["column"]) in LINEAR]
        if linear:
            best = max(linear, key=lambda r: r["correct"])
            rows.append({**best, "attack": "verified (best linear)", "column": None})
    keep = [w for w in c.get("warnings", []) if any(f"at eps={float(e):g}:" in w for e in eps)]
    return rows, keep, c["results"][0]["n"]


def _timed_entry(name: str, x: torch.Tensor, y: torch.Tensor, args) -> tuple:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    return evaluate_entry(name, x, y, args), time.perf_counter() - t0


def run_entries(names: list[str], x: torch.Tensor, y: torch.Tensor, args):
    """Yield ``(name, (rows, warnings), seconds)`` per entry, in order; ``args.jobs`` worker
    processes (spawned, ``args.threads`` threads each) share the entries when > 1."""
    if args.jobs <= 1:
        for name in names:
            yield name, *_timed_entry(name, x, y, args)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    quiet = argparse.Namespace(**{**vars(args), "quiet": True})  # bars would interleave
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_timed_entry, name, x, y, quiet) for name in names]
        for name, fut in zip(names, futures, strict=True):
            yield name, *fut.result()


#: the share of the n samples that the worst case breaks only by a tie (in %): counted
#: wrong (a tie is never correct), but right under an argmax that breaks ties for the truth
TIES_COLUMN = "worst case: broken by ties only"


def column_name(r: dict) -> str:
    if r["kind"] == "robust":
        return "worst-case attack"
    if r["attack"] == attacks.certified_column("ibp"):
        return "verified (IBP)"
    if r["kind"] == "certified" and r["attack"] != "verified (best linear)":
        return f"verified ({attacks.certified_method(r['attack'])})"
    return r["attack"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (module doc); ``--methods`` always includes ``ibp``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", help="digits (default, embedded) or mnist")
    p.add_argument("--arch", help="zoo architecture (default: every one of the data set)")
    p.add_argument("--encoding", default="direct", help="entries with this input encoding")
    p.add_argument("--data-root", help="data folder (not needed for digits)")
    p.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1],
                   help="L-inf radii, input units ([0, 1])")
    p.add_argument("--attacks", nargs="+", default=DEFAULT_ATTACKS,
                   help="attack specs (attacks.make_attack); default: attacks.DEFAULT_ATTACKS "
                        "(SpikeSearch included), e.g. pgd 'square(n_queries=1000)'")
    p.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp"],
                   help="bound methods; the best linear one (crown-ibp, crown, alpha-crown) "
                        "gets its own column")
    p.add_argument("--n", type=int, help="seeded test subset (default: digits all, else 1000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest for the small zoo nets)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes sharing the entries (2 on a 2-core machine halves the "
                        "time; progress bars only with 1)")
    p.add_argument("--out", help="output folder (default: runs/compare_defenses/<dataset>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--from-cards", action="store_true",
                   help="no measuring: the rows of the entries' zoo cards (their protocol, subset "
                        "and suite) at --eps")
    args = p.parse_args(argv)
    if "ibp" not in args.methods:
        args.methods = ["ibp", *args.methods]
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.n if args.n is not None else (None if args.dataset == "digits" else 1000)
    out = Path(args.out or f"runs/compare_defenses/{args.dataset}")
    names = entries(args.dataset, args.arch, args.encoding)
    start = time.perf_counter()
    if args.from_cards:
        results, n = from_cards(names, args)
    else:
        x, y = test_subset(args.dataset, args.data_root, n, args.seed)
        n = len(y)
        results = run_entries(names, x, y, args)

    print(f"comparing {len(names)} entries on {n} test images at eps {args.eps}"
          + (" (from their cards)" if args.from_cards else "")
          + (f" in {args.jobs} processes" if args.jobs > 1 else ""), flush=True)
    rows = collect_rows(results, args, n, start)
    write_outputs(rows, names, args, n, out)
    print(f"wrote {out}/compare_defenses.csv, .md, accuracy_vs_eps.png, certified_vs_empirical.png "
          f"in {time.perf_counter() - start:.0f} s")
    return rows


def from_cards(names: list[str], args: argparse.Namespace) -> tuple:
    """``--from-cards``: the entries' results as :func:`run_entries` yields them, and their
    n; sets ``args.attacks`` / ``args.methods`` to the cards' protocol."""
    if args.n is not None:
        raise SystemExit("--from-cards uses each card's own subset: drop --n")
    cards = {name: card_entry(name, args.eps) for name in names}
    sizes = {c[2] for c in cards.values()}
    if len(sizes) != 1:
        raise SystemExit(f"--from-cards: the cards were measured on different n: {sizes}")
    protocols = {json.dumps(zoo.card(nm)["protocol"]["attacks"]) for nm in names}
    args.attacks = json.loads(protocols.pop()) if len(protocols) == 1 else ["(per card)"]
    args.methods = sorted({attacks.certified_method(r["column"]) for nm in names
                           for r in zoo.card(nm)["results"] if r["kind"] == "certified"})
    return ((nm, (rows, found), 0.0) for nm, (rows, found, _) in cards.items()), sizes.pop()


def collect_rows(results, args: argparse.Namespace, n: int, start: float) -> list[dict]:
    """The long rows of every entry (``accuracy_pct`` in % of ``n``), warnings printed;
    :class:`attacks.ConsistencyError` if an entry breaks verified <= worst case <= clean."""
    rows, problems = [], []
    for name, (res, found), seconds in results:
        card = zoo.card(name)
        for msg in found:
            print(f"  WARNING ({card['defense']}): {msg}")
        problems += [f"{card['defense']}: {v}" for v in attacks.check_consistency(res)]
        masked = {float(e) for e in args.eps if attacks.checks.flags_masking(found, e)}
        for r in res:
            base = {"dataset": args.dataset, "model": name, "defense": card["defense"],
                    "eps": float(r["eps"]), "n": n,
                    "flag": "GRADIENT MASKING" if float(r["eps"]) in masked else ""}
            rows.append(base | {"column": column_name(r), "accuracy_pct": percent(r["accuracy"])})
            if r["kind"] == "robust":  # how many of the worst case's breaks are ties only
                rows.append(base | {"column": TIES_COLUMN, "accuracy_pct": percent(r["ties"] / n)})
        print(f"{name}: done in {seconds:.0f} s ({time.perf_counter() - start:.0f} s so far)",
              flush=True)
    if problems:
        raise attacks.ConsistencyError("the comparison is inconsistent:\n  " + "\n  ".join(problems))
    return rows


def write_outputs(rows: list[dict], names: list[str], args: argparse.Namespace, n: int,
                  out: Path) -> None:
    """The pivoted table (CSV, Markdown, printed) and the two figures."""
    protocol = (f"{args.dataset}, n = {n} test images, L-inf eps in input units, "
                f"attacks: {', '.join(args.attacks)}; bounds: {', '.join(args.methods)}")
    table = [{k: f"{v:g}" if k == "eps" else f"{v:.1f}" if isinstance(v, float) else v
              for k, v in r.items()}
             for r in pivot(rows, ["defense", "eps", "n", "flag"], "column", "accuracy_pct")]
    write_csv(rows, out / "compare_defenses.csv")
    write_markdown(table, out / "compare_defenses.md",
                   title=f"Defenses compared: accuracy (%) of {n} test images ({protocol})")
    print(f"\nAccuracy (%) of n = {n} {args.dataset} test images ({protocol}); "
          "checked: verified <= worst-case attack <= every attack, clean")
    print(to_markdown(table))
    arch = ", ".join(sorted({zoo.card(nm)["arch"] for nm in names}))
    if len(args.eps) == 1:
        _plot_bars(rows, args, arch, n, out)
    else:
        _plot_curves(rows, args, arch, n, out)


def _plot_curves(rows: list[dict], args, arch: str, n: int, out: Path) -> None:
    """Several eps: accuracy vs eps, one panel per defense, and worst case vs verified."""
    plot_lines([r for r in rows if r["column"] != TIES_COLUMN], "eps", "accuracy_pct", "column",
               out / "accuracy_vs_eps.png",
               PlotOptions(panel="defense", ylabel="accuracy (%)", xlabel=EPS_AXIS,
                           ylim=(-2, 102), dodge=0.012,
                           title=f"{args.dataset} zoo entries ({arch}, {args.encoding} input): "
                                 f"accuracy vs eps per defense, n = {n} test images; worst case "
                                 "= every attack; verified = proved"))
    colours = {d: f"C{i % 10}" for i, d in enumerate(dict.fromkeys(r["defense"] for r in rows))}
    summary = [{**r, "curve": f"{r['defense']}: {r['column']}"} for r in rows
               if r["column"] in ("worst-case attack", "verified (best linear)")
               or (r["column"] == "verified (IBP)"
                   and not any(m in LINEAR for m in args.methods))]

    def style(curve: str) -> dict:
        defense, _, col = curve.partition(": ")
        return {"color": colours[defense], "linestyle": "--" if col.startswith("verified") else "-",
                "linewidth": 1.6}

    plot_lines(summary, "eps", "accuracy_pct", "curve", out / "certified_vs_empirical.png",
               PlotOptions(ylabel="accuracy (%)", xlabel=EPS_AXIS, ylim=(-2, 102), dodge=0.008,
                           style=style,
                           title=f"{args.dataset} ({arch}): empirical (worst-case attack, solid) "
                                 f"vs certified (verified, dashed) robust accuracy per defense, "
                                 f"n = {n}"))


def _plot_bars(rows: list[dict], args, arch: str, n: int, out: Path) -> None:
    """One eps: the same two figures as grouped bars, one group per defense."""
    eps = f"eps = {args.eps[0]:g}"
    rows = [{**r, "defense": r["defense"] + ("\n(GRADIENT MASKING)" if r["flag"] else "")}
            for r in rows]
    plot_bars(rows, "defense", "column", "accuracy_pct", out / "accuracy_vs_eps.png",
              ylabel="accuracy (%)", ymax=105,
              title=f"{args.dataset} zoo entries ({arch}, {args.encoding} input) at {eps}: "
                    f"accuracy per defense and column, n = {n} test images; worst case = every "
                    f"attack; ties only = worst-case breaks that are ties; verified = proved")
    keep = ("clean", "worst-case attack", TIES_COLUMN, "verified (best linear)"
            if any(m in LINEAR for m in args.methods) else "verified (IBP)")
    plot_bars([r for r in rows if r["column"] in keep], "defense", "column", "accuracy_pct",
              out / "certified_vs_empirical.png", ylabel="accuracy (%)", ymax=105,
              title=f"{args.dataset} ({arch}) at {eps}: clean, empirical (worst-case attack) and "
                    f"certified (verified) accuracy per defense, n = {n}")


if __name__ == "__main__":
    try:
        main()
    except attacks.ConsistencyError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)

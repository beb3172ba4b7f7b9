"""Quick start: train two small SNNs on scikit-learn's digits, certify and attack them.

    python examples/quickstart.py [--out runs/quickstart] [--methods ibp crown-ibp]

One network is trained cleanly (BPTT), one with certified (IBP) training. For
each, at several eps: clean accuracy, PGD-40 and Square (1000 queries) accuracy and their
per-sample worst case ("robust"), and the verified accuracy of every bound
method. Certified <= robust <= clean must hold, sample by sample. Prints the
table and writes it as CSV and Markdown plus a plot (PNG) to --out. Runs on
the CPU in about a minute; the data ship with scikit-learn (no download).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import snntorch as snn
import torch
from torch import nn

import attacks
import snncertify
from snncertify.report import (
    PlotOptions,
    fmt_percent,
    percent,
    pivot,
    plot_lines,
    to_markdown,
    write_csv,
    write_markdown,
)
from snncertify.training import evaluate_accuracy, load_digits_split, train_certified, train_clean

#: the quick pass's robust column is not the full suite's: say so wherever it is read
QUICK_SUITE = ("robust = worst of PGD-40 and Square only, an upper bound that the full default "
               "suite (attacks.DEFAULT_ATTACKS, with SpikeSearch; examples/compare_defenses.py) "
               "may lower")
TIES_COLUMN = "robust: broken by ties only"


def build_net() -> nn.Sequential:
    """64 -> 128 -> 10 with subtract-reset Leaky neurons: a plain snnTorch network."""
    return nn.Sequential(
        nn.Linear(64, 128),
        snn.Leaky(beta=0.9, threshold=1.0, init_hidden=True),
        nn.Linear(128, 10),
        snn.Leaky(beta=0.9, threshold=1.0, init_hidden=True, output=True),
    )


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="folder for CSV, Markdown and PNG")
    p.add_argument("--steps", type=int, default=8, help="time steps T")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train-eps", type=float, default=0.05, help="eps of certified training")
    p.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.03, 0.05])
    p.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp"], help="bound methods")
    p.add_argument("--square-queries", type=int, default=1000, help="queries of the Square attack")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny nets: 1 is fastest)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = ["pgd", attacks.Square(n_queries=args.square_queries)]

    torch.manual_seed(args.seed)
    xtr, ytr, xte, yte = load_digits_split(seed=args.seed)
    models = {}
    for name in ("clean", "certified"):
        torch.manual_seed(args.seed)
        bnet = snncertify.certify(build_net(), num_steps=args.steps)
        t0 = time.perf_counter()
        if name == "clean":
            train_clean(bnet, xtr, ytr, epochs=args.epochs, seed=args.seed)
        else:
            train_certified(bnet, xtr, ytr, eps=args.train_eps, epochs=args.epochs, seed=args.seed)
        print(f"{name:9} trained in {time.perf_counter() - t0:5.1f} s, clean test accuracy "
              f"{fmt_percent(evaluate_accuracy(bnet, xte, yte))} ({len(yte)} digits)")
        models[name] = bnet

    rows = []
    for name, bnet in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", attacks.SanityWarning)
            res = attacks.evaluate(bnet, (xte, yte), eps=args.eps, attacks=suite,
                                   bounds=args.methods, seed=args.seed)
        for r in res:
            rows.append({"model": name, "eps": r["eps"], "column": r["attack"],
                         "accuracy_pct": percent(r["accuracy"])})
            if r["kind"] == "robust":  # a tie is an error; how many of its breaks are ties only
                rows.append({"model": name, "eps": r["eps"], "column": TIES_COLUMN,
                             "accuracy_pct": percent(r["ties"] / r["n"])})
    table = pivot(rows, ("model", "eps"), "column", "accuracy_pct")
    print("accuracy (%) of the", len(yte), f"test digits; {QUICK_SUITE}")
    print(to_markdown(table))
    out = Path(args.out)
    write_csv(rows, out / "quickstart.csv")
    write_markdown(table, out / "quickstart.md",
                   title=f"Digits: clean vs certified training, accuracy (%); {QUICK_SUITE}")
    plot_lines([r for r in rows if r["column"] != TIES_COLUMN], "eps", "accuracy_pct", "column",
               out / "quickstart.png",
               PlotOptions(panel="model", ylabel="accuracy (%)",
                           title=f"digits, FC 64-128-10, T={args.steps}: clean vs certified "
                                 "training"))
    print(f"wrote {out}/quickstart.csv, quickstart.md and quickstart.png")
    return rows


if __name__ == "__main__":
    main()

"""Tightness of the bound methods: verified accuracy and time, and the gap to exact.

Part 1 (MNIST): trains an FC spiking net (784-H-10, direct encoding, rate
readout, T steps) with IBP certified training for a fixed number of epochs on
a seeded subset of the training set, then reports verified accuracy
per method (ibp, crown-ibp, crown, alpha-crown: those registered) at three
eps values on N test samples, and the time per sample of each method.

Part 2 (sklearn digits, 8x8): a small 64-16-10 net (T=4) that the exact MILP
verifier (``snncertify.exact``) handles; reports, per eps, verified accuracy
of every method and of the exact verifier, and the mean gap between each
method's lower bound on the minimum margin and the exact minimum margin.

    python benchmarks/bench_tightness.py --data-root ../shared/data --out runs/tightness

Writes ``tightness.csv`` and ``tightness.md`` to ``--out``. MNIST is read
with ``torchvision.datasets.MNIST(root, download=False)``: a missing data set
is an error naming the path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import snntorch as snn
import torch
from torch import nn

import snncertify
from snncertify import exact
from snncertify.progress import progress_bar
from snncertify.report import fmt_percent, write_csv, write_markdown
from snncertify.training import evaluate_accuracy, load_digits_split, load_mnist, train_certified

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data", help="torchvision MNIST root")
    p.add_argument("--out", default="runs/tightness", help="output folder (CSV + Markdown)")
    p.add_argument("--n-samples", type=int, default=100, help="MNIST test samples to verify")
    p.add_argument("--eps", type=float, nargs=3, default=[0.005, 0.01, 0.02],
                   help="three L-inf radii for MNIST")
    p.add_argument("--hidden", type=int, default=128, help="MNIST hidden width")
    p.add_argument("--steps", type=int, default=4, help="time steps T (MNIST)")
    p.add_argument("--epochs", type=int, default=3, help="MNIST training epochs")
    p.add_argument("--train-limit", type=int, default=20000, help="MNIST training samples used")
    p.add_argument("--small-n", type=int, default=30, help="digits test samples (exact)")
    p.add_argument("--small-eps", type=float, nargs=3, default=[0.01, 0.02, 0.04],
                   help="three L-inf radii for the small digits model")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per MILP solve")
    p.add_argument("--eps-train", type=float, default=0.02,
                   help="IBP training radius (MNIST; digits use --small-eps' largest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-mnist", action="store_true", help="only run the small model")
    return p.parse_args(argv)


def fc_snn(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, hidden),
        snn.Leaky(beta=0.9, threshold=1.0, init_hidden=True),
        nn.Linear(hidden, n_out),
        snn.Leaky(beta=0.9, threshold=1.0, init_hidden=True, output=True),
    )


def min_margin(bnet, x, y, eps, method: str) -> torch.Tensor:
    """Lower bound of ``min_{j != y} score_y - score_j`` per sample ``[B]``."""
    m = bnet.margin_bounds(x, y, eps, method=method)
    m[torch.arange(len(y)), y] = float("inf")
    return m.min(1).values


def run_methods(bnet, x, y, eps_values, methods, model: str, rows: list[dict],
                exact_margins: dict | None = None) -> None:
    for eps in eps_values:
        for method in progress_bar(methods, desc=f"{model} eps={eps:g}", unit="method", leave=False):
            t0 = time.perf_counter()
            margins = torch.cat([min_margin(bnet, x[i:i + 25], y[i:i + 25], eps, method)
                                 for i in range(0, len(y), 25)]).detach()
            dt = (time.perf_counter() - t0) / len(y)
            row = {"model": model, "eps": eps, "method": method, "n": len(y),
                   "verified_acc": float((margins > 0).float().mean()),
                   "mean_min_margin_lb": float(margins.clamp(min=-2).mean()),
                   "time_per_sample_s": dt}
            if exact_margins is not None:
                ex = exact_margins[eps]
                row["mean_gap_to_exact"] = float((ex - margins.double()).mean())
                row["max_gap_to_exact"] = float((ex - margins.double()).max())
            rows.append(row)


def mnist_part(args, rows: list[dict]) -> None:
    try:
        xtr, ytr = load_mnist(args.data_root, train=True)
        xte, yte = load_mnist(args.data_root, train=False)
    except FileNotFoundError as err:
        sys.exit(str(err))
    pick = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(args.seed))
    xtr, ytr = xtr[pick[: args.train_limit]], ytr[pick[: args.train_limit]]
    torch.manual_seed(args.seed)
    net = fc_snn(784, args.hidden, 10)
    bnet = snncertify.certify(net, args.steps, encoding="direct", readout="rate")
    train_certified(bnet, xtr, ytr, eps=args.eps_train, epochs=args.epochs, lr=2e-3,
                    batch_size=128, seed=args.seed)
    acc = evaluate_accuracy(bnet, xte, yte)
    print(f"MNIST 784-{args.hidden}-10, T={args.steps}: clean test accuracy {fmt_percent(acc)}")
    rows.append({"model": f"mnist-fc{args.hidden}", "eps": 0.0, "method": "clean",
                 "n": len(yte), "verified_acc": acc})
    methods = [m for m in METHODS if m in snncertify.available_methods()]
    x, y = xte[:args.n_samples], yte[:args.n_samples]
    run_methods(bnet, x, y, args.eps, methods, f"mnist-fc{args.hidden}", rows)


def digits_part(args, rows: list[dict]) -> None:
    xtr, ytr, xte, yte = load_digits_split(seed=args.seed)
    torch.manual_seed(args.seed)
    net = fc_snn(64, 16, 10)
    bnet = snncertify.certify(net, 4, encoding="direct", readout="rate")
    train_certified(bnet, xtr, ytr, eps=2 * max(args.small_eps), epochs=40, lr=2e-3,
                    batch_size=64, seed=args.seed)
    acc = evaluate_accuracy(bnet, xte, yte)
    print(f"digits 64-16-10, T=4: clean test accuracy {fmt_percent(acc)}")
    rows.append({"model": "digits-fc16", "eps": 0.0, "method": "clean", "n": len(yte),
                 "verified_acc": acc})
    x, y = xte[:args.small_n], yte[:args.small_n]
    exact_margins, statuses = {}, {}
    for eps in args.small_eps:
        t0 = time.perf_counter()
        res = exact.verify(bnet, x, y, eps, time_limit=args.time_limit, progress=True)
        dt = (time.perf_counter() - t0) / len(y)
        ex = torch.tensor([r.margin_lower for r in res], dtype=torch.float64)
        exact_margins[eps] = ex
        statuses[eps] = [r.status for r in res]
        rows.append({"model": "digits-fc16", "eps": eps, "method": "exact", "n": len(y),
                     "verified_acc": float((ex > 0).float().mean()),
                     "mean_min_margin_lb": float(ex.clamp(min=-2).mean()),
                     "time_per_sample_s": dt, "mean_gap_to_exact": 0.0,
                     "max_gap_to_exact": 0.0,
                     "exact_status": ",".join(f"{s}:{statuses[eps].count(s)}"
                                              for s in sorted(set(statuses[eps]))),
                     "attack_acc": float(np.mean([r.margin_upper > 0 for r in res]))})
    methods = [m for m in METHODS if m in snncertify.available_methods()]
    run_methods(bnet, x, y, args.small_eps, methods, "digits-fc16", rows, exact_margins)


COLUMNS = ["model", "eps", "method", "n", "verified_acc", "mean_min_margin_lb",
           "mean_gap_to_exact", "max_gap_to_exact", "time_per_sample_s", "exact_status",
           "attack_acc"]


def write(rows: list[dict], out: Path) -> None:
    rows = [{k: r.get(k, "") for k in COLUMNS} for r in rows]
    write_csv(rows, out / "tightness.csv", COLUMNS)
    write_markdown(rows, out / "tightness.md", COLUMNS, title="Tightness of the bound methods")
    print((out / "tightness.md").read_text())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    rows: list[dict] = []
    if not args.skip_mnist:
        mnist_part(args, rows)
    digits_part(args, rows)
    write(rows, Path(args.out))


if __name__ == "__main__":
    main()

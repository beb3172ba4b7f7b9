"""Cost of one certified-training step relative to a clean step, per architecture.

For each named architecture (fresh seeded weights, its own T, direct input):
one optimiser step (forward + backward + Adam) of clean training, of IBP
certified training and of CROWN-IBP certified training, with the K-1 margin rows and
with the fused one-row loss (the ``Certified`` defense at full eps, kappa at its end
value), on a batch of uniform noise
images; best of ``--repeats`` after a warm-up, on ``--threads`` threads.
A CROWN-IBP step that the memory budget refuses is reported as refused
with the planner's message. Prints a table and writes CSV + Markdown.

    python benchmarks/bench_train_step.py [--archs mnist-fc mnist-conv cifar-conv]
        [--batch 64] [--eps 0.1] [--repeats 3] [--threads 1] [--out runs/train_step]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from snncertify import MemoryBudgetError, certify
from snncertify.report import write_csv, write_markdown
from snncertify.training import ARCHS, build_arch
from snncertify.training.defenses import Certified, Clean

#: (bound method, robust loss) of each certified column
VARIANTS = (("ibp", "margins"), ("crown-ibp", "margins"), ("crown-ibp", "fused"))


def step_seconds(bnet, defense, x, y, repeats: int) -> float:
    """Best wall time of one training step (loss, backward, Adam step)."""
    opt = torch.optim.Adam(bnet.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = defense.loss(bnet, x, y, None, 1.0)
        loss.backward()
        opt.step()

    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def bench_arch(name: str, args) -> dict:
    spec = ARCHS[name]
    torch.manual_seed(0)
    bnet = certify(build_arch(name), spec.num_steps)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch, *spec.input_shape), generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    row = {"arch": name, "T": spec.num_steps, "batch": args.batch}
    row["clean_s"] = step_seconds(bnet, Clean(), x, y, args.repeats)
    for method, loss in VARIANTS:
        key = method if loss == "margins" else f"{method} {loss}"
        defense = Certified(eps=args.eps, method=method, ramp=0.0, robust_loss=loss)
        try:
            row[f"{key}_s"] = step_seconds(bnet, defense, x, y, args.repeats)
        except MemoryBudgetError as err:
            row[f"{key}_s"] = None
            row[f"{key}_note"] = str(err).split(":")[0]
    return row


def fmt(row: dict, method: str) -> str:
    t = row[f"{method}_s"]
    if t is None:
        return f"refused ({row[f'{method}_note']})"
    return f"{t:.3f} s ({t / row['clean_s']:.1f}x clean)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=["mnist-fc", "mnist-conv", "cifar-conv"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/train_step")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.archs:
        row = bench_arch(name, args)
        rows.append(row)
        print(f"{name} (T {row['T']}, batch {row['batch']}): clean {row['clean_s']:.3f} s, "
              f"ibp {fmt(row, 'ibp')}, crown-ibp {fmt(row, 'crown-ibp')}, "
              f"crown-ibp fused {fmt(row, 'crown-ibp fused')}", flush=True)
    table = [{"arch": r["arch"], "T": r["T"], "clean step (s)": f"{r['clean_s']:.3f}",
              "IBP step": fmt(r, "ibp"), "CROWN-IBP step (margin rows)": fmt(r, "crown-ibp"),
              "CROWN-IBP step (fused, one row)": fmt(r, "crown-ibp fused")} for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "train_step.csv")
    write_markdown(table, out / "train_step.md",
                   title=f"One training step, batch {args.batch}, {args.threads} thread(s), "
                         f"eps {args.eps}, best of {args.repeats}")
    print(f"wrote {out / 'train_step.csv'} and {out / 'train_step.md'}")


if __name__ == "__main__":
    main()

"""Cost of one certified-training step relative to a clean step, per architecture.

For each named architecture (fresh seeded weights, its own T, direct input): one
optimiser step (forward + backward + Adam) of clean training, of IBP certified
training and of CROWN-IBP certified training, with the K-1 margin rows and with the
fused one-row loss, alone and with the 2 likeliest classes on their own rows
(``snncertify.loss_bound``; the ``Certified`` defense at full eps,
kappa at its end value), on a batch of uniform noise images; best of ``--repeats``
after a warm-up, on ``--threads`` threads. Each (architecture, step) runs in a fresh
process, so its peak resident memory (MiB, the process's high-water mark, less the
memory it held before the first step) is its own; beside it, the memory planner's
estimate of what autograd keeps for the bound (``snncertify.budget``). A step the
memory budget refuses is reported as refused with the planner's message. Prints a
table and writes CSV, Markdown and a PNG of the ratios.

    python benchmarks/bench_train_step.py [--archs mnist-fc mnist-conv cifar-conv]
        [--variants clean ibp ...] [--batch 64 128] [--eps 0.1] [--repeats 3]
        [--threads 1 2] [--out runs/train_step]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

import torch

from snncertify import MemoryBudgetError, certify
from snncertify.methods import method_cost
from snncertify.report import plot_bars, write_csv, write_markdown
from snncertify.training import ARCHS, build_arch
from snncertify.training.defenses import Certified, Clean

#: step name -> (bound method, robust loss, fused_rows); None: the clean step
VARIANTS: dict[str, tuple[str, str, int] | None] = {
    "clean": None,
    "ibp": ("ibp", "margins", 0),
    "crown-ibp (margin rows)": ("crown-ibp", "margins", 0),
    "crown-ibp (fused, 1 row)": ("crown-ibp", "fused", 0),
    "crown-ibp (fused, 2 kept + 1 row)": ("crown-ibp", "fused", 2),
}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def kept_estimate_mib(bnet, x, method: str, loss: str, top: int) -> float:
    """The planner's bytes autograd keeps for the bound term, in MiB."""
    rows = top + 1 if loss == "fused" else bnet.num_classes(x)
    return x.shape[0] * method_cost(method)(bnet.sizes(x), rows).kept_per_sample / 2**20


def cell(arch: str, variant: str, batch: int, eps: float, repeats: int, threads: int) -> dict:
    """One (architecture, step) measurement; run in a fresh process."""
    torch.set_num_threads(threads)
    spec = ARCHS[arch]
    torch.manual_seed(0)
    bnet = certify(build_arch(arch), spec.num_steps)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *spec.input_shape), generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    bound = VARIANTS[variant]
    defense = Clean() if bound is None else Certified(
        eps=eps, method=bound[0], ramp=0.0, robust_loss=bound[1], fused_rows=bound[2])
    opt = torch.optim.Adam(bnet.parameters(), lr=1e-3)
    row = {"arch": arch, "T": spec.num_steps, "batch": batch, "step": variant}
    if bound is not None:
        row["kept_estimate_mib"] = round(kept_estimate_mib(bnet, x, *bound), 1)
    base = peak_mib()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = defense.loss(bnet, x, y, None, 1.0)
        loss.backward()
        opt.step()

    try:
        step()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - start)
        row["seconds"] = best
        row["peak_mib"] = round(peak_mib() - base, 1)
    except MemoryBudgetError as err:
        row["seconds"] = None
        row["note"] = str(err).split(":")[0]
    return row


def run_cell(*args) -> dict:
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(cell, args)


def fmt(row: dict, clean_s: float) -> str:
    if row["seconds"] is None:
        return f"refused ({row['note']})"
    return f"{row['seconds']:.3f} s ({row['seconds'] / clean_s:.1f}x clean)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=["mnist-fc", "mnist-conv", "cifar-conv"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="steps to time (the clean one is always timed: the ratios need it)")
    p.add_argument("--batch", type=int, nargs="+", default=[64])
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--out", default="runs/train_step")
    args = p.parse_args()
    variants = ["clean", *(v for v in args.variants if v != "clean")]
    table = []
    for arch in args.archs:
        for batch in args.batch:
            for threads in args.threads:
                rows = [run_cell(arch, v, batch, args.eps, args.repeats, threads)
                        for v in variants]
                clean_s = rows[0]["seconds"]
                for r in rows:
                    line = {"arch": arch, "T": r["T"], "batch": batch, "threads": threads,
                            "step": r["step"], "seconds": r["seconds"],
                            "x clean": None if r["seconds"] is None
                            else round(r["seconds"] / clean_s, 2),
                            "time": fmt(r, clean_s), "peak MiB": r.get("peak_mib", ""),
                            "planner: kept MiB": r.get("kept_estimate_mib", "")}
                    table.append(line)
                    print("  ".join(f"{k} {v}" for k, v in line.items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "train_step.csv")
    write_markdown(table, out / "train_step.md",
                   title=f"One training step, eps {args.eps}, best of {args.repeats}, "
                         "a fresh process each")
    plot(table, out / "train_step.png", f"One training step relative to the clean step (eps "
         f"{args.eps}, best of {args.repeats}, fresh weights)")
    print(f"wrote {out / 'train_step.csv'}, .md and .png")


def plot(table: list[dict], path: Path, title: str) -> None:
    """Bars: seconds per step over the clean step's, grouped by (arch, batch, threads)."""
    bars = [{"setting": f"{r['arch']} b{r['batch']} t{r['threads']}", "step": r["step"],
             "x clean": r["x clean"]} for r in table if r["x clean"] is not None]
    plot_bars(bars, "setting", "step", "x clean", path, title=title,
              ylabel="seconds per step / clean step's")


if __name__ == "__main__":
    main()

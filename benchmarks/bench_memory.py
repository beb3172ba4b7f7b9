"""Peak memory and time of every bound method, with and without a memory budget.

Networks (random seeded weights; ``snncertify.training.archs``): the paper's
MNIST FC (784-512-256-10, T = 10) and CONV (T = 10), snnTorch's tutorial FC
(784-1000-10, T = 25) and tutorial CSNN (conv-maxpool x 2, fc 10, T = 25).
Every (network, method, batch, budget) runs in a fresh subprocess, called
as a user calls it: ``bnet.bounds(x, eps, method=...)`` with autograd ON
(``--no-grad`` runs under ``torch.no_grad()``). The peak is the process's
resident-set high-water mark during the call (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``) minus the resident set before the call, in
MiB; on CUDA it is ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_memory.py [--nets fc conv tutorial-fc tutorial-csnn]
        [--methods ibp crown-ibp crown alpha-crown] [--batches 1 32 256]
        [--budgets default 4GB] [--timeout 300] [--out runs/memory]

Writes ``memory.csv``, ``memory.md`` and ``memory.png`` (peak MiB against the batch, one
panel per network, one line per method and budget) and prints the table. A budget
run that exceeds its budget is flagged ``OVER``; a run that cannot fit
reports the library's ``MemoryBudgetError`` instead of dying.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

NETS = {  # name -> (arch, eps)
    "fc": ("mnist-fc", 0.02),
    "conv": ("mnist-conv", 0.02),
    "tutorial-fc": ("tutorial-fc", 0.01),
    "tutorial-csnn": ("tutorial-csnn", 0.01),
}
METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(key)


def run_one(net_name: str, method: str, batch: int, budget: str, device: str,
            no_grad: bool) -> dict:
    """One call, in this process; returns the measured row."""
    import torch

    from snncertify import MemoryBudgetError, certify
    from snncertify.training.archs import ARCHS, build_arch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    arch, eps = NETS[net_name]
    torch.manual_seed(0)
    spec = ARCHS[arch]
    net = build_arch(arch).to(device)
    bnet = certify(net, num_steps=spec.num_steps,
                   memory_budget=None if budget == "default" else budget)
    x = torch.rand((batch, *spec.input_shape), generator=torch.Generator().manual_seed(1))
    x = x.to(device)
    row = {"net": net_name, "method": method, "batch": batch, "budget": budget,
           "grad": not no_grad}
    bnet.num_classes(x)  # the one-sample probe, outside the measurement
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _status("VmRSS")
    start = time.perf_counter()
    try:
        ctx = torch.no_grad() if no_grad else torch.enable_grad()
        with ctx:
            lower, upper = bnet.bounds(x, eps, method=method)
        if cuda:
            torch.cuda.synchronize()
        row["status"] = "ok"
        row["mean_width"] = float((upper - lower).detach().mean())
    except MemoryBudgetError as err:
        row["status"] = f"MemoryBudgetError: {err}"
    row["seconds"] = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")
    row["peak_mib"] = (peak - before) / 2**20
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32, 256])
    ap.add_argument("--budgets", nargs="+", default=["default", "4GB"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-grad", action="store_true", help="call under torch.no_grad()")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per call")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--merge", nargs="+", type=Path, default=None,
                    help="rewrite --out from earlier memory.csv files instead of measuring")
    ap.add_argument("--one", nargs=4, metavar=("NET", "METHOD", "BATCH", "BUDGET"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        net, method, batch, budget = args.one
        print(json.dumps(run_one(net, method, int(batch), budget, args.device, args.no_grad)))
        return

    if args.merge:
        import csv

        rows = [r for f in args.merge for r in csv.DictReader(f.open())]
        write_outputs(rows, args.out or Path("."))
        return
    rows = []
    for net in args.nets:
        for method in args.methods:
            for batch in args.batches:
                for budget in args.budgets:
                    cmd = [sys.executable, __file__, "--device", args.device,
                           "--one", net, method, str(batch), budget]
                    if args.no_grad:
                        cmd.append("--no-grad")
                    try:
                        res = subprocess.run(cmd, capture_output=True, text=True,
                                             timeout=args.timeout)
                        if res.returncode != 0:
                            tail = (res.stderr.strip().splitlines() or ["?"])[-1]
                            row = {"status": f"crashed (rc {res.returncode}): {tail}"}
                        else:
                            row = json.loads(res.stdout.strip().splitlines()[-1])
                    except subprocess.TimeoutExpired:
                        row = {"status": f"timeout > {args.timeout:.0f} s"}
                    row = {"net": net, "method": method, "batch": batch, "budget": budget,
                           "grad": not args.no_grad, **row}
                    limit = _bytes(budget)
                    if row.get("peak_mib") is not None and limit is not None \
                            and row["peak_mib"] * 2**20 > limit:
                        row["status"] += " OVER budget"
                    rows.append(row)
                    print(_line(row), flush=True)
    if args.out:
        write_outputs(rows, args.out)


COLUMNS = ["net", "method", "batch", "budget", "grad", "status", "seconds", "peak_mib",
           "mean_width"]


def write_outputs(rows: list[dict], out: Path) -> None:
    """``memory.csv``, ``memory.md`` and ``memory.png`` in ``out``."""
    from snncertify.report import PlotOptions, plot_lines, write_csv, write_markdown

    out.mkdir(parents=True, exist_ok=True)
    def cell(c: str, v):
        if v in (None, "") or c not in ("seconds", "peak_mib", "mean_width"):
            return v
        return round(float(v), 3 if c == "mean_width" else 2 if c == "seconds" else 1)

    table = [{c: cell(c, r.get(c)) for c in COLUMNS} for r in rows]
    write_csv(table, out / "memory.csv")
    write_markdown(table, out / "memory.md", title="Peak memory (MiB) and time (s) of "
                   "bnet.bounds(x, eps, method), one fresh process per call (grad: autograd on)")
    ok = [{"net": r["net"], "batch": float(r["batch"]), "peak (MiB)": float(r["peak_mib"]),
           "method": f"{r['method']} (budget {r['budget']}"
                     + (")" if str(r["grad"]) == "True" else ", no grad)")}
          for r in rows if r.get("status") == "ok"]
    if ok:
        plot_lines(ok, "batch", "peak (MiB)", "method", out / "memory.png",
                   PlotOptions(title="Peak memory of bnet.bounds (autograd on unless marked)",
                               panel="net", ylim=None, xlabel="batch size"))
    print(f"wrote {out}/memory.csv, memory.md and memory.png")


def _bytes(budget: str) -> int | None:
    if budget == "default":
        return None
    from snncertify.budget import parse_budget
    return parse_budget(budget)


def _line(r: dict) -> str:
    peak = r.get("peak_mib")
    secs = r.get("seconds")
    return (f"{r['net']:>13} {r['method']:>11} B={r['batch']:<4} budget={r['budget']:<8} "
            f"{'-' if secs is None else f'{secs:8.2f} s'} "
            f"{'-' if peak is None else f'{peak:9.1f} MiB'}  {r['status'][:100]}")


if __name__ == "__main__":
    main()

"""Measure trained runs (``python -m snncertify.train`` folders) side by side.

    python benchmarks/bench_defenses.py --runs runs/mnist-fc-* --data-root ../shared/data \\
        --eps 0.1 --n 1000 --out runs/bench_defenses

Per run: clean accuracy on the FULL test set, then on a seeded random subset
of ``--n`` test images (the same subset for every run) the attack suite
(``attacks.evaluate``: per-attack, worst case over the suite) and verified
accuracy (``--methods``) at each eps, and training seconds per epoch relative
to the clean run. Rate-input runs are attacked and certified for the default
noise draw (one pattern per seed, shared by all samples). Writes CSV,
Markdown and a PNG (accuracy in %, one unit everywhere) into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import attacks
from snncertify.report import fmt_percent, percent, pivot, plot_bars, write_csv, write_markdown
from snncertify.training.checkpoint import load_checkpoint
from snncertify.training.datasets import make_loader, test_subset
from snncertify.training.loop import evaluate


def epoch_seconds(cfg: dict) -> float:
    """Mean training seconds per epoch recorded in a run's config."""
    times = cfg["history"]["epoch_seconds"]
    return sum(times) / len(times)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (model.pt + config.json)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--eps", type=float, nargs="+", help="default: each run's training eps")
    p.add_argument("--n", type=int, default=1000, help="seeded test subset for attacks/bounds")
    p.add_argument("--attacks", nargs="+",
                   default=[*attacks.DEFAULT_ATTACKS, "pgd@surrogate:fast_sigmoid"],
                   help="attack specs; default: the full default suite (SpikeSearch included) "
                        "plus PGD through a fast-sigmoid surrogate")
    p.add_argument("--square-queries", type=int, default=5000)
    p.add_argument("--methods", nargs="+", default=["ibp"], help="bound methods (all runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench_defenses")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    suite = [attacks.Square(n_queries=a.square_queries) if s == "square" else s for s in a.attacks]
    rows, extra, subsets = [], {}, {}
    loaded = [(run, *load_checkpoint(run)) for run in a.runs]
    clean_epoch = next((epoch_seconds(cfg) for _, _, cfg in loaded if cfg["defense"] == "clean"),
                       None)
    for run, bnet, cfg in loaded:
        name = Path(run).name
        steps = bnet.num_steps
        full = evaluate(bnet, make_loader(cfg["dataset"], a.data_root, False, 500, num_steps=steps))
        if cfg["dataset"] not in subsets:
            subsets[cfg["dataset"]] = test_subset(cfg["dataset"], a.data_root, a.n, a.seed)
        x, y = subsets[cfg["dataset"]]
        eps = a.eps or [cfg["defense_params"].get("eps", 0.1)]
        start = time.perf_counter()
        res = attacks.evaluate(bnet, (x, y), eps, suite, bounds=a.methods, seed=a.seed,
                               batch_size=250, progress=True)
        secs = epoch_seconds(cfg)
        for r in res:
            rows.append({"run": name, "defense": cfg["defense"], "encoding": bnet.encoding,
                         "eps": float(r["eps"]), "column": r["attack"],
                         "accuracy_pct": percent(r["accuracy"]), "n": a.n})
        rel = secs / clean_epoch if clean_epoch else float("nan")
        print(f"{name}: clean {fmt_percent(full)} (full test set); eval {time.perf_counter() - start:.0f} s; "
              f"{secs:.1f} s/epoch = {rel:.2f}x clean")
        n_test = cfg.get("metrics", {}).get("n_test")
        extra[name] = {"clean, full test set": percent(full), "n_test": n_test,
                       "epoch s": secs, "epoch time / clean": rel}
        for e in eps:
            rows.append({"run": name, "defense": cfg["defense"], "encoding": bnet.encoding,
                         "eps": float(e), "column": "clean, full test set",
                         "accuracy_pct": percent(full), "n": n_test})
    out = Path(a.out)
    write_csv(rows, out / "defenses.csv")
    wide = pivot([r for r in rows if r["column"] != "clean, full test set"],
                 ["run", "defense", "encoding", "eps", "n"], "column", "accuracy_pct")
    for w in wide:
        w.update(extra[w["run"]])
    write_markdown(wide, out / "defenses.md", columns=list(wide[0]),
                   title="Defenses: accuracy (%) on a seeded test subset of n images; "
                   "clean also on the full test set (n_test)")
    print((out / "defenses.md").read_text())
    for e in sorted({r["eps"] for r in rows}):
        keep = [r for r in rows if r["eps"] == e and (
            r["column"] in ("clean", "robust") or r["column"].startswith("certified"))]
        for r in keep:
            r["bar"] = {"robust": "worst-case attack"}.get(r["column"], r["column"])
        plot_bars(keep, "run", "bar", "accuracy_pct", out / f"defenses_eps{e:g}.png",
                  title=f"{cfg['dataset']}, eps = {e:g} (L-inf, input in [0, 1]): clean, "
                  f"worst-case attack and verified accuracy (n = {a.n} test images)",
                  ylabel="accuracy (%)", ymax=105)
    return rows


if __name__ == "__main__":
    main()

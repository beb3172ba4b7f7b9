"""Certified-training runs beside a zoo card: clean and verified accuracy, on the card's protocol.

For the card's own weights and each training run folder (``python -m snncertify.train ...
--out DIR``, e.g. CROWN-IBP training with the fused robust loss at the card's settings):
clean accuracy on the full test set, verified accuracy (IBP, CROWN-IBP; a tie is never
verified) on the card's seeded test subset at its eps, and the run's seconds per epoch.
Bounds only: no attacks (the card's robust column needs the full suite, ``python -m zoo add``).
Prints a table and writes CSV, Markdown and a PNG (accuracy in %).

    python benchmarks/bench_fused_training.py --card mnist-fc-ibp \\
        --runs runs/mnist-fc-crown-ibp-fused --data-root ../shared/data [--out runs/fused]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import attacks
import zoo
from snncertify.report import percent, plot_bars, write_csv, write_markdown
from snncertify.training.checkpoint import load_checkpoint
from snncertify.training.datasets import make_loader, test_subset
from snncertify.training.loop import evaluate

METHODS = ("ibp", "crown-ibp")


def describe(cfg: dict) -> str:
    p = cfg["defense_params"]
    if cfg["defense"] != "certified":
        return cfg["defense"]
    loss = p.get("robust_loss", "margins")
    rows = f", {p['fused_rows']} kept rows" if p.get("fused_rows") else ""
    mix = f", to {p['linear_end']:g} linear + IBP" if p.get("linear_end", 1.0) < 1 else ""
    return f"{p['method']} ({loss}{rows}{mix})"


def measure(name: str, bnet, cfg: dict, card: dict, data_root: str) -> dict:
    proto = card["protocol"]
    eps = proto["eps"][0]
    bnet = bnet.eval()
    loader = make_loader(card["dataset"], data_root, False, 500, num_steps=bnet.num_steps)
    row = {"entry": name, "training": describe(cfg), "eps": eps,
           "clean %": percent(evaluate(bnet, loader, "cpu"))}
    x, y = test_subset(card["dataset"], data_root, proto["n"], proto["subset_seed"])
    res = attacks.evaluate(bnet, (x, y), config=attacks.EvalConfig(
        eps=[eps], attacks=[], bounds=list(METHODS), batch_size=proto["batch_size"],
        seed=proto["seed"], progress=False))
    for r in res:
        if r["attack"].startswith("certified ("):
            row[f"verified {attacks.certified_method(r['attack'])} %"] = percent(r["accuracy"])
    secs = cfg.get("metrics", {}).get("epoch_seconds_mean", cfg.get("epoch_seconds_mean"))
    row["s/epoch (1 thread)"] = round(secs, 1) if secs else ""
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--card", default="mnist-fc-ibp")
    p.add_argument("--runs", nargs="*", default=[])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/fused_training")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    card = zoo.card(args.card)
    rows = [measure(args.card, zoo.load_bounded(args.card), card["training"], card,
                    args.data_root)]
    for run in args.runs:
        bnet, cfg = load_checkpoint(run)
        rows.append(measure(Path(run).name, bnet, cfg, card, args.data_root))
    for r in rows:
        print("  ".join(f"{k} {v}" for k, v in r.items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "fused_training.csv")
    title = (f"{card['dataset']}: the card {args.card} and training runs, clean (full test set) "
             f"and verified at eps {rows[0]['eps']} ({card['protocol']['n']}-image subset), %")
    write_markdown(rows, out / "fused_training.md", title=title)
    long = [{"entry": f"{r['entry']}\n{r['training']}", "measure": k, "value": float(r[k])}
            for r in rows for k in r if k.endswith("%")]
    plot_bars(long, "entry", "measure", "value", out / "fused_training.png", title=title,
              ylabel="accuracy (%)", ymax=100)
    print(f"wrote {out}/fused_training.csv, .md and .png")


if __name__ == "__main__":
    main()

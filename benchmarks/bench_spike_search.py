"""What SpikeSearch costs per sample on zoo entries, and what its candidate forward buys.

For each entry, on the first ``--n`` images of its card's seeded subset at the card's eps:

* ``search``: SpikeSearch with today's defaults and with the settings before the speed-up
  (64 coordinates per round, relaxed margins for every lowest-exact candidate:
  ``coords=64, relaxed_top=0``), accuracy left, tie-only / strict breaks, seconds per sample;
* ``forward``: one batch of 1,024 candidates (single-coordinate moves of the first images
  inside the ball), exact scores by ``BoundedSNN.forward`` and by ``distinct_forward`` (the ops
  after each neuron layer once per distinct spike train), milliseconds (best of 5) and whether
  the scores are equal.

Writes CSV and Markdown of both, and ``spike_search.png`` (seconds per sample, bars).

    python benchmarks/bench_spike_search.py [--names mnist-fc-hire mnist-fc-ibp]
        [--data-root ../shared/data] [--n 50] [--threads 1] [--out runs/spike_search]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import attacks
import zoo
from attacks.spike_search import SpikeSearch
from snncertify.report import plot_bars, write_csv, write_markdown
from snncertify.training.datasets import test_subset

#: label -> SpikeSearch settings
CONFIGS = {"default": {}, "before (coords 64, relaxed_top 0)": {"coords": 64, "relaxed_top": 0}}


def entry_data(name: str, data_root: str | None, n: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The first ``n`` images of the card's subset and the card's (first) eps."""
    card = zoo.card(name)
    proto = card["protocol"]
    root = None if card["dataset"] == "digits" else data_root
    if card["dataset"] != "digits" and root is None:
        raise SystemExit(f"{name}: --data-root is needed for {card['dataset']}")
    x, y = test_subset(card["dataset"], root, proto["n"], proto["subset_seed"])
    return x[:n], y[:n], max(proto["eps"])


def candidates(x: torch.Tensor, eps: float, n: int = 1024, seed: int = 0) -> torch.Tensor:
    """``n`` single-coordinate moves of the samples ``x`` inside their ball."""
    gen = torch.Generator().manual_seed(seed)
    flat = x.reshape(x.shape[0], -1)
    rows = torch.arange(n) % flat.shape[0]
    c = flat[rows].clone()
    j = torch.randint(0, flat.shape[1], (n,), generator=gen)
    lo, hi = (c - eps).clamp(0, 1), (c + eps).clamp(0, 1)
    t = torch.rand(n, generator=gen)
    c[torch.arange(n), j] = lo[torch.arange(n), j] + t * (hi - lo)[torch.arange(n), j]
    return c.reshape(n, *x.shape[1:])


def best_ms(fn, *args, repeats: int = 5) -> float:
    """Best of ``repeats`` wall milliseconds of ``fn(*args)`` after a warm-up call."""
    fn(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--names", nargs="+", default=["mnist-fc-hire", "mnist-fc-ibp"])
    p.add_argument("--data-root")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/spike_search")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    search_rows, forward_rows = [], []
    for name in args.names:
        bnet = zoo.load_bounded(name)
        x, y, eps = entry_data(name, args.data_root, args.n)
        c = candidates(x, eps)
        noise = bnet.draw_noise(c) if bnet.encoding.stochastic else None
        with torch.no_grad():
            equal = torch.equal(bnet(c, noise), bnet.distinct_forward(c, noise))
            plain = best_ms(bnet, c, noise)
            distinct = best_ms(bnet.distinct_forward, c, noise)
        forward_rows.append({"entry": name, "candidates": len(c), "forward_ms": round(plain, 1),
                             "distinct_forward_ms": round(distinct, 1),
                             "speed-up": round(plain / distinct, 2), "equal": equal})
        print(forward_rows[-1], flush=True)
        for label, kw in CONFIGS.items():
            cfg = attacks.EvalConfig(eps=[eps], attacks=[SpikeSearch(**kw)], bounds=[], seed=0,
                                     batch_size=250, progress=False)
            t = time.perf_counter()
            res = attacks.evaluate(bnet, (x, y), config=cfg)
            seconds = time.perf_counter() - t
            row = next(r for r in res if r["kind"] == "attack")
            search_rows.append({"entry": name, "eps": eps, "n": len(y), "settings": label,
                                "accuracy %": round(100 * row["accuracy"], 1),
                                "ties": row["ties"], "flips": row["flips"],
                                "s/sample": round(seconds / len(y), 3)})
            print(search_rows[-1], flush=True)
    out = Path(args.out)
    for stem, rows in (("spike_search", search_rows), ("candidate_forward", forward_rows)):
        write_csv(rows, out / f"{stem}.csv")
        write_markdown(rows, out / f"{stem}.md", title=f"SpikeSearch cost: {stem}")
    plot_bars(search_rows, "entry", "settings", "s/sample", out / "spike_search.png",
              title=f"SpikeSearch wall seconds per sample ({args.threads} thread(s), first "
                    f"{args.n} images of each card's subset)", ylabel="seconds per sample")
    print((out / "spike_search.md").read_text())
    print((out / "candidate_forward.md").read_text())


if __name__ == "__main__":
    main()

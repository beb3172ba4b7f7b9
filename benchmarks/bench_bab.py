"""Branch and bound (``snncertify.bab``) against the exact MILP, the bounds and the attacks.

Part ``small``: the digits net of ``bench_tightness.py`` (64-16-10, T=4, IBP-trained
as there) on ``--small-n`` test samples at three eps: per sample the exact MILP
(``exact.verify``) and branch and bound, both timed. Reports the share of
MILP-verified samples that bab verifies (target >= 98 %), the time per sample of
each and the speed-up (target >= 10x); any disagreement (bab verified where the
MILP found a counterexample, or the reverse) is an error.

Part ``zoo``: zoo entries at their certified eps (``mnist-fc-ibp`` 0.1,
``mnist-fc-rate-ibp`` 0.06, ``mnist-fc-clean`` 0.01) on the first ``--n`` MNIST
test images: IBP, CROWN-IBP and CROWN certified, the default attack suite's
robust accuracy (worst case, SpikeSearch included), and bab's verified /
falsified / unknown at ``--time-limit`` seconds per sample, with the attacks'
worst points as bab's first candidates. Asserts certified <= bab verified <=
robust <= clean on every sample set.

    python benchmarks/bench_bab.py --part small --out benchmarks/results/bab
    python benchmarks/bench_bab.py --part zoo --n 100 --time-limit 10 --data-root ../shared/data

Writes ``bab_<part>.csv`` / ``.md`` / ``.png`` to ``--out``; accuracies in percent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tightness import fc_snn  # noqa: E402

import snncertify  # noqa: E402
from snncertify import bab, exact  # noqa: E402
from snncertify.progress import progress_bar  # noqa: E402
from snncertify.report import percent, plot_bars, write_csv, write_markdown  # noqa: E402
from snncertify.training import (  # noqa: E402
    evaluate_accuracy,
    load_digits_split,
    load_mnist,
    train_certified,
)

ZOO = (("mnist-fc-ibp", 0.1), ("mnist-fc-rate-ibp", 0.06), ("mnist-fc-clean", 0.01))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("small", "zoo", "all"), default="small")
    p.add_argument("--out", default="runs/bab", help="output folder (CSV, Markdown, PNG)")
    p.add_argument("--small-n", type=int, default=30, help="digits test samples")
    p.add_argument("--small-eps", type=float, nargs="+", default=[0.01, 0.02, 0.04])
    p.add_argument("--milp-time-limit", type=float, default=60.0, help="seconds per MILP solve")
    p.add_argument("--time-limit", type=float, default=30.0, help="bab seconds per sample")
    p.add_argument("--n", type=int, default=1000, help="MNIST test images (zoo part)")
    p.add_argument("--entries", nargs="+", default=[n for n, _ in ZOO],
                   help="zoo entries (zoo part), at the eps of ZOO")
    p.add_argument("--data-root", default="../shared/data", help="torchvision MNIST root")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# ------------------------------------------------------------------- small
def digits_net(seed: int, eps_train: float):
    """``bench_tightness.py``'s digits net, trained the same way."""
    xtr, ytr, xte, yte = load_digits_split(seed=seed)
    torch.manual_seed(seed)
    bnet = snncertify.certify(fc_snn(64, 16, 10), 4, encoding="direct", readout="rate")
    train_certified(bnet, xtr, ytr, eps=eps_train, epochs=40, lr=2e-3, batch_size=64, seed=seed)
    return bnet.eval(), xte, yte


def small_part(args) -> list[dict]:
    bnet, xte, yte = digits_net(args.seed, 2 * max(args.small_eps))
    acc = evaluate_accuracy(bnet, xte, yte)
    print(f"digits 64-16-10, T=4: clean test accuracy {percent(acc)} %")
    x, y = xte[:args.small_n], yte[:args.small_n]
    rows = []
    for eps in args.small_eps:
        t0 = time.perf_counter()
        ref = exact.verify(bnet, x, y, eps, time_limit=args.milp_time_limit, progress=True)
        t_milp = (time.perf_counter() - t0) / len(y)
        t0 = time.perf_counter()
        res = bab.verify(bnet, x, y, eps, time_limit=args.time_limit, progress=True)
        t_bab = (time.perf_counter() - t0) / len(y)
        milp_ver = [e.verified for e in ref]
        milp_cex = [e.margin_upper <= 0 for e in ref]
        bad = [b for b, (r, e) in enumerate(zip(res, ref, strict=True))
               if (r.verified and e.margin_upper <= 0) or (r.falsified and e.verified)]
        if bad:
            raise AssertionError(f"eps {eps}: bab and the MILP disagree on samples {bad}")
        both = sum(r.verified and v for r, v in zip(res, milp_ver, strict=True))
        rows.append({
            "model": "digits-fc16", "eps": eps, "n": len(y),
            "crown": percent(float(bnet.certified(x, y, eps, "crown").float().mean())),
            "milp verified": percent(sum(milp_ver) / len(y)),
            "milp falsified": percent(sum(milp_cex) / len(y)),
            "bab verified": percent(sum(r.verified for r in res) / len(y)),
            "bab falsified": percent(sum(r.falsified for r in res) / len(y)),
            "bab unknown": percent(sum(r.status == "unknown" for r in res) / len(y)),
            "of milp-verified": percent(both / max(sum(milp_ver), 1)),
            "milp s/sample": round(t_milp, 3), "bab s/sample": round(t_bab, 3),
            "speed-up": round(t_milp / max(t_bab, 1e-9), 1),
        })
        print(rows[-1])
    return rows


# --------------------------------------------------------------------- zoo
def attack_points(bnet, x: torch.Tensor, y: torch.Tensor, eps: float):
    """The default suite on ``(x, y)``: (robust mask ``[N]``, each sample's attack output
    with the lowest real margin ``[N, ...]``)."""
    from attacks import evaluate
    from snncertify.correctness import margin

    res = evaluate(bnet, (x, y), [eps], keep_adversarial=True, progress=True,
                   run_sanity_checks=False, batch_size=250)
    robust = res.masks[eps]["robust"]
    best, best_m = x.clone(), torch.full((len(y),), float("inf"))
    with torch.no_grad():
        for adv in res.adversarial[eps].values():
            m = margin(bnet(adv), y)
            better = m < best_m
            best[better], best_m[better] = adv[better], m[better]
    return robust, best


def zoo_part(args) -> list[dict]:
    import zoo

    xte, yte = load_mnist(args.data_root, train=False)
    x, y = xte[:args.n], yte[:args.n]
    eps_of = dict(ZOO)
    rows = []
    for name in args.entries:
        eps = eps_of[name]
        bnet = zoo.load_bounded(name).eval()
        noise = bnet.prepare(x, None)
        with torch.no_grad():
            clean = snncertify.strict_correct(bnet(x, noise=noise), y)  # a tie is wrong
        cert = {m: bnet.certified(x, y, eps, m, noise=noise) for m in ("ibp", "crown-ibp", "crown")}
        robust, start = attack_points(bnet, x, y, eps)
        t0 = time.perf_counter()
        res = []
        for b in progress_bar(range(len(y)), desc=f"bab {name}", unit="sample"):
            sl = slice(b, b + 1)
            res += bab.verify(bnet, x[sl], y[sl], eps, noise=noise[:, sl] if noise is not None
                              else None, start=start[sl], time_limit=args.time_limit)
        t_bab = (time.perf_counter() - t0) / len(y)
        ver = torch.tensor([r.verified for r in res])
        fal = torch.tensor([r.falsified for r in res])
        assert bool((cert["crown"] <= ver).all()), "bab lost a CROWN certificate"
        assert bool((ver <= robust).all()), "bab verified a sample an attack broke"
        assert bool((robust <= clean).all()) and not bool((ver & fal).any())
        n = len(y)
        row = {"model": name, "eps": eps, "n": n, "limit s": args.time_limit,
               "clean": percent(float(clean.float().mean()))}
        row.update({f"certified ({m})": percent(float(c.float().mean())) for m, c in cert.items()})
        row.update({
            "robust (attacks)": percent(float(robust.float().mean())),
            f"verified (bab, {args.time_limit:g}s)": percent(float(ver.float().mean())),
            "falsified (bab)": percent(float(fal.float().mean())),
            "unknown (bab)": percent(1 - float((ver | fal).float().mean())),
            "decided among clean-correct": percent(
                float((ver | fal)[clean].float().mean()) if bool(clean.any()) else 0.0),
            "bab s/sample": round(t_bab, 2),
        })
        rows.append(row)
        print(row)
    return rows


# ------------------------------------------------------------------- output
def write(rows: list[dict], out: Path, part: str, bars: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0].keys())
    write_csv(rows, out / f"bab_{part}.csv", cols)
    write_markdown(rows, out / f"bab_{part}.md", cols, title=f"Branch and bound ({part})")
    long = [{"case": f"{r['model']} eps {r['eps']:g}", "column": c, "percent": float(r[c])}
            for r in rows for c in bars if c in r]
    plot_bars(long, "case", "column", "percent", out / f"bab_{part}.png",
              title=f"Branch and bound ({part}): share of samples, percent", ylabel="percent",
              ymax=105)
    print((out / f"bab_{part}.md").read_text())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.part in ("small", "all"):
        rows = small_part(args)
        write(rows, out, "small", ["crown", "milp verified", "bab verified", "milp falsified",
                                   "bab falsified", "bab unknown"])
    if args.part in ("zoo", "all"):
        try:
            rows = zoo_part(args)
        except FileNotFoundError as err:
            sys.exit(str(err))
        bars = ["certified (ibp)", "certified (crown-ibp)", "certified (crown)",
                f"verified (bab, {args.time_limit:g}s)", "robust (attacks)", "falsified (bab)",
                "unknown (bab)"]
        write(rows, out, "zoo", bars)


if __name__ == "__main__":
    main()

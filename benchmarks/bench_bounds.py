"""Forward vs S-IBP time on the paper's MNIST networks (CPU by default).

    python benchmarks/bench_bounds.py [--batch 256] [--steps 10] [--device cpu] [--repeats 5]

Networks (Liang et al., NeurIPS 2022; zero reset, beta = theta = 0.25):
FC 784-512-256-10 and CONV (conv 64 3x3 s2, conv 128 3x3 s2, fc 256, 10),
random weights (time does not depend on the values). Prints the median time of
the wrapper's forward, of IBP bounds and their ratio (target: IBP <= 3x
forward), for direct and rate input, plus a plain snnTorch loop for reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import snntorch as snn
import torch
from torch import nn

from snncertify import certify

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import run_snntorch, snntorch_frames  # noqa: E402  (the test suite's ground truth)


def _lif(output: bool = False) -> snn.Leaky:
    return snn.Leaky(beta=0.25, threshold=0.25, init_hidden=True, reset_mechanism="zero", output=output)


def mnist_fc() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), _lif(), nn.Linear(512, 256), _lif(),
                         nn.Linear(256, 10), _lif(output=True))


def mnist_conv() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, stride=2, padding=1), _lif(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), _lif(),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 256), _lif(), nn.Linear(256, 10), _lif(output=True),
    )


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eps", type=float, default=0.02)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--methods", nargs="+", default=["ibp"], help="bound methods to time")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    print(f"device={dev} threads={torch.get_num_threads()} batch={args.batch} T={args.steps} eps={args.eps}")
    print(f"{'net':5} {'input':6} {'snntorch s':>10} {'forward s':>10} "
          + " ".join(f"{m + ' s':>12} {m + '/fwd':>10}" for m in args.methods))
    rows = []
    for name, build in (("FC", mnist_fc), ("CONV", mnist_conv)):
        net = build().to(dev).eval()
        x = torch.rand(args.batch, 1, 28, 28, device=dev)
        for encoding in ("direct", "rate"):
            bnet = certify(net, args.steps, encoding=encoding)
            noise = bnet.draw_noise(x) if encoding == "rate" else None
            with torch.no_grad():
                frames = snntorch_frames(encoding, x, args.steps, noise)
                t_ref = timed(partial(run_snntorch, net, frames), args.repeats)
                t_fwd = timed(partial(bnet, x, noise=noise), args.repeats)
                row = {"net": name, "input": encoding, "snntorch_s": t_ref, "forward_s": t_fwd}
                for m in args.methods:
                    row[m] = timed(partial(bnet.bounds, x, args.eps, method=m, noise=noise), args.repeats)
            rows.append(row)
            print(f"{name:5} {encoding:6} {t_ref:10.4f} {t_fwd:10.4f} "
                  + " ".join(f"{row[m]:12.4f} {row[m] / t_fwd:10.2f}" for m in args.methods))
    return rows


if __name__ == "__main__":
    main()

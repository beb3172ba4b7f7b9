"""Speed of the linear bound methods relative to S-IBP, on CPU.

Networks (zero reset, beta = threshold = 0.25, T = 10):

* FC:   784-512-256-10 (the paper's MNIST FC);
* CONV: conv 64 stride 2, conv 128 stride 2, fc 256, fc 10.

Weights are random (seeded) unless ``--fc-zoo NAME`` / ``--conv-zoo NAME`` load a
zoo entry for the FC / CONV (e.g. ``mnist-fc-ibp``: a certified-trained net, whose
neurons are mostly stable, as in certified training; ``mnist-conv-clean``); inputs are uniform noise unless
``--data-root`` gives MNIST (the first test images). Prints, per network: IBP
and crown-ibp time for margin bounds of a batch (no grad, and forward +
backward as in certified training), their ratio (medians of ``--repeats``
runs), and the time per sample of crown and alpha-crown on a smaller batch.

    python benchmarks/bench_crown_speed.py [--batch 256] [--small 2] [--eps 0.02]
        [--fc-zoo mnist-fc-ibp --conv-zoo mnist-conv-clean --data-root ../shared/data]
        [--repeats 5] [--alpha-iters 0 (alpha-crown skipped)]
"""

from __future__ import annotations

import argparse
import statistics
import time

import snntorch as snn
import torch
from torch import nn

from snncertify import alpha as alpha_mod
from snncertify import certify


def leaky(output: bool = False) -> snn.Leaky:
    return snn.Leaky(beta=0.25, threshold=0.25, init_hidden=True, reset_mechanism="zero",
                     output=output)


def fc_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), leaky(), nn.Linear(512, 256), leaky(),
        nn.Linear(256, 10), leaky(output=True),
    )


def conv_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, 4, stride=2, padding=1), leaky(),
        nn.Conv2d(64, 128, 4, stride=2, padding=1), leaky(),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 256), leaky(),
        nn.Linear(256, 10), leaky(output=True),
    )


def timed(fn, repeats: int = 1) -> float:
    """Median seconds of ``repeats`` calls after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inputs(args) -> torch.Tensor:
    if args.data_root is None:
        return torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    from torchvision.datasets import MNIST

    data = MNIST(args.data_root, train=False, download=False).data[: args.batch]
    return data.float().div(255).unsqueeze(1)


def bench(name: str, net: nn.Sequential, args) -> None:
    torch.manual_seed(0)
    bnet = certify(net, args.steps, encoding=args.encoding)
    x = inputs(args)
    y = bnet(x).argmax(1)

    def margins(method: str, grad: bool):
        def run():
            if grad:
                m = bnet.margin_bounds(x, y, args.eps, method=method)
                torch.nn.functional.softplus(-m).sum().backward()
                net.zero_grad(set_to_none=True)
            else:
                with torch.no_grad():
                    bnet.margin_bounds(x, y, args.eps, method=method)
        return run

    rows = []
    for grad in (False, True):
        t_ibp = timed(margins("ibp", grad), args.repeats)
        t_cibp = timed(margins("crown-ibp", grad), args.repeats)
        tag = "fwd+bwd" if grad else "no-grad"
        rows.append(f"  batch {args.batch} {tag}: ibp {t_ibp:.3f}s  crown-ibp {t_cibp:.3f}s  "
                    f"ratio {t_cibp / t_ibp:.1f}x")
    print(f"{name} (T={args.steps}, {args.encoding}, eps={args.eps})")
    print("\n".join(rows), flush=True)

    if args.small <= 0:  # full crown / alpha-crown skipped (impractical on conv nets)
        return
    xs, ys = x[: args.small], y[: args.small]
    with torch.no_grad():
        ibp = bnet.margin_bounds(xs, ys, args.eps, method="ibp")
        start = time.perf_counter()
        crown = bnet.margin_bounds(xs, ys, args.eps, method="crown")
        t_crown = (time.perf_counter() - start) / args.small
        alpha, t_alpha = None, 0.0
        if args.alpha_iters > 0:
            alpha_mod.ITERATIONS = args.alpha_iters
            start = time.perf_counter()
            alpha = bnet.margin_bounds(xs, ys, args.eps, method="alpha-crown")
            t_alpha = (time.perf_counter() - start) / args.small
        cibp = bnet.margin_bounds(xs, ys, args.eps, method="crown-ibp")
    off = torch.ones_like(ibp, dtype=torch.bool)
    off[torch.arange(len(ys)), ys] = False

    def frac(m):
        return float((m[off] > ibp[off]).float().mean())

    alpha_time = "skipped" if alpha is None else f"({args.alpha_iters} it) {t_alpha:.2f}s"
    print(f"  per sample (batch {args.small}): crown {t_crown:.2f}s  alpha-crown {alpha_time}")
    alpha_frac = "skipped" if alpha is None else f"{frac(alpha):.2f}"
    print(f"  margins strictly tighter than IBP: crown-ibp {frac(cibp):.2f}  crown {frac(crown):.2f}"
          f"  alpha-crown {alpha_frac}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--small", type=int, default=2, help="batch for crown / alpha-crown (0: skip them)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.02)
    parser.add_argument("--encoding", default="direct", choices=["direct", "rate"])
    parser.add_argument("--alpha-iters", type=int, default=alpha_mod.ITERATIONS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--nets", default="fc,conv")
    parser.add_argument("--fc-zoo", default=None, help="zoo entry for the FC's weights")
    parser.add_argument("--conv-zoo", default=None, help="zoo entry for the CONV's weights")
    parser.add_argument("--data-root", default=None, help="MNIST (torchvision layout) for inputs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    def from_zoo(name: str):
        import zoo

        return lambda: zoo.load(name)

    nets = {"FC 784-512-256-10" + (f" ({args.fc_zoo})" if args.fc_zoo else ""):
            from_zoo(args.fc_zoo) if args.fc_zoo else fc_net,
            "CONV c64s2-c128s2-fc256-10" + (f" ({args.conv_zoo})" if args.conv_zoo else ""):
            from_zoo(args.conv_zoo) if args.conv_zoo else conv_net}
    for name, make in nets.items():
        if name.split()[0].lower() in args.nets.split(","):
            bench(name, make(), args)


if __name__ == "__main__":
    main()

"""PGD-20 throughput through the attack suite vs a minimal hand-written PGD loop.

Same snnTorch network (FC 784-512-256-10, snn.Leaky beta 0.9, random weights),
same T, batch, eps, step size and surrogate (the net's own atan). Baselines:

* ``hand``: the textbook loop - reset every Leaky (``m.mem = torch.zeros(1)``),
  call ``net(x)`` T times, CE on the mean output spikes, sign step, project;
* ``hand-hoisted``: the same loop but the first Linear (whose input does not
  change over time for a direct-encoded image) computed once per forward - the
  tightest hand-written snnTorch baseline;
* ``hand loop over BoundedSNN``: the hand-written PGD loop calling the
  ``certify()`` wrapper directly: the difference to the suite is the suite's
  own cost (torchattacks, input validation, gradient check, ball re-check).

Runs are interleaved and repeated; the median is reported.

    python benchmarks/bench_attacks.py [--batch 128] [--steps 20] [--T 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import snntorch as snn
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import attacks
from snncertify import certify


def build(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(784, 512), snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(512, 256), snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(256, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )


def reset(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, snn.Leaky):
            m.mem = torch.zeros(1)


def hand_scores(net: nn.Sequential, x: Tensor, T: int) -> Tensor:
    reset(net)
    out = 0
    for _ in range(T):
        spk, _ = net(x)
        out = out + spk
    return out / T


def hoisted_scores(net: nn.Sequential, x: Tensor, T: int) -> Tensor:
    reset(net)
    cur = net[0](x)
    out = 0
    for _ in range(T):
        spk, _ = net[1:](cur)
        out = out + spk
    return out / T


def bnet_scores(bnet, x: Tensor, T: int) -> Tensor:
    return bnet(x)


def hand_pgd(scores, net, x, y, eps, alpha, steps, T):
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(scores(net, x_adv, T), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * g.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--T", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    net = build().to(dev)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 784, generator=gen).to(dev)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(dev)
    bnet = certify(net, args.T)
    clf = attacks.AttackableSNN(bnet)
    alpha = 2.5 * args.eps / args.steps
    suite_pgd = attacks.PGD(steps=args.steps, step_size=alpha)

    with torch.no_grad():  # same network, same scores
        diff = (clf(x) - hand_scores(net, x, args.T)).abs().max().item()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    runs = {
        "suite (attacks.PGD)": lambda: suite_pgd(clf, x, y, args.eps),
        "hand-written loop": lambda: hand_pgd(
            hand_scores, net, x, y, args.eps, alpha, args.steps, args.T),
        "hand-written, hoisted": lambda: hand_pgd(
            hoisted_scores, net, x, y, args.eps, alpha, args.steps, args.T),
        "hand loop over BoundedSNN": lambda: hand_pgd(
            bnet_scores, bnet, x, y, args.eps, alpha, args.steps, args.T),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)

    print(f"PGD-{args.steps}, FC 784-512-256-10, T={args.T}, batch={args.batch}, "
          f"device={dev}, threads={torch.get_num_threads()}, repeats={args.repeats} (median)")
    print(f"max |scores suite - scores hand| = {diff:.2e}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, t in med.items():
        print(f"  {k:26s} {args.batch / t:9.1f} images/s   ({t * 1000:8.1f} ms per batch)")
    base = med["hand-written loop"]
    hoist = med["hand-written, hoisted"]
    own = med["hand loop over BoundedSNN"]
    suite = med["suite (attacks.PGD)"]
    print(f"overhead vs hand-written snnTorch loop:   {100 * (suite / base - 1):+.1f}%  (target <= 10%)")
    print(f"overhead vs hoisted snnTorch loop:        {100 * (suite / hoist - 1):+.1f}%")
    print(f"suite's own overhead (vs loop over bnet): {100 * (suite / own - 1):+.1f}%")


if __name__ == "__main__":
    main()

"""Shared fixtures: a small snnTorch net trained (cleanly) on sklearn digits.

Training is deterministic (seeded) and takes a few seconds. These tiny nets
run fastest on ONE intra-op thread (on a shared 2-core machine two OpenMP
threads were 10-50x slower), so every test here runs single-threaded and the
previous setting is restored afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import snntorch as snn
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

from snncertify import BoundedSNN, certify

T = 8


@dataclass
class Trained:
    """A trained wrapper and held-out data (``x`` ``[N, 64]`` in [0, 1], ``y`` ``[N]``)."""

    bnet: BoundedSNN
    x: Tensor
    y: Tensor


def build_net(hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, hidden),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(hidden, 10),
        snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )


def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train(encoding: str, epochs: int = 5, seed: int = 0, scale: float = 8.0) -> Trained:
    """Clean training: CE on ``scale * spike rates`` with Adam; returns held-out data."""
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = digits()
    net = build_net()
    bnet = certify(net, T, encoding=encoding, readout="rate", seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), 100):
            idx = perm[i:i + 100]
            xb = xtr[idx]
            noise = bnet.draw_noise(xb, gen) if encoding == "rate" else None
            loss = nn.functional.cross_entropy(scale * bnet(xb, noise), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    bnet.eval()
    return Trained(bnet, xte, yte)


@contextlib.contextmanager
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def direct_model() -> Trained:
    with one_thread():
        return train("direct")


@pytest.fixture(scope="session")
def rate_model() -> Trained:
    with one_thread():
        return train("rate")

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
from torch import Tensor, nn

from snncertify import BoundedSNN, certify
from snncertify.training import load_digits_split, train_clean

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


def train(encoding: str, epochs: int = 5, seed: int = 0, scale: float = 8.0) -> Trained:
    """Clean training (``snncertify.training``): CE on ``scale * spike rates``; held-out data."""
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = load_digits_split(seed=seed)
    bnet = certify(build_net(), T, encoding=encoding, readout="rate", seed=seed)
    train_clean(bnet, xtr, ytr, logit_scale=scale, epochs=epochs, lr=1e-2, batch_size=100,
                seed=seed, progress=False)
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

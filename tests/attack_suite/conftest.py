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
import torch
from torch import Tensor

from snncertify import BoundedSNN, certify
from snncertify.training import load_digits_split, train_clean

T = 8


@dataclass
class Trained:
    """A trained wrapper and held-out data (``x`` ``[N, 64]`` in [0, 1], ``y`` ``[N]``)."""

    bnet: BoundedSNN
    x: Tensor
    y: Tensor


@pytest.fixture(scope="session")
def digits_net(fc_net):
    """Factory ``digits_net(hidden=64, beta=0.9, seed=None) -> nn.Sequential``: the digits net
    64-hidden-10 (input ``[B, 64]``, 10 classes), from the shared ``fc_net`` builder;
    ``seed=None`` draws from the global RNG as it stands."""

    def build(hidden: int = 64, beta: float = 0.9, seed: int | None = None):
        return fc_net(64, hidden, 10, beta=beta, threshold=1.0, flatten=False, seed=seed)

    return build


@pytest.fixture(scope="session")
def train_digits(digits_net):
    """Factory ``train_digits(encoding, epochs=5, seed=0, scale=8.0, hidden=64, beta=0.9,
    num_steps=T) -> Trained``: clean training (``snncertify.training``) of ``digits_net``,
    CE on ``scale * spike rates``, with the held-out data."""

    def train(encoding: str, epochs: int = 5, seed: int = 0, scale: float = 8.0,
              hidden: int = 64, beta: float = 0.9, num_steps: int = T) -> Trained:
        torch.manual_seed(seed)
        xtr, ytr, xte, yte = load_digits_split(seed=seed)
        bnet = certify(digits_net(hidden, beta), num_steps, encoding=encoding, readout="rate",
                       seed=seed)
        train_clean(bnet, xtr, ytr, logit_scale=scale, epochs=epochs, lr=1e-2, batch_size=100,
                    seed=seed, progress=False)
        return Trained(bnet, xte, yte)

    return train


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
def direct_model(train_digits) -> Trained:
    with one_thread():
        return train_digits("direct")


@pytest.fixture(scope="session")
def rate_model(train_digits) -> Trained:
    with one_thread():
        return train_digits("rate")

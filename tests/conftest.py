"""Shared test set-up: the networks and inputs tests take as fixtures.

``tests/`` is on sys.path, so the property-test machinery imports as modules: ``netgen``
(hypothesis strategies for random networks) and ``reference`` (the independent snnTorch
ground truth). Plain tests take what they need from them through the fixtures below.

Every builder is a session-scoped *factory*: calling it returns a fresh network (or input)
built exactly as the test's old module-level helper did (same seeds, same order of RNG draws),
so expected values stay bit-for-bit the same. ``seed=None`` means "draw from the global RNG
as it stands", for a test that seeds once and then builds.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import snntorch as snn
import torch
from torch import nn

from snncertify import certify

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)  # tiny test nets: a second OpenMP thread only adds sync cost

import netgen  # noqa: E402  (needs tests/ on sys.path)
import reference  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _per_layer(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ networks
@pytest.fixture(scope="session")
def fc_net():
    """Factory ``fc_net(*widths, beta=(0.8, 0.7), threshold=(0.5, 1.0), reset="subtract",
    out_reset=None, output=True, flatten=True, seed=0) -> nn.Sequential``.

    ``[Flatten], Linear(w0, w1), Leaky, ..., Linear(w_{n-1}, w_n), Leaky(output=output)``;
    widths default to ``(16, 12, 5)``: input ``[B, 16]`` (or ``[B, 4, 4]`` with Flatten), 5
    classes. ``beta``/``threshold`` are one value or one per Leaky; the hidden Leaky use
    ``reset``, the output Leaky ``out_reset or reset``. ``torch.manual_seed(seed)`` first
    (``None``: the global RNG as it stands).
    """

    def build(*widths: int, beta=(0.8, 0.7), threshold=(0.5, 1.0), reset: str = "subtract",
              out_reset: str | None = None, output: bool = True, flatten: bool = True,
              seed: int | None = 0) -> nn.Sequential:
        widths = widths or (16, 12, 5)
        n = len(widths) - 1
        betas, thresholds = _per_layer(beta, n), _per_layer(threshold, n)
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Flatten()] if flatten else []
        for i in range(n):
            last = i == n - 1
            layers += [nn.Linear(widths[i], widths[i + 1]),
                       snn.Leaky(beta=betas[i], threshold=thresholds[i], init_hidden=True,
                                 reset_mechanism=(out_reset or reset) if last else reset,
                                 output=output and last)]
        return nn.Sequential(*layers)

    return build


def _random_leaky(reset: str, n: int | tuple[int, ...], gen: torch.Generator,
                  output: bool = False) -> snn.Leaky:
    beta = 0.5 + 0.5 * torch.rand(n, generator=gen)  # per-neuron
    thr = 0.3 + 0.7 * torch.rand((), generator=gen)  # scalar
    return snn.Leaky(beta=beta, threshold=thr, init_hidden=True, reset_mechanism=reset,
                     output=output)


@pytest.fixture(scope="session")
def random_fc_net():
    """Factory ``random_fc_net(n_in, hidden, k, resets, seed, scale=2.0) -> nn.Sequential``
    (eval mode): Linear-Leaky stack ``n_in -> *hidden -> k`` with weights scaled by ``scale``,
    biases +0.2, per-neuron betas in [0.5, 1) and a scalar threshold in [0.3, 1) per Leaky;
    ``resets`` has one entry per Leaky (hidden ones then output). Input ``[B, n_in]``."""

    def build(n_in: int, hidden: list[int], k: int, resets: list[str], seed: int,
              scale: float = 2.0) -> nn.Sequential:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = n_in
        for i, h in enumerate([*hidden, k]):
            lin = nn.Linear(width, h)
            with torch.no_grad():
                lin.weight.mul_(scale)
                lin.bias.add_(0.2)
            layers += [lin, _random_leaky(resets[i], h, gen, output=i == len(hidden))]
            width = h
        return nn.Sequential(*layers).eval()

    return build


@pytest.fixture(scope="session")
def random_conv_net():
    """Factory ``random_conv_net(pool_first, seed) -> nn.Sequential`` (eval mode), input
    ``[B, 1, 6, 6]``, 3 classes: Conv2d(1, 2, 3, padding=1) with BatchNorm (random running
    statistics) and max pooling either over real values before the Leaky (``pool_first``)
    or over spikes after it (then also AvgPool2d(1)); Flatten, Dropout, Linear(18, 3), Leaky."""

    def build(pool_first: bool, seed: int) -> nn.Sequential:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        if pool_first:  # max pooling over real values (selection binaries)
            layers = [nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(2),
                      _random_leaky("subtract", (2, 3, 3), gen)]
            layers[-1].beta = nn.Parameter(torch.full((2, 1, 1), 0.7))  # per channel
            width = 18
        else:  # max pooling over spikes (OR) and average pooling
            layers = [nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2),
                      _random_leaky("zero", (2, 6, 6), gen), nn.MaxPool2d(2), nn.AvgPool2d(1)]
            width = 18
        layers += [nn.Flatten(), nn.Dropout(0.2), nn.Linear(width, 3),
                   _random_leaky("subtract", 3, gen, True)]
        net = nn.Sequential(*layers)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.mul_(2.0)
        return net.eval()

    return build


@pytest.fixture(scope="session")
def synaptic_net():
    """Factory ``synaptic_net(reset, per_neuron, seed=0) -> nn.Sequential``, input ``[B, 6]``,
    4 classes: Linear(6, 10), Synaptic (alpha, beta in [0, 1.2), threshold in [0.2, 1): one
    value or, with ``per_neuron``, one per neuron), Linear(10, 8), Leaky, Linear(8, 4),
    Synaptic(output=True); every neuron resets by ``reset``."""

    def build(reset: str, per_neuron: bool, seed: int = 0) -> nn.Sequential:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)

        def param(n: int, lo: float, hi: float):
            if per_neuron:
                return lo + (hi - lo) * torch.rand(n, generator=gen)
            return lo + (hi - lo) * float(torch.rand((), generator=gen))

        return nn.Sequential(
            nn.Linear(6, 10),
            snn.Synaptic(alpha=param(10, 0.0, 1.2), beta=param(10, 0.0, 1.2),
                         threshold=param(10, 0.2, 1.0), init_hidden=True, reset_mechanism=reset),
            nn.Linear(10, 8),
            snn.Leaky(beta=0.7, threshold=0.4, init_hidden=True, reset_mechanism=reset),
            nn.Linear(8, 4),
            snn.Synaptic(alpha=0.5, beta=0.8, threshold=0.3, init_hidden=True, output=True,
                         reset_mechanism=reset),
        )

    return build


@pytest.fixture(scope="session")
def bn_net():
    """Factory ``bn_net(dropout=0.3, conv=False) -> nn.Sequential`` with BatchNorm and
    Dropout, 5 classes, seeded 0. FC: input ``[B, 16]``, Linear(16, 12), BatchNorm1d, Leaky,
    Dropout, Linear(12, 5), BatchNorm1d, Leaky. Conv: input ``[B, 1, 6, 6]``, Conv2d(1, 4, 3),
    BatchNorm2d, Leaky, Dropout2d, Flatten, Linear(64, 5), BatchNorm1d, Leaky."""

    def build(dropout: float = 0.3, conv: bool = False) -> nn.Sequential:
        torch.manual_seed(0)
        if conv:
            return nn.Sequential(
                nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), snn.Leaky(beta=0.8, init_hidden=True),
                nn.Dropout2d(dropout), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5),
                snn.Leaky(beta=0.7, threshold=0.5, init_hidden=True, output=True),
            )
        return nn.Sequential(
            nn.Linear(16, 12), nn.BatchNorm1d(12),
            snn.Leaky(beta=0.8, threshold=0.5, init_hidden=True),
            nn.Dropout(dropout), nn.Linear(12, 5), nn.BatchNorm1d(5),
            snn.Leaky(beta=0.7, threshold=0.5, init_hidden=True, output=True),
        )

    return build


@pytest.fixture(scope="session")
def quickstart():
    """The ``examples/quickstart.py`` module: ``quickstart.build_net()`` is the digits net
    (input ``[B, 64]``, 64-128-10, unseeded), ``quickstart.main`` the job."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module("quickstart")
    finally:
        sys.path.remove(str(EXAMPLES))


# -------------------------------------------------------------------- inputs
@pytest.fixture(scope="session")
def unit_inputs():
    """Factory ``unit_inputs(*shape, seed=None, dtype=None) -> Tensor``: uniform [0, 1) of
    ``shape`` (``[B, ...]`` samples), from a fresh generator seeded ``seed`` or, with a
    ``torch.Generator``, that one; ``None``: the global RNG (continuing after a seeded net)."""

    def draw(*shape: int, seed: int | torch.Generator | None = None, dtype=None):
        return torch.rand(shape, generator=_generator(seed), dtype=dtype)

    return draw


@pytest.fixture(scope="session")
def spike_inputs():
    """Factory ``spike_inputs(*shape, p=0.4, seed=None) -> Tensor``: binary float frames
    (``[T, B, ...]`` for the event encoding), each position 1 with probability ``p``;
    ``seed`` as for ``unit_inputs``."""

    def draw(*shape: int, p: float = 0.4, seed: int | torch.Generator | None = None):
        return (torch.rand(shape, generator=_generator(seed)) < p).float()

    return draw


# ------------------------------------------------------- ground truth helpers
@pytest.fixture(scope="session")
def snntorch_ref():
    """The independent snnTorch ground truth (``tests/reference.py``, ``netgen.reference``):

    - ``run(net, frames [T, B, ...]) -> (out [T, B, K], {name: (mem, spk)})``: snnTorch's loop;
    - ``frames(encoding, x, T, noise) -> [T, B, ...]``: what snnTorch is fed;
    - ``scores(readout, out, layers) -> [B, K]``;
    - ``outputs(bnet, net, x, noise) -> (scores [B, K], layers)``: snnTorch on a wrapper's
      encoding, steps and readout.
    """
    return SimpleNamespace(run=reference.run_snntorch, frames=reference.snntorch_frames,
                           scores=reference.snntorch_scores, outputs=netgen.reference)


@pytest.fixture(scope="session")
def float64():
    """``float64(bnet) -> BoundedSNN``: a float64 deep copy of the wrapper (and its network)."""
    return reference.float64


@pytest.fixture(scope="session")
def perturbations():
    """``perturbations(bnet, x, eps, n, seed, noise=None, mask=None) -> [n, B, ...]``: inputs
    in the threat set (random points, box corners, flips), ``netgen.perturbations``."""
    return netgen.perturbations


@pytest.fixture
def make_case(random_fc_net, unit_inputs, spike_inputs):
    """Factory ``make_case(encoding, resets, hidden, seed, B=2, n_in=16, T=3, readout="rate",
    budget=True) -> (net, bnet, x, eps)``: ``random_fc_net(n_in, hidden, 4, resets, seed)``
    wrapped for ``encoding``, inputs ``x`` (``[B, n_in]``; event: ``[T, B, n_in]``) drawn
    from a generator seeded ``seed + 1``, and a threat ``eps``: 0.08, or for events a flip
    budget of 1 (``budget``) or a random flip mask ``[T, B, n_in]``."""

    def build(encoding: str, resets: list[str], hidden: list[int], seed: int, B: int = 2,
              n_in: int = 16, T: int = 3, readout: str = "rate", budget: bool = True):
        net = random_fc_net(n_in, hidden, 4, resets, seed)
        bnet = certify(net, T, encoding=encoding, readout=readout, seed=seed)
        gen = torch.Generator().manual_seed(seed + 1)
        if encoding == "event":
            x = spike_inputs(T, B, n_in, p=0.4, seed=gen)
            # a flip budget anywhere, or a flip mask
            eps = 1 if budget else unit_inputs(T, B, n_in, seed=gen) < 0.2
        else:
            x = unit_inputs(B, n_in, seed=gen)
            eps = 0.08
        return net, bnet, x, eps

    return build

"""Named architectures: plain, unmodified snnTorch ``nn.Sequential`` networks.

======================  =========================================================  ===  ========
name                    layers (every Leaky ``init_hidden=True``)                   T    input
======================  =========================================================  ===  ========
``digits-fc``           64-128-10, beta 0.9, theta 1, subtract reset                 8    [64]
``mnist-fc``            the paper's FC 784-512-256-10, beta = theta = 0.25, zero     10   [1,28,28]
                        reset (Liang et al., 2022)
``mnist-conv``          the paper's CONV: conv 64 (4x4, s2), conv 128 (4x4, s2),     10   [1,28,28]
                        fc 256, 10; neurons as ``mnist-fc``
``nmnist-fc``           event frames 2x34x34-256-10, beta 0.9, theta 1, subtract    10   [2,34,34]
``cifar-conv``          conv 32 - avgpool - conv 64 - avgpool - fc 256 - 10,         8    [3,32,32]
                        beta 0.9, theta 1, subtract reset
``tutorial-fc``         snnTorch tutorial 5: 784-1000-10, beta 0.95                  25   [1,28,28]
``tutorial-csnn``       snnTorch tutorial 6: conv 12 (5x5) - maxpool - conv 64       25   [1,28,28]
                        (5x5) - maxpool - fc 10, beta 0.5, fast-sigmoid slope 25
======================  =========================================================  ===  ========

``build_arch(name, beta=..., threshold=..., reset=...)`` overrides the neuron
parameters of every Leaky. The input encoding is chosen at ``certify()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import snntorch as snn
from snntorch import surrogate
from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """A named network builder and its default neuron parameters and time steps."""

    name: str
    builder: Callable[[Callable[..., snn.Leaky]], nn.Sequential]
    num_steps: int
    input_shape: tuple[int, ...]
    neuron: dict = field(default_factory=dict)  # beta, threshold, reset
    description: str = ""


def _fc(sizes: list[int], flatten: bool) -> Callable:
    def build(leaky: Callable[..., snn.Leaky]) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Flatten()] if flatten else []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers += [nn.Linear(a, b), leaky(output=i == len(sizes) - 2)]
        return nn.Sequential(*layers)

    return build


def _paper_conv(leaky):
    return nn.Sequential(
        nn.Conv2d(1, 64, 4, stride=2, padding=1), leaky(),
        nn.Conv2d(64, 128, 4, stride=2, padding=1), leaky(),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 256), leaky(),
        nn.Linear(256, 10), leaky(output=True),
    )


def _cifar_conv(leaky):
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), leaky(), nn.AvgPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), leaky(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 256), leaky(),
        nn.Linear(256, 10), leaky(output=True),
    )


def _tutorial_csnn(leaky):
    return nn.Sequential(
        nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), leaky(),
        nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), leaky(),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10), leaky(output=True),
    )


_PAPER = {"beta": 0.25, "threshold": 0.25, "reset": "zero"}
_PLAIN = {"beta": 0.9, "threshold": 1.0, "reset": "subtract"}

ARCHS: dict[str, ArchSpec] = {
    a.name: a
    for a in (
        ArchSpec("digits-fc", _fc([64, 128, 10], False), 8, (64,), _PLAIN, "digits FC 64-128-10"),
        ArchSpec("mnist-fc", _fc([784, 512, 256, 10], True), 10, (1, 28, 28), _PAPER,
                 "the paper's MNIST FC 784-512-256-10"),
        ArchSpec("mnist-conv", _paper_conv, 10, (1, 28, 28), _PAPER,
                 "the paper's MNIST CONV (conv 64 s2, conv 128 s2, fc 256, 10)"),
        ArchSpec("nmnist-fc", _fc([2 * 34 * 34, 256, 10], True), 10, (2, 34, 34), _PLAIN,
                 "N-MNIST FC on event frames 2x34x34-256-10"),
        ArchSpec("cifar-conv", _cifar_conv, 8, (3, 32, 32), _PLAIN, "small CIFAR-10 CSNN"),
        ArchSpec("tutorial-fc", _fc([784, 1000, 10], True), 25, (1, 28, 28),
                 {"beta": 0.95, "threshold": 1.0, "reset": "subtract"}, "snnTorch tutorial 5 FC"),
        ArchSpec("tutorial-csnn", _tutorial_csnn, 25, (1, 28, 28),
                 {"beta": 0.5, "threshold": 1.0, "reset": "subtract", "slope": 25},
                 "snnTorch tutorial 6 CSNN"),
    )
}


def build_arch(name: str, **neuron) -> nn.Sequential:
    """The network ``name`` (fresh weights from torch's global RNG) with neuron overrides.

    ``neuron``: any of ``beta``, ``threshold``, ``reset`` (``"subtract"``,
    ``"zero"``, ``"none"``), ``slope`` (fast-sigmoid surrogate; default the
    Leaky's own atan).
    """
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHS)}")
    spec = ARCHS[name]
    bad = set(neuron) - {"beta", "threshold", "reset", "slope"}
    if bad:
        raise ValueError(f"unknown neuron parameter(s) {sorted(bad)} for {name!r}")
    p = {**spec.neuron, **{k: v for k, v in neuron.items() if v is not None}}
    grad = surrogate.fast_sigmoid(slope=p["slope"]) if p.get("slope") else None

    def leaky(output: bool = False) -> snn.Leaky:
        kw = {"spike_grad": grad} if grad is not None else {}
        return snn.Leaky(beta=p["beta"], threshold=p["threshold"], reset_mechanism=p["reset"],
                         init_hidden=True, output=output, **kw)

    return spec.builder(leaky)

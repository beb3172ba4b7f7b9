"""Random snnTorch networks and perturbed inputs for the soundness suites."""

from __future__ import annotations

from dataclasses import dataclass

import snntorch as snn
import torch
from hypothesis import strategies as st
from reference import run_snntorch, snntorch_frames, snntorch_scores
from torch import nn

RESETS = ("subtract", "zero", "none")
PARAM_KINDS = ("scalar", "neuron", "channel", "learnable")


@dataclass(frozen=True)
class NetSpec:
    arch: str  # "fc" or "conv"
    resets: tuple[str, ...]  # one per Leaky layer (1 to 3)
    beta_kind: str
    thr_kind: str
    encoding: str
    readout: str
    num_steps: int
    extras: tuple[str, ...]  # "bn", "avgpool", "maxpool", "dropout", "nested", "linear_head",
    # "synaptic" (every other neuron layer, the first included, an snn.Synaptic)
    seed: int
    weight_scale: float


def _param(kind: str, shape: tuple[int, ...], lo: float, hi: float, gen) -> torch.Tensor:
    if kind == "scalar":
        return torch.tensor(lo + (hi - lo) * torch.rand((), generator=gen).item())
    if kind == "channel" and len(shape) == 3:
        shape = (shape[0], 1, 1)
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def leaky(kind_beta: str, kind_thr: str, shape, reset: str, gen, output: bool = False,
          synaptic: bool = False) -> snn.Leaky | snn.Synaptic:
    beta = _param(kind_beta if kind_beta != "learnable" else "neuron", shape, 0.0, 1.2, gen)
    thr = _param(kind_thr if kind_thr != "learnable" else "neuron", shape, 0.2, 1.2, gen)
    kw = {"init_hidden": True, "reset_mechanism": reset, "output": output,
          "learn_beta": kind_beta == "learnable", "learn_threshold": kind_thr == "learnable"}
    if synaptic:
        alpha = _param(kind_beta if kind_beta != "learnable" else "neuron", shape, 0.0, 1.2, gen)
        return snn.Synaptic(alpha=alpha, beta=beta, threshold=thr,
                            learn_alpha=kind_beta == "learnable", **kw)
    return snn.Leaky(beta=beta, threshold=thr, **kw)


def build(spec: NetSpec) -> tuple[nn.Sequential, tuple[int, ...]]:
    """The network of ``spec`` and its per-sample input shape."""
    gen = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    layers: list[nn.Module] = []
    n_layers = len(spec.resets)

    def syn(i: int) -> bool:
        return "synaptic" in spec.extras and i % 2 == 0

    if spec.arch == "fc":
        in_shape, width = (10,), 10
        layers.append(nn.Flatten())
        for i, reset in enumerate(spec.resets):
            last = i == n_layers - 1 and "linear_head" not in spec.extras
            out = 4 if last else 8
            layers.append(nn.Linear(width, out))
            if "bn" in spec.extras and not last:
                layers.append(nn.BatchNorm1d(out))
            if "dropout" in spec.extras:
                layers.append(nn.Dropout(0.3))
            layers.append(leaky(spec.beta_kind, spec.thr_kind, (out,), reset, gen, output=last,
                                synaptic=syn(i)))
            width = out
    else:
        in_shape, chans, side = (2, 6, 6), 2, 6
        for i, reset in enumerate(spec.resets):
            last = i == n_layers - 1
            if last and "linear_head" not in spec.extras:
                layers += [nn.Flatten(), nn.Linear(chans * side * side, 4)]
                layers.append(leaky(spec.beta_kind, spec.thr_kind, (4,), reset, gen, output=True,
                                    synaptic=syn(i)))
                break
            groups = 2 if i == 0 and spec.seed % 2 else 1
            stride = 2 if side > 3 and spec.seed % 3 == 0 else 1
            layers.append(nn.Conv2d(chans, 4, 3, stride=stride, padding=1, groups=groups))
            side = (side + 2 - 3) // stride + 1
            chans = 4
            if "bn" in spec.extras:
                layers.append(nn.BatchNorm2d(chans))
            if "avgpool" in spec.extras and side >= 2:
                layers.append(nn.AvgPool2d(2))
                side //= 2
            elif "maxpool" in spec.extras and side >= 2:
                if spec.seed % 2:  # overlapping windows, -inf padding, ceil mode
                    pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
                else:
                    pool = nn.MaxPool2d(2)
                layers.append(pool)
                side = pool(torch.zeros(1, chans, side, side)).shape[-1]
            layers.append(leaky(spec.beta_kind, spec.thr_kind, (chans, side, side), reset, gen,
                                synaptic=syn(i)))
        if "linear_head" in spec.extras:
            layers += [nn.Flatten(), nn.Linear(chans * side * side, 4)]
    if "linear_head" in spec.extras and spec.arch == "fc":
        layers.append(nn.Linear(width, 4))
    with torch.no_grad():
        for m in layers:
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(spec.weight_scale)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.3, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
    if "nested" in spec.extras:
        half = len(layers) // 2
        net = nn.Sequential(nn.Sequential(*layers[:half]), nn.Sequential(*layers[half:]))
    else:
        net = nn.Sequential(*layers)
    return net.eval(), in_shape


@st.composite
def net_specs(draw, encodings=("direct", "rate", "event"), max_steps: int = 8) -> NetSpec:
    arch = draw(st.sampled_from(["fc", "conv"]))
    n = draw(st.integers(1, 3))
    encoding = draw(st.sampled_from(encodings))
    extras = draw(st.lists(
        st.sampled_from(["bn", "avgpool", "maxpool", "dropout", "nested", "linear_head",
                         "synaptic"]),
        max_size=3, unique=True,
    ))
    readout = draw(st.sampled_from(["rate", "count", "membrane"]))
    if "linear_head" in extras and readout == "membrane":
        readout = "rate"
    kinds = PARAM_KINDS if arch == "conv" else ("scalar", "neuron", "learnable")
    return NetSpec(
        arch=arch,
        resets=tuple(draw(st.sampled_from(RESETS)) for _ in range(n)),
        beta_kind=draw(st.sampled_from(kinds)),
        thr_kind=draw(st.sampled_from(kinds)),
        encoding=encoding,
        readout=readout,
        num_steps=draw(st.integers(1, max_steps)),
        extras=tuple(extras),
        seed=draw(st.integers(0, 10_000)),
        weight_scale=draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
    )


def sample_input(encoding: str, in_shape, batch: int, num_steps: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if encoding == "event":
        return (torch.rand((num_steps, batch, *in_shape), generator=gen) < 0.3).float()
    return torch.rand((batch, *in_shape), generator=gen)


def perturbations(bnet, x, eps, n: int, seed: int, noise=None, mask=None) -> torch.Tensor:
    """``n`` inputs per sample inside the threat: uniform, box corners and
    signed-gradient steps (both directions, on random score combinations).

    Returns ``[n, B, ...]`` (``[n, T, B, ...]`` for events).
    """
    gen = torch.Generator().manual_seed(seed)
    if bnet.encoding.name == "event":
        flips = (torch.rand((n, *x.shape), generator=gen) < 0.5) & mask
        return torch.where(flips, 1 - x, x)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    n_uniform = n // 3
    n_corner = n // 3
    n_grad = n - n_uniform - n_corner
    u = lo + (hi - lo) * torch.rand((n_uniform, *x.shape), generator=gen)
    c = torch.where(torch.rand((n_corner, *x.shape), generator=gen) < 0.5, lo, hi)
    g = []
    for i in range(n_grad):
        xa = (lo + (hi - lo) * torch.rand(x.shape, generator=gen)).requires_grad_(True)
        w = torch.randn(bnet(x.detach(), noise=noise).shape, generator=gen)
        (bnet(xa, noise=noise) * w).sum().backward()
        step = eps * (1 if i % 2 else 0.5)
        g.append((xa.detach() + step * xa.grad.sign()).clamp(lo, hi))
        xa.grad = None
    return torch.cat([u, c, torch.stack(g)]) if g else torch.cat([u, c])


def reference(bnet, net, x, noise=None):
    """Real snnTorch scores ``[B, K]`` and per-layer (mem, spk) records."""
    frames = snntorch_frames(bnet.encoding.name, x, bnet.steps_for(x), noise)
    out, layers = run_snntorch(net, frames)
    return snntorch_scores(bnet.readout, out, layers), layers

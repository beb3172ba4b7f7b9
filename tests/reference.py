"""Run the REAL snnTorch network step by step: the ground truth for every check.

Test-only (not installed): used by the test suite and ``benchmarks/bench_bounds.py`` to compare the wrapper's forward and
bounds with what snnTorch itself computes, including every Leaky's membrane
and spikes at every step.
"""

from __future__ import annotations

import snntorch as snn
import torch
from torch import Tensor, nn

NEURONS = (snn.Leaky, snn.Synaptic)


def reset_leaky_states(net: nn.Module) -> None:
    """Zero the state of every ``snn.Leaky`` / ``snn.Synaptic`` inside ``net`` (and only those).

    ``snntorch.utils.reset`` resets every Leaky ever built, and only direct
    children: never use it on a single network.
    """
    for m in net.modules():
        if isinstance(m, NEURONS):
            m.mem = torch.zeros(1, device=m.threshold.device)
            if isinstance(m, snn.Synaptic):
                m.syn = torch.zeros(1, device=m.threshold.device)


@torch.no_grad()
def run_snntorch(net: nn.Sequential, frames: Tensor) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """Run ``net`` (Leaky layers with ``init_hidden=True``) over ``frames`` ``[T, B, ...]``.

    Returns:
        ``(out, layers)``: ``out`` the per-step outputs ``[T, B, ...]`` (spikes of
        a final Leaky, also when it has ``output=True``), and for every Leaky
        its dotted name -> ``(membranes, spikes)``, each ``[T, B, ...]``.
    """
    reset_leaky_states(net)
    records: dict[str, tuple[list, list]] = {}
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, NEURONS):
            records[name] = ([], [])

            def hook(mod, _inp, out, rec=records[name]):
                spk = out[0] if isinstance(out, tuple) else out
                rec[0].append(mod.mem.detach().clone())
                rec[1].append(spk.detach().clone())

            hooks.append(m.register_forward_hook(hook))
    try:
        outs = []
        for t in range(frames.shape[0]):
            o = net(frames[t])
            outs.append(o[0] if isinstance(o, tuple) else o)
    finally:
        for h in hooks:
            h.remove()
        reset_leaky_states(net)
    layers = {k: (torch.stack(v[0]), torch.stack(v[1])) for k, v in records.items()}
    return torch.stack(outs), layers


def snntorch_frames(encoding: str, x: Tensor, num_steps: int, noise: Tensor | None = None) -> Tensor:
    """What a user feeds snnTorch at each step: ``[T, B, ...]``."""
    if encoding == "direct":
        return x.unsqueeze(0).expand((num_steps, *x.shape))
    if encoding == "rate":
        return (x > noise).to(x.dtype)
    return x


def snntorch_scores(readout: str, out: Tensor, layers: dict) -> Tensor:
    """Readout ``[B, K]`` from :func:`run_snntorch`'s per-step results."""
    if readout == "membrane":
        return list(layers.values())[-1][0].mean(0)
    return out.sum(0) if readout == "count" else out.mean(0)


def float64(bnet):
    """A float64 copy of a ``BoundedSNN`` (its own parameters): where a test compares two
    numerically different computations of the same spikes (batched vs one by one, chunked
    vs whole, threads), float32 rounding can flip a spike on some CPUs; float64 rounding
    is 2^29 times finer and cannot reach a threshold on these nets."""
    import copy

    return copy.deepcopy(bnet).double()

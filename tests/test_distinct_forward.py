"""``BoundedSNN.distinct_forward``: the exact scores, with the ops after each neuron layer run
once per distinct spike train of the batch (SpikeSearch's candidate evaluations)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from netgen import build, net_specs, sample_input
from reference import float64
from torch import nn

from snncertify import certify

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _near_copies(x: torch.Tensor, encoding: str, n: int, seed: int) -> torch.Tensor:
    """``n`` copies of each sample, each with one coordinate moved (event input: one flip)."""
    gen = torch.Generator().manual_seed(seed)
    if encoding == "event":  # [T, B, ...]
        big = x.repeat_interleave(n, 1)
        flat = big.reshape(big.shape[0], big.shape[1], -1)
        t = torch.randint(0, flat.shape[0], (flat.shape[1],), generator=gen)
        j = torch.randint(0, flat.shape[2], (flat.shape[1],), generator=gen)
        rows = torch.arange(flat.shape[1])
        flat[t, rows, j] = 1 - flat[t, rows, j]
        return big
    big = x.repeat_interleave(n, 0)
    flat = big.view(big.shape[0], -1)
    j = torch.randint(0, flat.shape[1], (flat.shape[0],), generator=gen)
    rows = torch.arange(flat.shape[0])
    flat[rows, j] = torch.rand(flat.shape[0], generator=gen, dtype=flat.dtype)
    return big


@SETTINGS
@given(spec=net_specs())
def test_distinct_forward_equals_forward(spec):
    """Every encoding, readout, reset, Synaptic, pooling, BatchNorm (eval) and head: the same
    scores as the plain forward (float64: the batch sizes of the matmuls differ)."""
    net, in_shape = build(spec)
    bnet = float64(certify(net, spec.num_steps, encoding=spec.encoding, readout=spec.readout))
    x = sample_input(spec.encoding, in_shape, 3, spec.num_steps, spec.seed).double()
    big = _near_copies(x, spec.encoding, 20, spec.seed)
    noise = bnet.draw_noise(big) if spec.encoding == "rate" else None
    with torch.no_grad():
        assert torch.equal(bnet.distinct_forward(big, noise), bnet(big, noise))


def test_distinct_forward_runs_each_spike_train_once(fc_net):
    """The layers after the first neuron layer see one row per distinct spike train."""
    net = fc_net(6, 8, 3)
    bnet = float64(certify(net, 4))
    x = torch.rand(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    big = torch.cat([x.repeat(50, 1), x[:1] + 1e-9])  # 101 rows, 3 distinct inputs
    seen = []
    second = [m for m in bnet.net.modules() if isinstance(m, nn.Linear)][1]
    handle = second.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        with torch.no_grad():
            out = bnet.distinct_forward(big)
    finally:
        handle.remove()
    _, first = bnet.trace(big)
    trains = first.layers[0].spk_l.transpose(0, 1).reshape(len(big), -1)
    assert set(seen) == {len(torch.unique(trains, dim=0))}
    assert max(seen) <= 3
    assert torch.equal(out, bnet(big))


@pytest.mark.parametrize("conv", [False, True])
def test_distinct_forward_in_train_mode_is_forward(bn_net, conv):
    """Batch statistics make the rows depend on each other: the plain forward is used."""
    torch.manual_seed(0)
    bnet = certify(bn_net(conv=conv), 3).train()
    x = torch.rand(8, *((1, 6, 6) if conv else (16,)))
    torch.manual_seed(1)
    ref = bnet(x)
    torch.manual_seed(1)
    assert torch.equal(bnet.distinct_forward(x), ref)


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("threshold", [0.5, -0.1])
def test_forward_values_equal_forward_seq(reset, threshold):
    """The in-place exact dynamics give forward_seq's spikes and membranes (float32, the same
    operations), per-neuron beta included; a negative threshold fires from the first step."""
    import snntorch as snn

    gen = torch.Generator().manual_seed(1)
    beta = torch.rand(7, generator=gen)
    net = nn.Sequential(nn.Linear(5, 7), snn.Leaky(beta=beta, threshold=threshold,
                                                   reset_mechanism=reset, init_hidden=True,
                                                   output=True))
    op = certify(net, 6).ops[-1]
    cur = [torch.randn(9, 7, generator=gen) for _ in range(6)]
    spikes, mems = op.forward_seq(cur)
    fast_spikes, fast_mems = op.forward_values(cur)
    assert all(torch.equal(a, b) for a, b in zip(spikes, fast_spikes, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(mems, fast_mems, strict=True))
    only, none = op.forward_values(cur, keep_mem=False)
    assert none is None and all(torch.equal(a, b) for a, b in zip(spikes, only, strict=True))
    assert bool(torch.stack(spikes).any()) and not bool(torch.stack(spikes).all())

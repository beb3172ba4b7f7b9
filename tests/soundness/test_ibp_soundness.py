"""S-IBP soundness against the REAL snnTorch forward.

For random FC and conv networks (1 to 3 Leaky layers, every reset mode, beta
and threshold scalar / per-neuron / per-channel / learnable, every encoding
and readout, T = 1..8): every Leaky's membrane and spikes at every step, and
the scores, of hundreds of perturbed inputs (uniform, box corners,
signed-gradient steps; random flips for events) lie inside the bounds.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netgen import build, net_specs, perturbations, reference, sample_input

from snncertify import certify

BATCH = 3
N_PERTURBED = 240
SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _flatten_perturbed(bnet, xs):
    """``[n, B, ...]`` (or ``[n, T, B, ...]``) -> one big batch for the reference run."""
    if bnet.encoding.name == "event":
        n, T, B = xs.shape[:3]
        return xs.permute(1, 0, 2, *range(3, xs.ndim)).reshape(T, n * B, *xs.shape[3:])
    return xs.reshape(-1, *xs.shape[2:])


def _tile(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    reps = [1] * t.ndim
    reps[dim] = n
    return t.repeat(*reps)


def check_sound(spec, eps_choice: float) -> None:
    net, in_shape = build(spec)
    bnet = certify(net, spec.num_steps, encoding=spec.encoding, readout=spec.readout)
    x = sample_input(spec.encoding, in_shape, BATCH, spec.num_steps, spec.seed)
    noise = bnet.draw_noise(x) if spec.encoding == "rate" else None

    # exact forward, also layer by layer
    scores, prop = bnet.trace(x, noise=noise)
    ref_scores, ref_layers = reference(bnet, net, x, noise)
    assert torch.equal(scores, ref_scores)
    for rec in prop.layers:
        mem, spk = ref_layers[rec.path]
        assert torch.equal(rec.mem_l, mem) and torch.equal(rec.spk_l, spk), rec.path

    # a point threat gives the forward exactly
    if spec.encoding == "event":
        zero, eps = torch.zeros_like(x, dtype=torch.bool), None
        gen = torch.Generator().manual_seed(spec.seed + 1)
        mask = torch.rand(x.shape, generator=gen) < eps_choice
        mask.view(-1)[spec.seed % mask.numel()] = True  # never a point threat here
        threat = mask
    else:
        zero, mask, eps = 0.0, None, eps_choice
        threat = eps
    lower, upper = bnet.bounds(x, zero, noise=noise)
    assert torch.equal(lower, scores) and torch.equal(upper, scores)

    # perturbed inputs stay inside every bound
    prop = bnet.interval_propagation(x, bnet.threat(x, threat), noise)
    lower, upper = bnet.bounds(x, threat, noise=noise)
    xs = perturbations(bnet, x, eps, N_PERTURBED, spec.seed, noise=noise, mask=mask)
    n = xs.shape[0]
    big = _flatten_perturbed(bnet, xs)
    big_noise = None if noise is None else _tile(noise, n, 1)
    bnet_big = certify(net, spec.num_steps, encoding=spec.encoding, readout=spec.readout)
    ref_scores, ref_layers = reference(bnet_big, net, big, big_noise)
    ref_scores = ref_scores.reshape(n, BATCH, -1)
    assert (ref_scores >= lower).all() and (ref_scores <= upper).all(), "score bound violated"
    for rec in prop.layers:
        mem, spk = ref_layers[rec.path]
        T = mem.shape[0]
        mem = mem.reshape(T, n, BATCH, *mem.shape[2:]).transpose(0, 1)
        spk = spk.reshape(T, n, BATCH, *spk.shape[2:]).transpose(0, 1)
        assert (mem >= rec.mem_l).all() and (mem <= rec.mem_u).all(), f"membrane {rec.path}"
        assert (spk >= rec.spk_l).all() and (spk <= rec.spk_u).all(), f"spikes {rec.path}"


@SETTINGS
@given(spec=net_specs(), eps=st.sampled_from([0.01, 0.05, 0.2]))
def test_ibp_sound_on_random_networks(spec, eps):
    check_sound(spec, eps)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(spec=net_specs(encodings=("direct",), max_steps=4))
def test_large_eps_still_sound(spec):
    check_sound(spec, 0.6)

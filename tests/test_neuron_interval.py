"""The neuron layer's S-IBP with its hand-written backward (``ops.neuron_interval``) against
the autograd rule it replaces: the same bounds bit for bit, the same gradients."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from snntorch import surrogate

from snncertify.ops import LeakyOp, SynapticOp


class _AutogradLeaky(LeakyOp):
    base_membrane_rule = False  # the autograd code of NeuronOp.interval_seq


class _AutogradSynaptic(SynapticOp):
    base_membrane_rule = False


def _currents(T: int, seed: int, static: bool):
    """T current intervals ``[4, 5, 6]`` in float64, wide enough that every rule's branches
    occur (stable and unstable, both signs), some of width 0; leaf tensors needing grad."""
    gen = torch.Generator().manual_seed(seed)
    n = 1 if static else T
    centre = torch.randn((n, 4, 5, 6), generator=gen, dtype=torch.float64) * 0.6 + 0.3
    radius = torch.rand((n, 4, 5, 6), generator=gen, dtype=torch.float64) * 0.5
    radius[:, 0] = 0
    lo, hi = (centre - radius).requires_grad_(), (centre + radius).requires_grad_()
    steps = [0] * T if static else range(T)
    return lo, hi, [lo[i] for i in steps], [hi[i] for i in steps]


def _ops(cls, ref_cls, reset: str, beta: float, thr: float, spike_grad):
    if cls is LeakyOp:
        mod = snn.Leaky(beta=beta, threshold=thr, reset_mechanism=reset, spike_grad=spike_grad)
    else:
        mod = snn.Synaptic(alpha=0.6, beta=beta, threshold=thr, reset_mechanism=reset,
                           spike_grad=spike_grad)
    mod = mod.double()
    return cls(mod, "0"), ref_cls(mod, "0")


def _run(op, T: int, seed: int, static: bool, slack: float):
    lo, hi, cl, cu = _currents(T, seed, static)
    out = op.interval_seq(cl, cu, slack)
    gen = torch.Generator().manual_seed(seed + 1)
    weights = [torch.randn((T, 4, 5, 6), generator=gen, dtype=torch.float64) for _ in out]
    loss = sum((torch.stack(seq) * w).sum() for seq, w in zip(out, weights, strict=True))
    loss.backward()
    return [torch.stack(seq).detach() for seq in out], lo.grad, hi.grad


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("beta,thr", [(0.25, 0.25), (0.9, 1.0), (1.0, 0.5), (0.6, -0.2)])
@pytest.mark.parametrize("slack", [0.0, 1e-5, 0.05])
@pytest.mark.parametrize("static", [False, True])
def test_fused_equals_autograd_leaky(reset, beta, thr, slack, static):
    """Every reset, thresholds of both signs, with and without slack, per-step and static
    currents: equal bounds and equal gradients on the currents (membranes and spikes both
    weighted, spikes through the atan surrogate)."""
    fused, ref = _ops(LeakyOp, _AutogradLeaky, reset, beta, thr, surrogate.atan())
    (vals, gl, gu), (rvals, rgl, rgu) = (_run(op, 6, 3, static, slack) for op in (fused, ref))
    for v, r in zip(vals, rvals, strict=True):
        assert torch.equal(v, r)
    torch.testing.assert_close(gl, rgl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gu, rgu, rtol=1e-12, atol=1e-12)
    assert gl.abs().sum() > 0 and gu.abs().sum() > 0


def test_branches_are_exercised():
    """The data of the tests above reach every branch of the subtract rule (else a wrong
    mask could pass unseen): unstable steps whose cap is taken and not taken, on both sides."""
    fused, _ = _ops(LeakyOp, _AutogradLeaky, "subtract", 0.9, 1.0, surrogate.atan())
    _, _, cl, cu = _currents(6, 3, False)
    with torch.no_grad():
        sl, su, ml, mu = fused.interval_seq(cl, cu, 0.0)
    unstable = torch.stack(su[:-1]) != torch.stack(sl[:-1])
    base_l = torch.stack(cl[1:]) + 0.9 * torch.stack(ml[:-1])
    cap_l = 0.9 * 1.0 - 1.0 + torch.stack(cl[1:])
    assert (unstable & (cap_l < base_l)).any() and (unstable & (cap_l >= base_l)).any()
    assert (~unstable).any()


@pytest.mark.parametrize("reset", ["subtract", "none", "zero"])
def test_fused_equals_autograd_synaptic(reset):
    """Synaptic's subtract and none resets use the fused rule on its synaptic currents; its
    own zero-reset rule keeps the autograd code (both give the reference's values)."""
    fused, ref = _ops(SynapticOp, _AutogradSynaptic, reset, 0.8, 0.7, surrogate.fast_sigmoid())
    assert fused.base_membrane_rule == (reset != "zero")
    (vals, gl, gu), (rvals, rgl, rgu) = (_run(op, 5, 7, False, 1e-5) for op in (fused, ref))
    for v, r in zip(vals, rvals, strict=True):
        assert torch.equal(v, r)
    torch.testing.assert_close(gl, rgl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gu, rgu, rtol=1e-12, atol=1e-12)


def test_no_grad_and_learnable_beta():
    """Without autograd the values are the same; a learnable β falls back to the autograd
    code, so β gets its gradient."""
    fused, ref = _ops(LeakyOp, _AutogradLeaky, "subtract", 0.9, 1.0, surrogate.atan())
    _, _, cl, cu = _currents(4, 5, False)
    with torch.no_grad():
        a, b = fused.interval_seq(cl, cu, 1e-5), ref.interval_seq(cl, cu, 1e-5)
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(x, y, strict=True))
    mod = snn.Leaky(beta=0.9, learn_beta=True).double()
    out = LeakyOp(mod, "0").interval_seq(cl, cu, 1e-5)
    torch.stack(out[3]).sum().backward()
    assert mod.beta.grad is not None and mod.beta.grad.abs() > 0


@pytest.mark.parametrize("make", [surrogate.atan, lambda: surrogate.atan(alpha=5.0),
                                  surrogate.fast_sigmoid,
                                  lambda: surrogate.fast_sigmoid(slope=3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_known_surrogate_derivatives_equal_snntorch(make, dtype):
    """The in-place derivatives of snnTorch's atan and fast-sigmoid equal their own
    backward bit for bit; an unknown surrogate goes through autograd."""
    from snncertify.ops.neuron_interval import _derivative, _known_derivative

    fn = make()
    gen = torch.Generator().manual_seed(0)
    mem = torch.randn(1000, generator=gen, dtype=dtype) * 2
    grad = torch.randn(1000, generator=gen, dtype=dtype)
    thr = torch.tensor(0.7, dtype=dtype)
    v = (mem - thr).requires_grad_()
    (want,) = torch.autograd.grad(fn(v).to(dtype), v, grad)
    assert _known_derivative(fn) is not None
    assert torch.equal(_derivative(fn, dtype)(mem - thr, grad), want)
    other = surrogate.sigmoid()
    assert _known_derivative(other) is None
    (want,) = torch.autograd.grad(other(v).to(dtype), v, grad)
    got = _derivative(other, dtype)(v.detach().clone(), grad)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)  # its exp overflows

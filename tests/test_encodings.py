"""Encodings and threats as objects: construction, equivalence with names, geometry,
errors, and that a new encoding is one class plus its registration."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from snncertify import Direct, Encoding, Event, Rate, certify, register_encoding
from snncertify.encoding import ENCODINGS, make_encoding
from snncertify.threat import FlipBudget, FlipMask, LinfBall


@pytest.fixture
def net(fc_net):
    """Linear(6, 8), Leaky, Linear(8, 3), Leaky, seeded 0: input ``[B, 6]``, 3 classes."""
    return fc_net(6, 8, 3, flatten=False)


def test_a_name_builds_the_same_object_as_the_class():
    assert make_encoding("direct") == Direct()
    assert make_encoding("rate", seed=3) == Rate(seed=3)
    assert make_encoding("event") == Event()
    assert make_encoding(Rate(seed=2)) == Rate(seed=2)
    assert make_encoding(Rate(seed=2), seed=2) == Rate(seed=2)


@pytest.mark.parametrize("spec,seed,match", [
    ("latency", None, "encoding must be one of"),
    (3, None, "encoding must be one of"),
    (Rate(seed=1), 2, "disagrees"),
])
def test_a_bad_encoding_is_a_clear_error(spec, seed, match):
    with pytest.raises(ValueError, match=match):
        make_encoding(spec, seed)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_an_encoding_object_and_its_name_give_identical_results(method, net, unit_inputs):
    by_name = certify(net, 5, encoding="rate", seed=7)
    by_object = certify(net, 5, encoding=Rate(seed=7))
    assert by_object.seed == by_name.seed == 7
    x = unit_inputs(4, 6)
    assert torch.equal(by_name(x), by_object(x))
    for a, b in zip(by_name.bounds(x, 0.05, method), by_object.bounds(x, 0.05, method),
                    strict=True):
        assert torch.equal(a, b)


def test_the_rate_pattern_is_shared_by_every_sample_and_batch(unit_inputs):
    enc = Rate(seed=4)
    x = unit_inputs(5, 2, 3)
    full = enc.default_noise(x, 6)
    assert full.shape == (6, 5, 2, 3)
    assert torch.equal(full[:, 3], enc.default_noise(x[3:4], 6)[:, 0])
    assert torch.equal(full[:, 0], enc.pattern(6, (2, 3)))
    gen = torch.Generator().manual_seed(0)
    fresh = enc.fresh_noise(6, (5, 2, 3), gen)
    assert fresh.shape == (6, 5, 2, 3) and not torch.equal(fresh[:, 0], fresh[:, 1])
    assert Direct().fresh_noise(6, (5,), gen) is None and Direct().default_noise(x, 6) is None


def test_shapes_follow_the_time_axis():
    frames = torch.zeros(4, 3, 2, 5)
    assert (Event().batch_size(frames), Event().sample_shape(frames)) == (3, (2, 5))
    assert Event().take(frames, slice(1, 2)).shape == (4, 1, 2, 5)
    assert (Direct().batch_size(frames), Direct().sample_shape(frames)) == (4, (3, 2, 5))
    with pytest.raises(ValueError, match="frames"):
        Event().steps_for(frames, 6)


@pytest.mark.parametrize("enc,eps,match", [
    (Event(), LinfBall(0.1), "event encoding takes a FlipMask or FlipBudget threat"),
    (Direct(), FlipBudget(2), "direct encoding takes an L-inf eps, not FlipBudget"),
    (Rate(), torch.zeros(3, 2, dtype=torch.bool), "eps tensor must be a scalar"),
    (Event(), 0.5, "an int flip budget"),
    (Direct(), -0.1, "eps must be >= 0"),
])
def test_a_threat_the_encoding_does_not_take_is_a_clear_error(enc, eps, match):
    with pytest.raises(ValueError, match=match):
        enc.threat(eps, batch_size=3)


def test_bad_threats_are_errors_when_built():
    with pytest.raises(ValueError, match="flip budget must be >= 0"):
        FlipBudget(-1)
    with pytest.raises(ValueError, match="bool tensor"):
        FlipMask(torch.ones(3))
    with pytest.raises(ValueError, match="an int"):
        FlipBudget(1.5)


def test_the_linf_box_is_clipped_to_the_valid_range():
    x = torch.tensor([[0.0, 0.5, 0.95]])
    lo, hi = LinfBall(0.1).box(x)
    assert torch.allclose(lo, torch.tensor([[0.0, 0.4, 0.85]]))
    assert torch.allclose(hi, torch.tensor([[0.1, 0.6, 1.0]]))
    lo, hi = LinfBall(torch.tensor([0.0])).box(x)
    assert lo is x and hi is x


def test_a_flip_budget_concretises_to_the_exact_minimum():
    gen = torch.Generator().manual_seed(0)
    T, n, k = 3, 3, 2
    x0 = (torch.rand(T, 1, 1, n, generator=gen) > 0.5).float()
    mask = torch.rand(T, 1, 1, n, generator=gen) > 0.3
    lo, hi = (x0.bool() & ~mask).float(), (x0.bool() | mask).float()
    lam = torch.randn(T, 1, 2, n, generator=gen)
    value, _ = FlipBudget(k).concretize(lam, lo, hi, x0, timed=True)
    free = [i for i in range(T * n) if mask.flatten()[i]]
    best = torch.full((2,), float("inf"))
    for r in range(k + 1):
        for flips in itertools.combinations(free, r):
            s = x0.flatten().clone()
            s[list(flips)] = 1 - s[list(flips)]
            v = (lam * s.reshape(T, 1, 1, n)).sum((0, 3)).flatten()
            best = torch.minimum(best, v)
    assert torch.allclose(value.flatten(), best, atol=1e-6)


@register_encoding
@dataclass(frozen=True)
class _Inverted(Encoding):
    """Test encoding: the current is ``1 - x`` at every step (static); L-inf threats."""

    name = "test-inverted"
    static = True
    threat_types = (LinfBall,)
    threat_words = "an L-inf eps"

    def encode(self, x: Tensor, noise, grad=None):
        return 1 - x, True

    def _parse_eps(self, eps, batch_size: int):
        return LinfBall.parse(eps, batch_size)

    def input_interval(self, x: Tensor, threat, noise):
        lo, hi = threat.box(x)
        return 1 - hi, 1 - lo, True

    def milp_inputs(self, model, x, threat, noise, b, num_steps):
        raise NotImplementedError("no MILP for the test encoding")


@pytest.fixture
def inverted():
    yield _Inverted()
    # registered once at import; the registry stays as the suite found it for other tests
    assert ENCODINGS["test-inverted"] is _Inverted


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_a_new_encoding_is_one_class_and_its_bounds_hold(inverted, method, net, unit_inputs):
    bnet = certify(net, 4, encoding="test-inverted", readout="membrane")
    assert bnet.encoding == inverted
    x = unit_inputs(3, 6, seed=1)
    direct = certify(net, 4, readout="membrane")
    assert torch.equal(bnet(x), direct(1 - x))
    lower, upper = bnet.bounds(x, 0.05, method)
    gen = torch.Generator().manual_seed(2)
    for _ in range(50):
        xp = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * 0.05).clamp(0, 1)
        s = bnet(xp)
        assert bool((s >= lower).all()) and bool((s <= upper).all())

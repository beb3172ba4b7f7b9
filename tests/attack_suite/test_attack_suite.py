"""The attacks: success on a clean-trained digits SNN, outputs in the ball, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attacks
from attacks import AttackableSNN, OutOfBallWarning

EPS = 0.15
N = 64


def _in_ball(x_adv, x, eps):
    return (
        x_adv.shape == x.shape
        and float((x_adv - x).abs().max()) <= eps + 1e-6
        and float(x_adv.min()) >= 0.0
        and float(x_adv.max()) <= 1.0
    )


FAST = {
    "fgsm": lambda: attacks.FGSM(),
    "pgd": lambda: attacks.PGD(steps=20),
    "pgd@rate": lambda: attacks.PGD(steps=20, grad="rate"),
    "pgd@atan": lambda: attacks.PGD(steps=20, grad="surrogate:atan"),
    "pgd@fast_sigmoid": lambda: attacks.PGD(steps=20, grad="surrogate:fast_sigmoid"),
    "pgd@triangular": lambda: attacks.PGD(steps=20, grad="surrogate:triangular"),
    "pgd@ste": lambda: attacks.PGD(steps=20, grad="surrogate:straight_through"),
    "apgd-ce": lambda: attacks.APGD("ce", steps=20),
    "apgd-dlr": lambda: attacks.APGD("dlr", steps=20),
    "square": lambda: attacks.Square(n_queries=300),
    "eot-pgd": lambda: attacks.EOTPGD(steps=20, eot_iter=3),
    "spike-search": lambda: attacks.SpikeSearch(pgd_steps=20, restarts=2, iters=30),
}


@pytest.mark.parametrize("name", list(FAST))
def test_attack_succeeds_and_stays_in_ball(direct_model, name):
    clf = AttackableSNN(direct_model.bnet)
    x, y = direct_model.x[:N], direct_model.y[:N]
    clean = clf.correct(x, y).float().mean().item()
    atk = FAST[name]()
    x_adv = atk(clf, x, y, EPS)
    assert _in_ball(x_adv, x, EPS)
    assert atk.last_violation[0] <= 1e-6 and atk.last_violation[1] <= 1e-6  # no repair needed
    acc = clf.correct(x_adv, y).float().mean().item()
    # clean ~0.94; at eps=0.15 every attack must take a large bite (PGD reaches ~0.1)
    limit = {"fgsm": 0.6, "square": 0.8}.get(name, 0.45)
    assert acc < limit, (name, clean, acc)


def test_pgd_reaches_zero_at_large_eps(direct_model):
    clf = AttackableSNN(direct_model.bnet)
    x, y = direct_model.x[:N], direct_model.y[:N]
    x_adv = attacks.PGD(steps=20)(clf, x, y, 0.3)
    assert _in_ball(x_adv, x, 0.3)
    assert clf.correct(x_adv, y).float().mean() <= 0.02


def test_rate_encoded_model_attacked(rate_model):
    clf = AttackableSNN(rate_model.bnet)
    x, y = rate_model.x[:N], rate_model.y[:N]
    for atk in (attacks.PGD(steps=20), attacks.APGD("dlr", steps=20),
                attacks.EOTPGD(steps=20, eot_iter=3), attacks.PGD(steps=20, grad="rate")):
        x_adv = atk(clf, x, y, EPS)
        assert _in_ball(x_adv, x, EPS)
        assert clf.correct(x_adv, y).float().mean() < 0.5, atk.label


def test_deterministic_and_no_global_rng_side_effect(direct_model):
    clf = AttackableSNN(direct_model.bnet)
    x, y = direct_model.x[:32], direct_model.y[:32]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = attacks.PGD(steps=5, seed=4)(clf, x, y, 0.1)
    assert torch.equal(torch.rand(3), before)  # the caller's RNG stream is untouched
    b = attacks.PGD(steps=5, seed=4)(clf, x, y, 0.1)
    c = attacks.PGD(steps=5, seed=5)(clf, x, y, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    s1 = attacks.Square(n_queries=50, seed=1)(clf, x, y, 0.1)
    s2 = attacks.Square(n_queries=50, seed=1)(clf, x, y, 0.1)
    assert torch.equal(s1, s2)


def test_restarts_never_hurt(direct_model):
    clf = AttackableSNN(direct_model.bnet)
    x, y = direct_model.x[:N], direct_model.y[:N]
    one = clf.correct(attacks.PGD(steps=5)(clf, x, y, 0.08), y)
    three = clf.correct(attacks.PGD(steps=5, restarts=3)(clf, x, y, 0.08), y)
    assert not bool((three & ~one).any())  # the first restart is the same run
    assert three.sum() < one.sum()


def test_transfer_from_source_models(direct_model, rate_model):
    clf = AttackableSNN(direct_model.bnet)
    x, y = direct_model.x[:N], direct_model.y[:N]
    tr = attacks.Transfer(rate_model.bnet, attacks.PGD(steps=20))
    assert tr.label == "Transfer(PGD-20)" and not tr.gradient_based and tr.transfer
    x_adv = tr(clf, x, y, EPS)
    assert _in_ball(x_adv, x, EPS)
    assert clf.correct(x_adv, y).float().mean() < 0.75  # the two models share weaknesses
    ann = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    assert _in_ball(attacks.Transfer(ann)(clf, x, y, EPS), x, EPS)


class _Sloppy(attacks.Attack):
    """Returns points outside the ball and outside [0, 1]."""

    name = "sloppy"

    def perturb(self, model, x, y, eps):
        return x + 3 * eps * torch.sign(torch.randn_like(x))


def test_outputs_out_of_ball_are_flagged_and_projected(direct_model):
    clf = AttackableSNN(direct_model.bnet)
    x, y = direct_model.x[:16], direct_model.y[:16]
    with pytest.warns(OutOfBallWarning):
        x_adv = _Sloppy()(clf, x, y, 0.05)
    assert _in_ball(x_adv, x, 0.05)
    assert (x_adv - x).abs().max() > 0.049  # projected onto the boundary, not reset to x


def test_make_attack_labels_name_steps_and_grad():
    assert attacks.make_attack("pgd@rate").label == "PGD-40 [rate]"
    assert attacks.make_attack("apgd-dlr").label == "APGD-DLR-100"
    assert attacks.make_attack("square", n_queries=10).label == "Square-10"
    assert attacks.make_attack("eot-pgd").label == "EOT-PGD-40x10"
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.make_attack("cw")


def test_worst_case_is_the_samplewise_and():
    a = torch.tensor([True, True, False, True])
    b = torch.tensor([True, False, True, True])
    assert torch.equal(attacks.worst_case({"a": a, "b": b}), torch.tensor([True, False, False, True]))


def test_autoattack_stays_in_ball_and_breaks_the_clean_model(direct_model):
    clf = AttackableSNN(direct_model.bnet)
    x, y = direct_model.x[:32], direct_model.y[:32]
    x_adv = attacks.AutoAttack()(clf, x, y, EPS)
    assert _in_ball(x_adv, x, EPS)
    assert clf.correct(x_adv, y).float().mean() < 0.35

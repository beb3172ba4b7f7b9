"""No attack ever breaks a certified sample (same inputs, same rate draw)."""

from __future__ import annotations

import pytest
import torch

import attacks
from attacks import AttackableSNN


def _strong_suite():
    return [
        attacks.PGD(steps=30, restarts=2),
        attacks.PGD(steps=30, grad="rate"),
        attacks.PGD(steps=30, grad="surrogate:fast_sigmoid"),
        attacks.PGD(steps=30, grad="surrogate:straight_through"),
        attacks.APGD("ce", steps=30),
        attacks.APGD("dlr", steps=30),
        attacks.Square(n_queries=300),
        attacks.FGSM(),
        attacks.SpikeSearch(pgd_steps=20, restarts=2, iters=30),
    ]


@pytest.mark.parametrize("fixture,eps,method", [
    ("direct_model", 0.002, "ibp"),
    ("rate_model", 0.005, "ibp"),
])
def test_certified_samples_survive_every_attack(request, fixture, eps, method):
    model = request.getfixturevalue(fixture)
    bnet = model.bnet
    x, y = model.x[:96], model.y[:96]
    clf = AttackableSNN(bnet)
    cert = bnet.certified(x, y, eps, method, noise=clf.eval_noise(x))
    assert int(cert.sum()) >= 10, "the test needs certified samples"
    for atk in _strong_suite():
        x_adv = atk(clf, x, y, eps)
        assert (x_adv - x).abs().max() <= eps + 1e-6
        ok = clf.correct(x_adv, y)
        assert not bool((cert & ~ok).any()), f"{atk.label} broke a certified sample"
    # on a much larger ball the attacks do break samples (the loop above is not vacuous)
    big = attacks.PGD(steps=30)(clf, x, y, 0.2)
    assert clf.correct(big, y).float().mean() < 0.5


def test_evaluate_reports_certified_column_consistent(rate_model):
    x, y = rate_model.x[:64], rate_model.y[:64]
    res = attacks.evaluate(rate_model.bnet, (x, y), eps=[0.005, 0.05],
                           attacks=[attacks.PGD(steps=20), attacks.Square(n_queries=100)],
                           bounds="ibp", progress=False)
    for e, masks in res.masks.items():
        cert, robust = masks["certified (ibp)"], masks["robust"]
        assert not bool((cert & ~robust).any()), e
    assert res.accuracy(0.005, "certified (ibp)") > 0
    assert res.accuracy(0.005, "certified (ibp)") <= res.accuracy(0.005, "robust")
    assert not [w for w in res.warnings if "certified" in w]


def test_soundness_check_fires_on_a_wrong_certificate():
    robust = {0.1: torch.tensor([True, False, True])}
    cert = {0.1: {"ibp": torch.tensor([True, True, False])}}
    found = attacks.checks.check_certified_not_broken(cert, robust)
    assert len(found) == 1 and "1 sample" in found[0]

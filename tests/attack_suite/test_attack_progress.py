"""Progress inside long attacks: model queries reach ``on_query`` and a bar per attack call;
attack specs with parameters."""

from __future__ import annotations

import importlib

import pytest

import attacks

evaluate_mod = importlib.import_module("attacks.evaluate")  # the module, not the function


def test_square_reports_every_query(direct_model):
    clf = attacks.AttackableSNN(direct_model.bnet)
    counts: list[int] = []
    clf.on_query = counts.append
    atk = attacks.Square(n_queries=40)
    x, y = direct_model.x[:8], direct_model.y[:8]
    atk(clf, x, y, 0.005)  # small eps: most samples survive, so every query is made
    assert atk.expected_queries == 41
    assert 30 <= sum(counts) <= 45


def test_spike_search_reports_queries(direct_model):
    clf = attacks.AttackableSNN(direct_model.bnet)
    counts: list[int] = []
    clf.on_query = counts.append
    attacks.make_attack("spike-search(pgd_steps=2, restarts=1, iters=2)")(
        clf, direct_model.x[:4], direct_model.y[:4], 0.01)
    assert sum(counts) > 4


def test_evaluate_shows_a_bar_inside_each_attack(direct_model, monkeypatch):
    bars = []

    class Recorder:
        def __init__(self, total=None, desc="", **kw):
            self.total, self.desc, self.n = total, desc, 0
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix_str(self, s):
            pass

        def close(self):
            pass

    monkeypatch.setattr(evaluate_mod, "progress_bar", Recorder)
    attacks.evaluate(direct_model.bnet, (direct_model.x[:16], direct_model.y[:16]), [0.005],
                     ["pgd", "square(n_queries=25)"], batch_size=8, run_sanity_checks=False)
    inner = [b for b in bars if "Square-25" in b.desc]
    assert len(inner) == 2 and all(b.total == 26 for b in inner)  # one per batch
    assert all(b.n >= 20 for b in inner)
    assert any("PGD-40" in b.desc and b.n >= 40 for b in bars)


def test_attack_specs_with_parameters_set_the_attack():
    assert attacks.make_attack("square(n_queries=1000)").label == "Square-1000"
    assert attacks.make_attack("apgd-ce(steps=50)@rate").label == "APGD-CE-50 [rate]"
    assert attacks.make_attack("square(n_queries=9)", n_queries=7).n_queries == 7
    with pytest.raises(ValueError, match="key=value"):
        attacks.make_attack("square(1000)")
    with pytest.raises(ValueError, match="literal"):
        attacks.make_attack("square(n_queries=os.system)")

"""The one spec-string parser (``snncertify.specs``) and its users' error messages."""

from __future__ import annotations

import pytest

import attacks
from snncertify.budget import parse_budget
from snncertify.specs import Spec, parse_call, parse_size, parse_spec


def test_calls_and_specs_parse_to_name_params_and_grad():
    assert parse_call("square") == ("square", {})
    assert parse_call(" square(n_queries=1000, loss='ce') ") == (
        "square", {"n_queries": 1000, "loss": "ce"})
    assert parse_spec("pgd") == Spec("pgd", {}, None)
    assert parse_spec("apgd-ce(steps=50)@surrogate:fast_sigmoid(slope=10)") == Spec(
        "apgd-ce", {"steps": 50}, "surrogate:fast_sigmoid(slope=10)")
    assert parse_spec("spike-search(taus=(0.3, 0.1))").params == {"taus": (0.3, 0.1)}


@pytest.mark.parametrize("bad", [
    "square(n_queries=1000",   # no closing parenthesis
    "square(1000)",            # positional
    "square(**kw)",            # not key=value
    "square(n_queries=f(1))",  # not a literal
    "(n_queries=1)",           # no name
    "pgd@",                    # no gradient mode
])
def test_bad_specs_are_value_errors_quoting_the_spec(bad):
    with pytest.raises(ValueError, match="attack spec") as err:
        parse_spec(bad, "attack spec")
    assert repr(bad) in str(err.value)
    with pytest.raises(ValueError) as err:  # the same through make_attack
        attacks.make_attack(bad)
    assert repr(bad) in str(err.value)


def test_unknown_attack_names_the_spec():
    with pytest.raises(ValueError, match=r"unknown attack 'nope' in 'nope\(steps=1\)@rate'"):
        attacks.make_attack("nope(steps=1)@rate")


def test_spec_parameters_and_grad_reach_the_attack():
    atk = attacks.make_attack("pgd(steps=7)@surrogate:fast_sigmoid", seed=3)
    assert (atk.steps, atk.grad, atk.seed) == (7, "surrogate:fast_sigmoid", 3)


def test_sizes_parse_units_and_reject_bad_values():
    assert parse_size("4GB") == 4 * 10**9
    assert parse_size(" 512 MiB ") == 512 * 2**20
    assert parse_size(1e9) == 10**9
    assert parse_budget("1kib") == 1024
    for bad in ("4 parsecs", "GB", "-1GB", 0, True, float("nan")):
        with pytest.raises(ValueError, match="memory_budget"):
            parse_budget(bad)
    with pytest.raises(ValueError, match=r"size '4 parsecs'"):
        parse_size("4 parsecs")


def test_spike_search_spec_fills_its_options():
    atk = attacks.make_attack("spike-search(restarts=1, iters=2, taus=(0.5, 0.05))@rate")
    assert atk.options == attacks.SearchOptions(restarts=1, iters=2, taus=(0.5, 0.05))
    assert atk.grad == "rate" and atk.label == "SpikeSearch-50+1x2 [rate]"
    merged = attacks.SpikeSearch(attacks.SearchOptions(restarts=2, prove=None), iters=3, seed=4)
    assert (merged.options.restarts, merged.options.iters, merged.options.prove,
            merged.seed) == (2, 3, None, 4)

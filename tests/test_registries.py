"""Registries refuse to overwrite silently; the tie-aware wrappers refuse unknown torchattacks."""

from __future__ import annotations

import pytest
import snntorch as snn
import torchattacks
from torch import nn

import attacks
from attacks.suite import TORCHATTACKS_SUPPORTED, tie_aware
from snncertify.methods import _METHODS, get_method, register_method
from snncertify.ops import LeakyOp
from snncertify.ops.registry import _EXACT, _SUBCLASS, op_class, register_op


def test_register_op_refuses_an_existing_type_unless_replace():
    class MyLeaky(LeakyOp):
        pass

    with pytest.raises(ValueError, match=r"snntorch.*Leaky is already bounded by .*LeakyOp.*replace=True"):
        register_op(snn.Leaky, exact=True)(MyLeaky)
    assert op_class(snn.Leaky(beta=0.5)) is LeakyOp  # nothing changed
    try:
        register_op(snn.Leaky, exact=True, replace=True)(MyLeaky)
        assert op_class(snn.Leaky(beta=0.5)) is MyLeaky
    finally:
        _EXACT[snn.Leaky] = LeakyOp
    linear = _SUBCLASS[nn.Linear]
    with pytest.raises(ValueError, match="already bounded"):
        register_op(nn.Linear, nn.GELU)(type("Other", (linear,), {}))
    assert nn.GELU not in _SUBCLASS  # refused as a whole


def test_register_method_refuses_an_existing_name_unless_replace():
    ibp = get_method("ibp")
    with pytest.raises(ValueError, match="'ibp' is already registered.*replace=True"):
        register_method("ibp", lambda *a, **k: None)
    assert get_method("ibp") is ibp
    register_method("ibp", ibp)  # the same function again: harmless
    try:
        register_method("ibp", len, replace=True)
        assert get_method("ibp") is len
    finally:
        _METHODS["ibp"] = ibp


def test_register_attack_refuses_an_existing_name_unless_replace():
    with pytest.raises(ValueError, match="'pgd' is already registered"):
        attacks.register_attack("PGD", attacks.FGSM)
    assert attacks.ATTACKS["pgd"] is attacks.PGD
    attacks.register_attack("my-fgsm", attacks.FGSM)
    try:
        assert isinstance(attacks.make_attack("my-fgsm"), attacks.FGSM)
        attacks.register_attack("my-fgsm", attacks.PGD, replace=True)
        assert isinstance(attacks.make_attack("my-fgsm"), attacks.PGD)
    finally:
        del attacks.ATTACKS["my-fgsm"]


def test_tie_aware_names_missing_torchattacks_internals():
    class Square(torchattacks.attack.Attack):  # a future torchattacks without margin_and_loss
        def forward(self, images, labels):
            return images

        def attack_single_run(self, x, y):
            return x

    with pytest.raises(ImportError, match=rf"torchattacks {torchattacks.__version__} lacks.*"
                       rf"Square.margin_and_loss.*Supported: torchattacks {TORCHATTACKS_SUPPORTED}"):
        tie_aware(Square)

    class PGD(torchattacks.PGD):  # get_logits with another signature
        def get_logits(self, x, *a):
            return x

    with pytest.raises(ImportError, match=r"PGD.get_logits\(self, inputs"):
        tie_aware(PGD)
    assert tie_aware(torchattacks.PGD).__name__ == "TieAwarePGD"  # the installed one passes


def test_the_supported_range_is_pinned_in_pyproject():
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.findall(r'"(torchattacks[^"]*)"', text) == [f"torchattacks{TORCHATTACKS_SUPPORTED}"]

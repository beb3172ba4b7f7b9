"""Old names users call keep working for one release, and say what replaced them."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

import attacks
import snncertify
from snncertify import certify


def test_bnet_certify_warns_and_gives_what_certified_gives():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.5, init_hidden=True, output=True))
    bnet = certify(net, 3)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(5, dtype=torch.long)
    with pytest.warns(DeprecationWarning, match="renamed BoundedSNN.certified"):
        old = bnet.certify(x, y, 0.01)
    assert torch.equal(old, bnet.certified(x, y, 0.01))


def test_moved_functions_are_the_same_objects_at_their_old_paths():
    from attacks.classifier import strict_correct as from_classifier
    from snncertify.train import main, train_model
    from snncertify.training.cli import main as cli_main
    from snncertify.training.run import train_model as run_train_model

    assert attacks.strict_correct is snncertify.strict_correct is from_classifier
    assert main is cli_main and train_model is run_train_model

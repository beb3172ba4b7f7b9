"""One config per run: TrainConfig round-trips through config.json, the CLI and zoo cards."""

from __future__ import annotations

import dataclasses
import json
import shlex

import pytest
import torch

import zoo
from snncertify import certify
from snncertify.training import (
    DEFENSES,
    PGDAT,
    Certified,
    NeuronConfig,
    OptimConfig,
    TrainConfig,
    Trainer,
    build_arch,
    build_defense,
    make_loader,
    train_model,
)
from snncertify.training.cli import build_parser, parse_config
from snncertify.training.config import card_training
from snncertify.training.defenses import options

CONFIGS = [
    TrainConfig(Certified(0.1, "crown-ibp", kappa_end=0.25, cert_steps=2), dataset="mnist",
                steps=6, batch_size=128, optim=OptimConfig(epochs=3, lr=5e-3, grad_clip=1.0),
                neuron=NeuronConfig(beta=0.8, reset="zero"), data_root="/data", out="runs/x",
                limit=100, threads=1, command="python -m snncertify.train --method crown-ibp"),
    TrainConfig(PGDAT(0.05, steps=3, grad="rate"), encoding="rate", seed=4, resume=True),
    TrainConfig(DEFENSES["hire"](eps=0.2, periods=4, step=0.05), progress=False, workers=2),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["certified", "pgd-at", "hire"])
def test_config_round_trips_through_config_json(cfg):
    record = json.loads(json.dumps(cfg.to_record()))
    assert TrainConfig.from_record(record) == cfg.resolved()
    assert cfg.resolved().resolved() == cfg.resolved()


def test_cli_arguments_give_the_config():
    argv = ["--method", "ibp", "--dataset", "mnist", "--eps", "0.1", "--kappa-end", "0.25",
            "--epochs", "3", "--lr", "5e-3", "--beta", "0.8", "--data-root", "/data",
            "--out", "runs/x", "--threads", "1", "--resume"]
    want = TrainConfig(Certified(0.1, "ibp", kappa_end=0.25), dataset="mnist",
                       optim=OptimConfig(epochs=3, lr=5e-3), neuron=NeuronConfig(beta=0.8),
                       data_root="/data", out="runs/x", threads=1, resume=True,
                       command="python -m snncertify.train " + shlex.join(argv))
    assert parse_config(argv) == want
    assert TrainConfig.from_flat({"method": "crown-ibp", "eps": 0.1, "neuron": {"beta": None}}) \
        == TrainConfig(Certified(0.1, "crown-ibp"))


def test_every_card_reads_back_and_its_command_means_the_same():
    for name in zoo.list():
        card = zoo.card(name)
        from_card = TrainConfig.from_card(card)
        argv = shlex.split(card["training"]["command"])[3:]
        parsed = parse_config(argv).resolved()
        where = dict.fromkeys([*parsed.to_record()["run"], "command"])  # where and how
        assert dataclasses.replace(parsed, **where) == dataclasses.replace(from_card, **where), name
        record = parsed.to_record()
        for key in ("dataset", "arch", "neuron", "certify", "defense", "defense_params", "optim",
                    "batch_size", "seed"):
            assert record[key] == (card | card["training"])[key], (name, key)
        assert set(card_training(record)) == set(card["training"]), name


def test_old_homes_still_import():
    import attacks
    import attacks.classifier
    import snncertify
    import snncertify.train
    from snncertify.correctness import strict_correct
    from snncertify.training import cli

    assert snncertify.train.main is cli.main and snncertify.train.train_model is train_model
    assert attacks.strict_correct is attacks.classifier.strict_correct is strict_correct
    assert snncertify.strict_correct is strict_correct
    assert strict_correct(torch.tensor([[1.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 0])).tolist() \
        == [False, True]  # a tie is wrong


def test_defense_flags_come_from_the_defense_fields():
    flags = {a.dest for a in build_parser()._actions}
    for cls in DEFENSES.values():
        assert set(options(cls)) <= flags, cls.name
    assert {"bound_method", "pgd_steps", "step_size", "kappa_end", "periods"} <= flags
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not top & {k for cls in DEFENSES.values() for k in options(cls)}  # no name clash
    assert build_defense("pgd-at", {"eps": 0.1, "pgd_steps": 2, "step_size": None}) == PGDAT(0.1, 2)
    assert DEFENSES["hire"](step=0.1).hparams()["grad"] == "bptt"


def test_a_wrong_setting_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['epoch'\]"):
        TrainConfig.from_flat({"method": "clean", "epoch": 3})
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['lr_rate'\]"):
        train_model("clean", lr_rate=0.1)
    with pytest.raises(ValueError, match=r"unknown optim setting\(s\) \['lrr'\]"):
        OptimConfig.from_record({"optimizer": "adam", "lrr": 1.0})
    with pytest.raises(ValueError, match=r"unknown neuron setting\(s\) \['tau'\]"):
        TrainConfig.from_flat({"method": "clean", "neuron": {"tau": 2.0}})
    with pytest.raises(ValueError, match=r"unknown loader setting\(s\) \['limt'\]"):
        make_loader("digits", None, True, 8, limt=3)
    with pytest.raises(ValueError, match=r"unknown optim setting\(s\) \['epoch'\]"):
        Trainer(certify(build_arch("digits-fc"), 2), Certified(0.1), epoch=2)
    with pytest.raises(ValueError, match=r"unknown config.json run setting\(s\) \['gpu'\]"):
        TrainConfig.from_record(CONFIGS[1].to_record() | {"run": {"gpu": 1}})
    with pytest.raises(ValueError, match="does not apply to the 'clean' defense"):
        TrainConfig.from_flat({"method": "clean", "kappa_end": 0.5})
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        OptimConfig(schedule="linear")
    with pytest.raises(ValueError, match="unknown bound_method 'crown'"):
        Certified(0.1, "crown")
    with pytest.raises(ValueError, match="conflicts with --bound-method"):
        build_defense("ibp", {"eps": 0.1, "bound_method": "crown-ibp"})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--method", "clean", "--out", "x", "--kapa-end", "1"])


def test_config_and_keyword_forms_train_the_same_weights(tmp_path):
    small = {"limit": 64, "test_limit": 32, "batch_size": 32, "steps": 3, "progress": False}
    _, a = train_model("ibp", eps=0.1, ramp=0.0, epochs=1, out=tmp_path / "a", **small)
    cfg = TrainConfig(Certified(0.1, ramp=0.0), optim=OptimConfig(epochs=1),
                      out=str(tmp_path / "b"), **small)
    _, b = train_model(cfg)
    weights = [torch.load(tmp_path / d / "model.pt", weights_only=True) for d in "ab"]
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())
    assert TrainConfig.from_record(b) == cfg.resolved()
    assert a["defense_params"] == b["defense_params"] and a["optim"] == b["optim"]

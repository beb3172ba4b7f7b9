"""``attacks.EvalConfig``: the settings of one evaluation, its JSON round trip, and
``evaluate``'s keywords (``bounds=``, the deprecated ``certify=``) building it."""

from __future__ import annotations

import json

import pytest
import torch

import attacks
from attacks import EvalConfig
from zoo.measure import default_protocol, eval_config


def test_config_round_trips_through_json():
    cfg = EvalConfig(eps=[0.02, 0.1], attacks=["fgsm", "square(n_queries=50)@rate"],
                     bounds="ibp", seed=3, batch_size=7, device=torch.device("cpu"),
                     expect_broken_at=0.1, exact=True)
    assert cfg.eps == (0.02, 0.1) and cfg.bounds == ("ibp",)
    back = EvalConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == EvalConfig(**{**cfg.to_dict(), "device": "cpu"})
    assert back.to_dict() == cfg.to_dict()


def test_config_refuses_bad_settings():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EvalConfig(eps=[1.5])
    with pytest.raises(ValueError, match="unknown settings.*'certfy'"):
        EvalConfig.from_dict({"eps": [0.1], "certfy": "ibp"})
    with pytest.raises(ValueError, match="instances"):
        EvalConfig(eps=[0.1], attacks=[attacks.PGD()]).to_dict()


def test_zoo_protocol_is_an_eval_config():
    proto = default_protocol("digits", 0.1)
    cfg = eval_config(proto, progress=False)
    assert (list(cfg.eps), list(cfg.attacks), list(cfg.bounds)) == (
        proto["eps"], proto["attacks"], proto["methods"])
    assert (cfg.seed, cfg.batch_size, cfg.progress) == (proto["seed"], proto["batch_size"], False)


def test_keywords_config_and_deprecated_certify_agree(direct_model):
    x, y = direct_model.x[:16], direct_model.y[:16]
    kw = dict(eps=[0.05], attacks=["fgsm"], progress=False, run_sanity_checks=False)
    new = attacks.evaluate(direct_model.bnet, (x, y), bounds=["ibp"], **kw)
    with pytest.warns(DeprecationWarning, match="bounds="):
        old = attacks.evaluate(direct_model.bnet, (x, y), certify=["ibp"], **kw)
    cfg = EvalConfig(eps=[0.05], attacks=["pgd"], bounds=["ibp"], progress=False,
                     run_sanity_checks=False)
    by_cfg = attacks.evaluate(direct_model.bnet, (x, y), attacks=["fgsm"], config=cfg)
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in res]
             for res in (new, old, by_cfg)]
    assert strip[0] == strip[1] == strip[2]
    assert "certified (ibp)" in new.masks[0.05]
    with pytest.raises(TypeError, match="bounds= only"):
        attacks.evaluate(direct_model.bnet, (x, y), bounds="ibp", certify="ibp", **kw)
    with pytest.raises(TypeError, match="unknown settings.*'bound'"):
        attacks.evaluate(direct_model.bnet, (x, y), bound="ibp", **kw)
    with pytest.raises(TypeError, match="needs eps"):
        attacks.evaluate(direct_model.bnet, (x, y))

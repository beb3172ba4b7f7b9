"""Checkpoints: weights (``torch.load(weights_only=True)``) + a JSON config, written atomically.

A run folder holds

* ``model.pt``: the network's ``state_dict`` (tensors only; never unpickles code);
* ``config.json``: architecture, T, encoding, readout, neuron parameters,
  defense and its hyperparameters, dataset, seed, software versions and
  measured metrics;
* ``resume.pt`` (during training): optimiser, scheduler and epoch, for ``--resume``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import snntorch as snn
import torch
from torch import nn

from ..io import atomic_path, write_text


def versions() -> dict[str, str]:
    """Versions of the software a result depends on."""
    import snntorch
    import torchvision

    import snncertify

    return {"snncertify": snncertify.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "snntorch": snntorch.__version__,
            "python": platform.python_version()}


def neuron_params(net: nn.Module) -> list[dict[str, Any]]:
    """Every Leaky's parameters (dotted name, beta, threshold, reset), for configs."""
    out = []
    for name, m in net.named_modules():
        if isinstance(m, snn.Leaky):
            beta, thr = m.beta.detach(), m.threshold.detach()
            out.append({
                "layer": name, "reset": m.reset_mechanism,
                "beta": beta.item() if beta.numel() == 1 else f"tensor{list(beta.shape)}",
                "threshold": thr.item() if thr.numel() == 1 else f"tensor{list(thr.shape)}",
                "learn_beta": isinstance(m.beta, nn.Parameter),
                "learn_threshold": isinstance(m.threshold, nn.Parameter),
            })
    return out


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(folder: str | os.PathLike, net: nn.Module, config: dict[str, Any]) -> Path:
    """Write ``model.pt`` and ``config.json`` into ``folder`` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_torch({k: v.detach().cpu() for k, v in net.state_dict().items()}, folder / "model.pt")
    write_text(folder / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def load_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint config at {path} (expected model.pt + config.json)")
    return json.loads(path.read_text())


def load_weights(folder: str | os.PathLike, net: nn.Module,
                 map_location: str | torch.device | None = "cpu") -> nn.Module:
    """Load ``folder/model.pt`` into ``net`` (strict), tensors only."""
    path = Path(folder) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}")
    net.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
    return net


def load_checkpoint(folder: str | os.PathLike, map_location=None):
    """``(bnet, config)``: the trained network rebuilt from its config, in eval mode.

    Works for the named architectures (``config["arch"]``); for a network of
    your own, build it and use :func:`load_weights`.
    """
    from .. import certify
    from .archs import build_arch

    cfg = load_config(folder)
    net = build_arch(cfg["arch"], **cfg.get("neuron", {}))
    load_weights(folder, net, map_location)
    c = cfg["certify"]
    bnet = certify(net, c["num_steps"], encoding=c["encoding"], readout=c["readout"],
                   seed=c["seed"])
    return bnet.eval(), cfg

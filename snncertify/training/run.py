"""Train one run from its :class:`~snncertify.training.config.TrainConfig`: :func:`train_model`.

The run folder (``config.out``) gets ``model.pt`` (weights only) and ``config.json``
(everything needed to rebuild and re-measure the model, with the measured clean test
accuracy); ``resume`` continues an interrupted run. Under ``torchrun`` it trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA); ``batch_size`` is then the GLOBAL batch.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .. import certify
from ..wrapper import BoundedSNN
from .archs import build_arch
from .config import TrainConfig
from .datasets import LoaderOptions, make_loader
from .loop import Trainer, evaluate

#: batch size of the clean-accuracy measurement after training
TEST_BATCH = 256


def setup_distributed(device: str | None) -> str:
    """Join the torchrun process group when launched by torchrun; returns the device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device or "cpu"
    cuda = (device or "cpu").startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def as_config(config: TrainConfig | str, settings: dict[str, Any]) -> TrainConfig:
    """``config`` itself, or the config of method ``config`` with keywords ``settings``
    (:meth:`TrainConfig.from_flat`)."""
    if isinstance(config, TrainConfig):
        if settings:
            raise ValueError(f"train_model: pass a TrainConfig or a method with keywords, not "
                             f"both (got {sorted(settings)})")
        return config
    return TrainConfig.from_flat({"method": config, **settings})


def build_model(cfg: TrainConfig) -> BoundedSNN:
    """The named architecture, initialised under ``cfg.seed``, wrapped by ``certify``
    (``cfg`` resolved)."""
    torch.manual_seed(cfg.seed)
    net = build_arch(cfg.arch, **cfg.neuron.overrides())
    return certify(net, cfg.steps, encoding=cfg.encoding, readout=cfg.readout, seed=cfg.seed)


def build_loaders(cfg: TrainConfig) -> tuple[DataLoader, DataLoader]:
    """``(train, test)`` loaders of ``cfg`` (resolved): the train order seeded by ``cfg.seed``."""
    train = make_loader(cfg.dataset, cfg.data_root, True, cfg.batch_size, LoaderOptions(
        seed=cfg.seed, num_steps=cfg.steps, limit=cfg.limit, num_workers=cfg.workers))
    test = make_loader(cfg.dataset, cfg.data_root, False, TEST_BATCH, LoaderOptions(
        num_steps=cfg.steps, limit=cfg.test_limit, num_workers=cfg.workers))
    return train, test


def record_metrics(trainer: Trainer, test: DataLoader) -> dict[str, Any]:
    """The run's config with ``metrics`` (rank 0: clean test accuracy, strict; mean epoch
    seconds), saved again; other ranks return the config without them."""
    cfg = trainer.config()
    if trainer.rank != 0:
        return cfg
    seconds = cfg["history"]["epoch_seconds"]
    cfg["metrics"] = {"clean_accuracy": evaluate(trainer.bnet, test, trainer.device),
                      "n_test": len(test.dataset),
                      "epoch_seconds_mean": sum(seconds) / max(len(seconds), 1)}
    trainer.extra["metrics"] = cfg["metrics"]
    trainer.save()
    return cfg


def train_model(config: TrainConfig | str, /, **settings: Any) -> tuple[BoundedSNN, dict[str, Any]]:
    """Train one run; returns ``(bnet, record)``, ``record`` the run's ``config.json``.

    ``train_model(TrainConfig(...))``, or ``train_model(method, **settings)`` with the flat
    keywords of :meth:`TrainConfig.from_flat`, e.g. ``train_model("ibp", eps=0.1,
    dataset="mnist", data_root=..., epochs=15, kappa_end=0.25, out="runs/x")``; a defense
    option left None keeps the defense's default, one the defense does not take is an error.
    """
    cfg = as_config(config, settings).resolved()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = setup_distributed(cfg.device)
    bnet = build_model(cfg)
    train, test = build_loaders(cfg)
    trainer = Trainer(bnet, cfg.defense, cfg.optim, seed=cfg.seed, device=device, out=cfg.out,
                      progress=cfg.progress)
    trainer.extra.update(cfg.to_record(), train_samples=len(train.dataset))
    trainer.fit(train, None, resume=cfg.resume)
    return bnet, record_metrics(trainer, test)

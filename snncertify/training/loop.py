"""The one training loop every defense runs in.

:class:`Trainer` owns the device, the data order, the rate-noise draws, the
optimiser and learning-rate schedule, the progress bar, checkpoints and
``--resume``, and DistributedDataParallel; a
:class:`~snncertify.training.defenses.Defense` only turns a batch into a loss.

Determinism: the sample order, the rate-noise draws and torch's global RNG
(dropout, augmentation, Gaussian noise) are re-seeded from ``(seed, epoch)``
at the start of every epoch, so a run resumed from a checkpoint continues
exactly as the uninterrupted run would (on a given device).

Distributed (``torchrun``; gloo on CPU, nccl on CUDA): every rank walks the
SAME global batches (the single-process order) and takes its contiguous
share of each; the loss is computed inside the DDP-wrapped module's forward
(bounds included) so DDP reduces every gradient, and is weighted by the
share's size so the averaged gradient is the global batch's mean gradient:
weights after a step equal a single-process step on the global batch up to
float rounding (for defenses without randomness of their own; BatchNorm
statistics stay per rank, as without SyncBatchNorm).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler

from ..correctness import strict_correct
from ..progress import progress_bar
from ..wrapper import BoundedSNN
from .checkpoint import load_config, neuron_params, save_checkpoint, save_torch, versions
from .config import OptimConfig
from .defenses import Certified, Clean, Defense
from .options import build


class _LossModule(nn.Module):
    """The defense's loss as a module's forward, so DDP sees every use of the parameters."""

    def __init__(self, bnet: BoundedSNN, defense: Defense) -> None:
        super().__init__()
        self.bnet = bnet
        self.defense = defense

    def forward(self, x, y, noise, progress, **kw):
        return self.defense.loss(self.bnet, x, y, noise, progress, **kw)


@torch.no_grad()
def evaluate(bnet: BoundedSNN, loader: DataLoader, device: str | torch.device = "cpu") -> float:
    """Clean accuracy over ``loader`` (default rate draw; a tie counts as an error)."""
    was = bnet.training
    bnet.eval()
    hits = total = 0
    try:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            hits += int(strict_correct(bnet(x), y).sum())
            total += len(y)
    finally:
        bnet.train(was)
    return hits / max(total, 1)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Train ``bnet`` with ``defense``.

    Args:
        bnet: the network (``certify(net, ...)``); trained in place.
        defense: a :class:`Defense` (``make_defense(name, ...)``).
        optim: epochs, Adam's learning rate and weight decay, the schedule, gradient
            clipping (:class:`~snncertify.training.config.OptimConfig`); or its fields as
            keywords ``optim_settings`` (``epochs=2, schedule="constant"``).
        seed: seeds data order, noise draws and torch's RNG (per epoch).
        device: ``"cpu"``, ``"cuda"``, ... (default: where ``bnet`` is).
        out: run folder for checkpoints (None: none written).
        progress: tqdm bars (rank 0 only).

    ``extra``: entries added to ``config.json`` (dataset, arch, command, ...).
    """

    def __init__(self, bnet: BoundedSNN, defense: Defense, optim: OptimConfig | None = None, *,
                 seed: int = 0, device: str | torch.device | None = None,
                 out: str | Path | None = None, progress: bool = True,
                 **optim_settings: Any) -> None:
        if optim is not None and optim_settings:
            raise ValueError("Trainer: pass an OptimConfig or its fields as keywords, not both")
        self.optim = optim or build(OptimConfig, optim_settings, "optim")
        self.bnet, self.defense, self.seed = bnet, defense, int(seed)
        if device is None:
            device = next(bnet.parameters()).device
        self.device = torch.device(device)
        self.out = Path(out) if out is not None else None
        self.extra: dict[str, Any] = {}
        self.rank, self.world = _world()
        self.progress = progress and self.rank == 0
        bnet.to(self.device)
        self.module: nn.Module = _LossModule(bnet, defense)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        self.opt = torch.optim.Adam(bnet.parameters(), lr=self.optim.lr,
                                    weight_decay=self.optim.weight_decay)
        self.history: dict[str, list] = {"loss": [], "epoch_seconds": [], "test_accuracy": []}
        self.epoch = 0

    @property
    def epochs(self) -> int:
        return self.optim.epochs

    # ------------------------------------------------------------------ data
    def _batches(self, n: int, batch_size: int, shuffle: bool, drop_last: bool) -> list[Tensor]:
        """This rank's index lists for the current epoch (its share of every global batch)."""
        if shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        glob = list(order.split(batch_size))
        last = len(glob[-1]) if glob else batch_size
        if (drop_last and last < batch_size) or last < self.world:  # every rank needs samples
            glob.pop()
        return glob

    def _loader(self, loader: DataLoader) -> tuple[DataLoader, list[Tensor]]:
        shuffle = isinstance(loader.sampler, RandomSampler)
        if loader.batch_size is None:
            raise ValueError("the training DataLoader must have a batch_size")
        if loader.batch_size < self.world:
            raise ValueError(f"batch size {loader.batch_size} < {self.world} processes")
        glob = self._batches(len(loader.dataset), loader.batch_size, shuffle, loader.drop_last)
        mine = [g.tensor_split(self.world)[self.rank].tolist() for g in glob]
        dl = DataLoader(loader.dataset, batch_sampler=mine, collate_fn=loader.collate_fn,
                        num_workers=loader.num_workers)
        return dl, glob

    # --------------------------------------------------------------- updates
    def _lr_factor(self, update: int) -> float:
        if self.optim.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(update, self.total_updates) / self.total_updates))

    def _step(self, weight: float):
        def step(x, y, noise, progress, **kw) -> float:
            for g in self.opt.param_groups:
                g["lr"] = self.optim.lr * self._lr_factor(self.updates)
            loss = self.module(x, y, noise, progress, **kw)
            self.opt.zero_grad(set_to_none=True)
            (loss * weight).backward()
            if self.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.bnet.parameters(), self.optim.grad_clip)
            self.opt.step()
            self.updates += 1
            return float(loss.detach())

        return step

    # ----------------------------------------------------------- checkpoints
    def config(self) -> dict[str, Any]:
        b = self.bnet
        return {
            **self.extra,
            "certify": {"num_steps": b.num_steps, "encoding": b.encoding.name, "readout": b.readout,
                        "seed": b.seed},
            "neurons": neuron_params(b.net),
            "defense": self.defense.name,
            "defense_params": self.defense.hparams(),
            "optim": self.optim.to_record(),
            "seed": self.seed,
            "world_size": self.world,
            "device": str(self.device),
            "versions": versions(),
            "history": self.history,
            "epochs_done": self.epoch,
        }

    def save(self) -> None:
        if self.out is None or self.rank != 0:
            return
        save_torch({"model": self.bnet.net.state_dict(), "optimizer": self.opt.state_dict(),
                    "epoch": self.epoch, "updates": self.updates}, self.out / "resume.pt")
        save_checkpoint(self.out, self.bnet.net, self.config())

    def resume(self) -> None:
        """Continue from ``out/resume.pt`` (ValueError if the run's settings differ)."""
        if self.out is None or not (self.out / "resume.pt").is_file():
            raise FileNotFoundError(f"nothing to resume: no {self.out}/resume.pt")
        cfg = load_config(self.out)
        for key in ("defense", "defense_params", "seed", "certify"):
            now = self.config()[key]
            if not json_equal(cfg.get(key), now):
                raise ValueError(f"--resume: the run in {self.out} has {key}={cfg.get(key)!r}, "
                                 f"this one {now!r}")
        state = torch.load(self.out / "resume.pt", map_location=self.device, weights_only=True)
        self.bnet.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.epoch, self.updates = int(state["epoch"]), int(state["updates"])
        self.history = cfg["history"]

    # ------------------------------------------------------------------ fit
    def fit(self, train: DataLoader, test: DataLoader | None = None, resume: bool = False,
            until: int | None = None) -> dict[str, list]:
        """Train for the remaining epochs (or up to epoch ``until``, e.g. to split a long run
        over sessions; the schedule stays that of ``epochs``); returns the history (loss,
        seconds per epoch, test accuracy per epoch when ``test`` is given)."""
        self.updates = 0
        per_batch = self.defense.updates_per_batch
        if resume:
            self.resume()
        nb = len(self._batches(len(train.dataset), train.batch_size, False, train.drop_last))
        self.total_updates = max(1, self.epochs * nb * per_batch)
        bar = progress_bar(total=self.epochs * nb, disable=not self.progress,
                           desc=f"train {self.defense.name}", unit="batch")
        bar.update(self.epoch * nb)  # resumed: the epochs already done
        stop = self.epochs if until is None else min(int(until), self.epochs)
        while self.epoch < stop:
            torch.manual_seed(self.seed * 1_000_003 + self.epoch * 101 + self.rank)
            noise_gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            loader, glob = self._loader(train)
            self.bnet.train()
            start, total, seen = time.perf_counter(), 0.0, 0
            for b, ((x, y), g) in enumerate(zip(loader, glob, strict=True)):
                noise = None
                full = self.bnet.encoding.fresh_noise(
                    self.bnet.num_steps, (len(g), *x.shape[1:]), noise_gen)
                if full is not None:  # the global batch's draw, this rank's columns
                    lo = sum(len(c) for c in g.tensor_split(self.world)[: self.rank])
                    noise = full[:, lo : lo + len(y)].to(self.device)
                x, y = x.to(self.device), y.to(self.device)
                progress = (self.epoch * nb + b) / (self.epochs * nb)
                weight = len(y) * self.world / len(g)
                loss = self.defense.train_batch(self._step(weight), x, y, noise, progress)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"{self.defense.name}: loss is {loss} at epoch {self.epoch}, batch {b}; "
                        "lower the learning rate or the logit scale")
                total += loss * len(g)
                seen += len(g)
                bar.update(1)
                bar.set_postfix(epoch=self.epoch + 1, loss=f"{loss:.3f}")
            self.history["epoch_seconds"].append(time.perf_counter() - start)
            self.history["loss"].append(total / max(seen, 1))
            self.epoch += 1
            if test is not None and self.rank == 0:
                self.history["test_accuracy"].append(evaluate(self.bnet, test, self.device))
            self.save()
        bar.close()
        self.bnet.eval()
        return self.history


def json_equal(a, b) -> bool:
    """Compare through JSON (tuples vs lists, int vs float keys as stored)."""
    import json

    return json.loads(json.dumps(a, sort_keys=True)) == json.loads(json.dumps(b, sort_keys=True))


# ------------------------------------------------------- tensors in memory
def _tensor_loader(x: Tensor, y: Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    from torch.utils.data import TensorDataset

    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


#: :func:`train_tensors`' optimiser unless told otherwise
TENSOR_OPTIM = OptimConfig(lr=5e-3, schedule="constant")


def train_tensors(bnet: BoundedSNN, x: Tensor, y: Tensor, defense: Defense, *,
                  batch_size: int = 64, seed: int = 0, progress: bool = True,
                  **optim_settings: Any) -> list[float]:
    """:class:`Trainer` over in-memory tensors ``x`` ``[N, ...]``, ``y`` ``[N]`` (small data sets,
    tests); returns each epoch's mean loss. ``optim_settings``: :class:`OptimConfig` fields
    over :data:`TENSOR_OPTIM` (``epochs=10, lr=5e-3, schedule="constant"``)."""
    unknown = sorted(set(optim_settings) - {f.name for f in dataclasses.fields(OptimConfig)})
    if unknown:
        raise ValueError(f"unknown train_tensors setting(s) {unknown}; known: batch_size, seed, "
                         f"progress and the OptimConfig fields")
    optim = dataclasses.replace(TENSOR_OPTIM, **optim_settings)
    trainer = Trainer(bnet, defense, optim, seed=seed, progress=progress)
    return trainer.fit(_tensor_loader(x, y, batch_size, True))["loss"]


def _train_defense(cls: type[Defense], bnet: BoundedSNN, x: Tensor, y: Tensor,
                   settings: dict[str, Any]) -> list[float]:
    """:func:`train_tensors` with ``cls(**its fields of settings)``; the rest of ``settings``
    goes to :func:`train_tensors`."""
    mine = {f.name for f in dataclasses.fields(cls) if f.init}
    defense = cls(**{k: settings.pop(k) for k in list(settings) if k in mine})
    return train_tensors(bnet, x, y, defense, **settings)


def train_clean(bnet: BoundedSNN, x: Tensor, y: Tensor, **settings: Any) -> list[float]:
    """Clean BPTT on tensors: ``settings`` are :class:`~snncertify.training.defenses.Clean`'s
    (``logit_scale``) and :func:`train_tensors`' keywords."""
    return _train_defense(Clean, bnet, x, y, settings)


def train_certified(bnet: BoundedSNN, x: Tensor, y: Tensor, eps: float,
                    **settings: Any) -> list[float]:
    """Certified training on tensors: ``settings`` are
    :class:`~snncertify.training.defenses.Certified`'s (``method``, ``kappa_end``, ``ramp``,
    ``logit_scale``, ...) and :func:`train_tensors`' keywords."""
    return _train_defense(Certified, bnet, x, y, {"eps": eps, **settings})


def evaluate_accuracy(bnet: BoundedSNN, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Clean accuracy on tensors (a tie is an error)."""
    return evaluate(bnet, _tensor_loader(x, y, batch_size, False), x.device)

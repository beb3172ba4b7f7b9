"""One config per training run: :class:`TrainConfig` (with its :class:`OptimConfig`,
:class:`NeuronConfig` and the defense, a :class:`~snncertify.training.defenses.Defense`).

The command line (:mod:`snncertify.training.cli` builds its flags from these fields),
the Python API (``train_model(config)`` or ``train_model(method, **settings)``), the
run's ``config.json`` (:meth:`TrainConfig.to_record` / :meth:`TrainConfig.from_record`)
and a zoo card's ``training`` section (:func:`card_training`,
:meth:`TrainConfig.from_card`) read and write this one object. Defaults live in the
fields, nowhere else.

``config.json`` keys (unchanged from earlier runs, so old runs and cards load):
``dataset``, ``arch``, ``neuron`` (the overrides only), ``batch_size``, ``command``,
``certify`` (``num_steps``, ``encoding``, ``readout``, ``seed``), ``defense``,
``defense_params`` (by field name), ``optim`` (``optimizer`` ``"adam"`` and the
:class:`OptimConfig` fields), ``seed``; new: ``run`` (where and how the run was done:
data root, output folder, device, limits, workers, threads).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from .archs import ARCHS
from .datasets import DATASETS
from .defenses import DEFENSES, Defense, build_defense, defense_from_params, options
from .options import build, check, option

#: the architecture a data set trains by default
DEFAULT_ARCH = {"digits": "digits-fc", "mnist": "mnist-fc", "fashion-mnist": "mnist-fc",
                "cifar10": "cifar-conv", "nmnist": "nmnist-fc"}

#: the keys of a run's record that a zoo card keeps in its ``training`` section
CARD_TRAINING_KEYS = ("defense", "defense_params", "optim", "batch_size", "epochs_done", "seed",
                      "train_samples", "device", "world_size", "command")


@dataclasses.dataclass
class OptimConfig:
    """Adam and its learning-rate schedule (``config.json``'s ``optim``)."""

    epochs: int = option("passes over the training data", 10)
    lr: float = option("Adam learning rate (peak of the cosine schedule)", 1e-3)
    schedule: str = option("cosine: per update, to 0", "cosine", choices=("cosine", "constant"))
    weight_decay: float = option("Adam's (L2) weight decay", 0.0)
    grad_clip: float | None = option("max gradient norm (None: no clipping)", None)

    def __post_init__(self) -> None:
        check(self)
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def to_record(self) -> dict[str, Any]:
        return {"optimizer": "adam", **dataclasses.asdict(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OptimConfig:
        rest = dict(record)
        if rest.pop("optimizer", "adam") != "adam":
            raise ValueError(f"optim: only adam is supported, got {record['optimizer']!r}")
        return build(cls, rest, "optim")


@dataclasses.dataclass
class NeuronConfig:
    """Overrides of the architecture's Leaky parameters (None: the architecture's)."""

    beta: float | None = option("membrane decay of every Leaky", None)
    threshold: float | None = option("firing threshold of every Leaky", None)
    reset: str | None = option("reset mechanism", None, choices=("subtract", "zero", "none"))

    def __post_init__(self) -> None:
        check(self)

    def overrides(self) -> dict[str, Any]:
        """The set fields (keywords of ``build_arch``; ``config.json``'s ``neuron``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; ``python -m snncertify.train`` flags are its fields.

    ``defense`` is built from ``--method`` and the defense options
    (:func:`~snncertify.training.defenses.build_defense`). ``arch``, ``steps`` and
    ``encoding`` left None take the data set's / architecture's default
    (:meth:`resolved`). The last group of fields says where and how the run is done
    and does not change what is trained.
    """

    defense: Defense = option("the defense and its hyperparameters", cli=False)
    dataset: str = option("data set", "digits", choices=tuple(DATASETS))
    arch: str | None = option("architecture (default: the data set's)", None,
                              choices=tuple(ARCHS))
    steps: int | None = option("time steps T (default: the architecture's)", None)
    batch_size: int = option("global batch size", 64)
    optim: OptimConfig = option("optimiser", factory=OptimConfig)
    encoding: str | None = option("input encoding (default: the data set's)", None,
                                  choices=("direct", "rate", "event"))
    readout: str = option("score of a class", "rate", choices=("rate", "count", "membrane"))
    seed: int = option("seeds weights, data order and noise draws", 0)
    neuron: NeuronConfig = option("neurons (override the architecture's)", factory=NeuronConfig)
    # where and how
    data_root: str | None = option("folder with the data set (see the README's layouts)", None)
    out: str | None = option("run folder (model.pt, config.json)", None)
    device: str | None = option("cpu (default), cuda, cuda:1, ...", None)
    resume: bool = option("continue the run in --out", False)
    limit: int | None = option("train on the first N training samples only", None)
    test_limit: int | None = option("measure on the first N test samples only", None)
    workers: int = option("DataLoader worker processes", 0)
    threads: int | None = option("torch CPU threads", None)
    progress: bool = option("tqdm progress bars", True, cli=False)
    command: str | None = option("the command line that started the run", None, cli=False)

    def __post_init__(self) -> None:
        check(self)
        self.data_root = None if self.data_root is None else os.fspath(self.data_root)
        self.out = None if self.out is None else os.fspath(self.out)
        arch = self.arch or DEFAULT_ARCH[self.dataset]
        info, spec = DATASETS[self.dataset], ARCHS[arch]
        if tuple(spec.input_shape) != tuple(info.input_shape) and not (
                len(spec.input_shape) == 3 and spec.input_shape[1:] == info.input_shape[1:]):
            raise ValueError(f"architecture {arch!r} takes inputs {list(spec.input_shape)}, "
                             f"data set {self.dataset!r} gives {list(info.input_shape)}")

    def resolved(self) -> TrainConfig:
        """A copy with ``arch``, ``steps`` and ``encoding`` defaults filled in."""
        arch = self.arch or DEFAULT_ARCH[self.dataset]
        return dataclasses.replace(self, arch=arch, steps=self.steps or ARCHS[arch].num_steps,
                                   encoding=self.encoding or DATASETS[self.dataset].encoding)

    # ------------------------------------------------------------ keywords
    @classmethod
    def from_flat(cls, settings: Mapping[str, Any]) -> TrainConfig:
        """From flat keywords (``train_model``'s, the CLI's): ``method``, the defense options
        (``eps``, ``bound_method``, ``pgd_steps``, ...; None: the default), the
        :class:`OptimConfig` fields, ``neuron`` (a dict or :class:`NeuronConfig`) or its
        fields, and the other fields. ValueError for a setting no part takes."""
        rest = dict(settings)
        if "method" not in rest:
            raise ValueError("a training run needs a method (--method): one of the defenses "
                             "or their aliases (snncertify.training.METHODS)")
        method = rest.pop("method")
        known = _defense_option_names()
        defense = build_defense(method, {k: rest.pop(k) for k in list(rest) if k in known})
        optim = build(OptimConfig, _take(rest, OptimConfig), "optim")
        neuron = rest.pop("neuron", None) or _take(rest, NeuronConfig)
        if isinstance(neuron, Mapping):
            neuron = build(NeuronConfig, {k: v for k, v in neuron.items() if v is not None},
                           "neuron")
        return build(cls, {**rest, "defense": defense, "optim": optim, "neuron": neuron},
                     "training")

    # --------------------------------------------------------- config.json
    def to_record(self) -> dict[str, Any]:
        """The run's entries of ``config.json`` (of the :meth:`resolved` config)."""
        c = self.resolved()
        run = {f.name: getattr(c, f.name) for f in _run_fields()}
        return {"dataset": c.dataset, "arch": c.arch, "neuron": c.neuron.overrides(),
                "batch_size": c.batch_size, "command": c.command,
                "certify": {"num_steps": c.steps, "encoding": c.encoding, "readout": c.readout,
                            "seed": c.seed},
                "defense": c.defense.name, "defense_params": c.defense.hparams(),
                "optim": c.optim.to_record(), "seed": c.seed, "run": run}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrainConfig:
        """From a ``config.json`` (runs written before the ``run`` entry load too)."""
        c = record["certify"]
        if c.get("seed", record["seed"]) != record["seed"]:
            raise ValueError(f"config: certify seed {c['seed']} != training seed "
                             f"{record['seed']}")
        return build(cls, {
            "defense": defense_from_params(record["defense"], record["defense_params"]),
            "dataset": record["dataset"], "arch": record["arch"], "steps": c["num_steps"],
            "batch_size": record["batch_size"], "optim": OptimConfig.from_record(record["optim"]),
            "encoding": c["encoding"], "readout": c["readout"], "seed": record["seed"],
            "neuron": build(NeuronConfig, record.get("neuron") or {}, "neuron"),
            "command": record.get("command"), **record.get("run", {}),
        }, "config.json run")

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> TrainConfig:
        """From a zoo card (its ``dataset``, ``arch``, ``neuron``, ``certify`` and ``training``)."""
        return cls.from_record({**card, **card["training"]})


def card_training(record: Mapping[str, Any]) -> dict[str, Any]:
    """A zoo card's ``training`` section from a run's ``config.json`` ``record``."""
    return {k: record.get(k) for k in CARD_TRAINING_KEYS} | {
        "epoch_seconds_mean": record.get("metrics", {}).get("epoch_seconds_mean")}


def _run_fields() -> list[dataclasses.Field]:
    """The fields of :class:`TrainConfig` after ``neuron``: where and how, in ``run``."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return [f for f in dataclasses.fields(TrainConfig)[names.index("data_root"):]
            if f.name != "command"]


def _take(settings: dict[str, Any], cls: type) -> dict[str, Any]:
    """Pop the fields of dataclass ``cls`` out of ``settings``."""
    return {f.name: settings.pop(f.name) for f in dataclasses.fields(cls) if f.name in settings}


def _defense_option_names() -> set[str]:
    return {name for cls in DEFENSES.values() for name in options(cls)}

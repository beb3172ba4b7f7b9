"""Training: data sets, named architectures, defenses on one loop, checkpoints, one config per run.

This layer sits above :mod:`attacks` (PGD-AT, HIRE and Robust-Stable attack
during training); ``snncertify/__init__`` never imports it. Inside it, modules
import downwards only: ``options`` <- ``datasets``, ``archs``, ``defenses``,
``checkpoint`` <- ``config`` <- ``loop`` <- ``run`` <- ``cli``.
"""

from .archs import ARCHS, build_arch
from .checkpoint import load_checkpoint, save_checkpoint
from .config import NeuronConfig, OptimConfig, TrainConfig
from .datasets import (
    DATASETS,
    LoaderOptions,
    load_dataset,
    load_digits_split,
    load_mnist,
    make_loader,
    test_subset,
)
from .defenses import (
    DEFENSES,
    METHODS,
    PGDAT,
    Certified,
    Clean,
    Defense,
    Hire,
    Stable,
    build_defense,
    make_defense,
)
from .loop import (
    Trainer,
    evaluate,
    evaluate_accuracy,
    train_certified,
    train_clean,
    train_tensors,
)
from .run import train_model

__all__ = [
    "ARCHS",
    "DATASETS",
    "DEFENSES",
    "METHODS",
    "PGDAT",
    "Certified",
    "Clean",
    "Defense",
    "Hire",
    "LoaderOptions",
    "NeuronConfig",
    "OptimConfig",
    "Stable",
    "TrainConfig",
    "Trainer",
    "build_arch",
    "build_defense",
    "evaluate",
    "evaluate_accuracy",
    "load_checkpoint",
    "load_dataset",
    "load_digits_split",
    "load_mnist",
    "make_defense",
    "make_loader",
    "save_checkpoint",
    "test_subset",
    "train_certified",
    "train_clean",
    "train_model",
    "train_tensors",
]

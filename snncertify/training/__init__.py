"""Training: data sets, named architectures, defenses on one loop, checkpoints.

This layer sits above :mod:`attacks` (PGD-AT, HIRE and Robust-Stable attack
during training); ``snncertify/__init__`` never imports it.
"""

from .archs import ARCHS, build_arch
from .checkpoint import load_checkpoint, save_checkpoint
from .data import load_digits_split, load_mnist
from .datasets import DATASETS, load_dataset, make_loader, test_subset
from .defenses import DEFENSES, PGDAT, Certified, Clean, Defense, Hire, Stable, make_defense
from .loop import (
    Trainer,
    evaluate,
    evaluate_accuracy,
    train_certified,
    train_clean,
    train_tensors,
)

__all__ = [
    "ARCHS",
    "DATASETS",
    "DEFENSES",
    "PGDAT",
    "Certified",
    "Clean",
    "Defense",
    "Hire",
    "Stable",
    "Trainer",
    "build_arch",
    "evaluate",
    "evaluate_accuracy",
    "load_checkpoint",
    "load_dataset",
    "load_digits_split",
    "load_mnist",
    "make_defense",
    "make_loader",
    "test_subset",
    "save_checkpoint",
    "train_certified",
    "train_clean",
    "train_tensors",
]

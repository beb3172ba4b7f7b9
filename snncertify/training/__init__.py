"""Training: data sets and loops (clean BPTT and certified training; more defenses later)."""

from .certified import certified_loss, train_certified
from .clean import clean_loss, evaluate_accuracy, train, train_clean
from .data import load_digits_split, load_mnist

__all__ = [
    "certified_loss",
    "clean_loss",
    "evaluate_accuracy",
    "load_digits_split",
    "load_mnist",
    "train",
    "train_certified",
    "train_clean",
]

"""Data sets as ``(x, y)`` tensors or loaders, pixels in [0, 1]."""

from __future__ import annotations

import os

import torch
from torch import Tensor


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits (no download): ``x`` ``[N, 64]`` in [0, 1], ``y`` ``[N]``.

    Returns ``(x_train, y_train, x_test, y_test)``, a stratified split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return xtr, ytr, xte, yte


def load_mnist(root: str | os.PathLike, train: bool, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """MNIST through ``torchvision.datasets.MNIST`` (no download): ``x`` ``[N, 1, 28, 28]`` in [0, 1].

    Raises:
        FileNotFoundError: with the expected layout when ``root`` lacks the data.
    """
    from .datasets import load_dataset  # the one MNIST reader (and its missing-data error)

    ds = load_dataset("mnist", root, train, augment=False)
    x = ds.data.float().div(255.0).unsqueeze(1)
    y = ds.targets.clone()
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y

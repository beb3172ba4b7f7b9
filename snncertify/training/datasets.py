"""Real data sets as PyTorch ``Dataset``s / ``DataLoader``s (torchvision and tonic readers, no downloads).

Every data set yields ``(x, y)``: ``x`` a float32 tensor with values in [0, 1], ``y`` an ``int``
label. Shapes per sample (``DatasetInfo.input_shape`` is the shape the network sees per time step):

==============  ===================  =========  ===========================================
name            x per sample          encoding   source / on-disk layout under ``root``
==============  ===================  =========  ===========================================
digits          ``[64]``              direct     scikit-learn's bundled 8x8 digits (``root``
                                                 ignored); pixel / 16; the stratified split of
                                                 ``load_digits_split(0.2, seed=0)``
mnist           ``[1, 28, 28]``       direct     ``torchvision.datasets.MNIST``:
                                                 ``root/MNIST/raw/*-ubyte`` (IDX, uncompressed)
fashion-mnist   ``[1, 28, 28]``       direct     ``torchvision.datasets.FashionMNIST``:
                                                 ``root/FashionMNIST/raw/*-ubyte``
cifar10         ``[3, 32, 32]``       direct     ``root/cifar-10-batches-py/`` (torchvision's
                                                 python pickles) or an image folder
                                                 ``root/{train,test}/<class>/*.png|jpg`` (also
                                                 ``root/CIFAR-10-images/{train,test}/...``)
nmnist          ``[T, 2, 34, 34]``    event      ``tonic.datasets.NMNIST``:
                                                 ``root/NMNIST/{Train,Test}/<digit>/*.bin``
==============  ===================  =========  ===========================================

Units: image pixels are ``ToTensor()``-scaled intensities (byte / 255; digits: value / 16). N-MNIST
events are binned by ``tonic.transforms.ToFrame(sensor_size=NMNIST.sensor_size,
n_time_bins=num_steps)`` (``T = num_steps`` equal time bins spanning each recording, axes
``[T, polarity, y, x]``), then binarised: 1.0 where a pixel had at least one event of that polarity
in that bin, else 0.0. Batches from :func:`make_loader` are ``[B, *input_shape]`` for the direct
data sets and time-major ``[T, B, 2, 34, 34]`` for nmnist (the network wrapper takes frames
``[T, B, ...]``); labels are a LongTensor ``[B]``.

Augmentation (``augment=None``: the standard choice on the train split, never on the test split;
``True`` forces it on either split, ``False`` turns it off). It acts on the [0, 1] tensors and
keeps them in [0, 1] (flips permute pixels, crop padding adds zeros):

- digits, mnist: none (flips or crops change digit identity / are not customary).
- fashion-mnist: ``RandomHorizontalFlip()``.
- cifar10: ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``.
- nmnist: none. Spatial jitter of the events (``tonic.transforms.SpatialJitter``) is possible but
  not a default here.

Augmentation draws from torch's global RNG (or each worker's), not from the loader's ``seed``,
which fixes only the shuffled order.

Missing data raises ``FileNotFoundError`` naming the data set, the root and the expected layout, and
how to fetch it; nothing is ever downloaded here. Two readers are relaxed, only in their integrity
checks, so that small copies (and the tiny fixtures of the tests) load through the real parsers:

- ``CIFAR10``: torchvision checks the md5 sum of every pickle; :class:`CIFAR10Pickles` checks that
  the files are present and parses them with torchvision's own code.
- ``NMNIST``: tonic considers the data present only if ``train.zip``/``test.zip`` exists AND the
  unpacked folder holds at least 10000 ``.bin`` files, and otherwise downloads. The local
  :class:`NMNIST` subclass needs only one ``.bin`` file in ``Train``/``Test`` (no zip) and never
  downloads; reading (``tonic.io.read_mnist_file``, labels from the ``<digit>`` folder) is tonic's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tonic
import torch
import torchvision.datasets as tvd
import torchvision.transforms as tvt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ..encoding import make_encoding
from .options import build

__all__ = [
    "CIFAR10_CLASSES", "DATASETS", "DatasetInfo", "LoaderOptions", "load_dataset", "load_digits_split",
    "load_mnist", "make_loader", "test_subset",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What the network sees of a data set, and where its files must lie.

    Attributes:
        name: key in :data:`DATASETS`.
        input_shape: per-sample shape the network sees per time step.
        num_classes: number of labels ``0 .. num_classes - 1``.
        encoding: ``"direct"`` (pixels in [0, 1], the same frame every step) or ``"event"``.
        layout: the expected on-disk layout under ``--data-root`` (for errors and docs).
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    encoding: str
    layout: str

    @property
    def time_major(self) -> bool:
        """Samples are frames ``[T, ...]``, batched time first ``[T, B, ...]`` (the encoding's)."""
        return make_encoding(self.encoding).time_major


CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", (64,), 10, "direct",
        "bundled with scikit-learn (sklearn.datasets.load_digits); no files, root is ignored",
    ),
    "mnist": DatasetInfo(
        "mnist", (1, 28, 28), 10, "direct",
        "<root>/MNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte "
        "(torchvision's layout, uncompressed IDX files)",
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", (1, 28, 28), 10, "direct",
        "<root>/FashionMNIST/raw/{train,t10k}-images-idx3-ubyte and "
        "{train,t10k}-labels-idx1-ubyte (torchvision's layout, uncompressed IDX files)",
    ),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10, "direct",
        "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (torchvision's "
        "python pickles), or an image folder <root>/train/<class>/*.png|jpg and "
        "<root>/test/<class>/... (or <root>/CIFAR-10-images/{train,test}/<class>/...), "
        "<class> a CIFAR-10 class name (airplane .. truck) or its index 0..9",
    ),
    "nmnist": DatasetInfo(
        "nmnist", (2, 34, 34), 10, "event",
        "<root>/NMNIST/Train/<digit>/*.bin and <root>/NMNIST/Test/<digit>/*.bin (tonic's layout: "
        "the unpacked N-MNIST train.zip / test.zip, 40-bit events)",
    ),
}

_HOW_TO_GET: dict[str, str] = {
    "mnist": "torchvision.datasets.MNIST(root, train=True, download=True) and train=False",
    "fashion-mnist": (
        "torchvision.datasets.FashionMNIST(root, train=True, download=True) and train=False"
    ),
    "cifar10": "torchvision.datasets.CIFAR10(root, train=True, download=True)",
    "nmnist": "tonic.datasets.NMNIST(save_to=root, train=True) and train=False "
    "(tonic downloads when the files are absent)",
}


def _missing(name: str, root: str | os.PathLike, detail: str = "") -> FileNotFoundError:
    extra = f" ({detail})" if detail else ""
    return FileNotFoundError(
        f"data set {name!r} not found under root {str(root)!r}{extra}. Expected layout: "
        f"{DATASETS[name].layout}. Get it with {_HOW_TO_GET[name]}; nothing is downloaded here."
    )


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


class CIFAR10Pickles(tvd.CIFAR10):
    """torchvision's ``CIFAR10`` reader that checks only that its pickles are present.

    torchvision compares the md5 sum of each pickle with the official one, which rejects any other
    copy (e.g. small test pickles). Setting the sums to ``None`` makes torchvision's own
    ``check_integrity`` test presence only; parsing is unchanged.
    """

    train_list = [[f, None] for f, _ in tvd.CIFAR10.train_list]
    test_list = [[f, None] for f, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


class NMNIST(tonic.datasets.NMNIST):
    """tonic's ``NMNIST`` reader with a presence-only check and no download.

    tonic wants ``train.zip``/``test.zip`` beside at least 10000 ``.bin`` files in
    ``NMNIST/Train`` or ``NMNIST/Test`` (and downloads otherwise); here one ``.bin`` file suffices.
    The class keeps the name ``NMNIST`` because tonic puts the files under
    ``save_to/<class name>``. Events are read by tonic (``tonic.io.read_mnist_file``).
    """

    def _check_exists(self) -> bool:
        return self._folder_contains_at_least_n_files_of_type(1, ".bin")

    def download(self) -> None:
        raise FileNotFoundError(
            f"no .bin files under {os.path.join(self.location_on_system, self.folder_name)}"
        )


class _Digits(Dataset):
    """``(x[i], int(y[i]))`` pairs of in-memory tensors."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], int(self.y[i])


class _BinaryFrames:
    """numpy event counts ``[T, 2, 34, 34]`` -> float32 tensor of 0/1 (count > 0)."""

    def __call__(self, frames: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(frames) > 0).to(torch.float32)


@dataclass(frozen=True)
class _ExpectShape:
    """Fails clearly on an image of the wrong size (e.g. a non-CIFAR picture in the folder)."""

    shape: tuple[int, ...]

    def __call__(self, x: Tensor) -> Tensor:
        if tuple(x.shape) != self.shape:
            raise ValueError(f"image of shape {tuple(x.shape)}, expected {self.shape}")
        return x


class _CIFARImageFolder(tvd.ImageFolder):
    """``ImageFolder`` whose labels follow CIFAR-10's order, whatever subset of classes exists.

    Folders are named by class (``airplane`` .. ``truck``) or by index (``0`` .. ``9``).
    """

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        names = sorted(e.name for e in os.scandir(directory) if e.is_dir())
        if not names:
            raise FileNotFoundError(f"no class folders in {str(directory)!r}")
        index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
        index.update({str(i): i for i in range(len(CIFAR10_CLASSES))})
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(
                f"class folders {unknown} in {str(directory)!r} are not CIFAR-10 classes "
                f"({', '.join(CIFAR10_CLASSES)}) nor indices 0..9"
            )
        return names, {n: index[n] for n in names}


def _augmentations(name: str) -> list[Callable[[Tensor], Tensor]]:
    if name == "fashion-mnist":
        return [tvt.RandomHorizontalFlip()]
    if name == "cifar10":
        return [tvt.RandomCrop(32, padding=4), tvt.RandomHorizontalFlip()]
    return []  # digits, mnist, nmnist


def _cifar10(root: Path, train: bool, transform: Callable[[Any], Tensor]) -> Dataset:
    if (root / CIFAR10Pickles.base_folder).is_dir():
        try:
            return CIFAR10Pickles(str(root), train=train, transform=transform,
                                  target_transform=int, download=False)
        except RuntimeError as err:
            raise _missing("cifar10", root, f"incomplete {CIFAR10Pickles.base_folder}/") from err
    split = "train" if train else "test"
    for base in (root, root / "CIFAR-10-images"):
        if (base / "train").is_dir() or (base / "test").is_dir():
            folder = base / split
            if not folder.is_dir():
                raise _missing("cifar10", root, f"image folder {str(folder)!r} is missing")
            try:
                return _CIFARImageFolder(
                    str(folder),
                    transform=tvt.Compose([transform, _ExpectShape(DATASETS["cifar10"].input_shape)]),
                    target_transform=int,
                )
            except FileNotFoundError as err:  # empty class folders
                raise _missing("cifar10", root, str(err)) from err
    raise _missing("cifar10", root)


def load_dataset(
    name: str,
    root: str | os.PathLike | None,
    train: bool,
    augment: bool | None = None,
    num_steps: int | None = None,
) -> Dataset:
    """One split of a data set yielding ``(x, y)``, ``x`` float32 in [0, 1], ``y`` an ``int``.

    Args:
        name: a key of :data:`DATASETS`.
        root: the data root (``--data-root``); ignored for ``digits`` (may be ``None``).
        train: the train split, else the test split.
        augment: ``None`` applies the data set's standard augmentation on the train split only;
            ``True`` / ``False`` force it on / off (a no-op for data sets without one).
        num_steps: number of time bins ``T`` for ``nmnist`` (required there); ignored for the
            direct-encoded data sets, whose frame is repeated over time by the network.

    Raises:
        ValueError: unknown ``name``, ``root`` ``None`` for a data set on disk, or ``nmnist``
            without a positive ``num_steps``.
        FileNotFoundError: the files are absent; the message gives the expected layout.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    use_aug = train if augment is None else bool(augment)
    if name == "digits":
        xtr, ytr, xte, yte = load_digits_split(test_fraction=0.2, seed=0)
        return _Digits(xtr, ytr) if train else _Digits(xte, yte)
    if root is None:
        raise ValueError(f"data set {name!r} needs a data root; expected layout: "
                         f"{DATASETS[name].layout}")
    root = Path(os.path.expanduser(os.fspath(root)))

    if name == "nmnist":
        if num_steps is None or int(num_steps) < 1:
            raise ValueError(f"nmnist needs num_steps >= 1 (time bins per sample), got {num_steps}")
        frames = tvt.Compose([
            tonic.transforms.ToFrame(sensor_size=tonic.datasets.NMNIST.sensor_size,
                                     n_time_bins=int(num_steps)),
            _BinaryFrames(),
        ])
        try:
            return NMNIST(str(root), train=train, transform=frames)
        except FileNotFoundError as err:
            raise _missing(name, root, str(err)) from err

    transform = tvt.Compose([tvt.ToTensor(), *(_augmentations(name) if use_aug else [])])
    if name == "cifar10":
        return _cifar10(root, train, transform)
    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    try:
        return cls(str(root), train=train, transform=transform, target_transform=int,
                   download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found"
        raise _missing(name, root) from err


def load_mnist(root: str | os.PathLike, train: bool, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """MNIST as tensors (no download): ``x`` ``[N, 1, 28, 28]`` in [0, 1], ``y`` ``[N]``.

    Read by :func:`load_dataset` (the one MNIST reader, and its missing-data error).

    Raises:
        FileNotFoundError: with the expected layout when ``root`` lacks the data.
    """
    ds = load_dataset("mnist", root, train, augment=False)
    x = ds.data.float().div(255.0).unsqueeze(1)
    y = ds.targets.clone()
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def _collate_time_major(batch: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """Event samples ``[T, ...]`` -> ``x`` ``[T, B, ...]`` and ``y`` LongTensor ``[B]``."""
    x = torch.stack([s[0] for s in batch], dim=1)
    y = torch.tensor([int(s[1]) for s in batch], dtype=torch.long)
    return x, y


def _collate_batch_major(batch: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """Samples ``[*input_shape]`` -> ``x`` ``[B, *input_shape]`` and ``y`` LongTensor ``[B]``."""
    x = torch.stack([s[0] for s in batch], dim=0)
    y = torch.tensor([int(s[1]) for s in batch], dtype=torch.long)
    return x, y


@dataclass(frozen=True)
class LoaderOptions:
    """How :func:`make_loader` batches a split (all optional).

    Attributes:
        shuffle: defaults to ``train``; the order is drawn from a ``torch.Generator`` seeded with
            ``seed`` (deterministic; each pass over the loader draws a new permutation).
        seed: seed of that generator.
        augment: as in :func:`load_dataset`.
        num_steps: time bins ``T`` (``nmnist``), as in :func:`load_dataset`.
        limit: keep only the first ``limit`` samples (before shuffling).
        sampler: e.g. a ``DistributedSampler``; replaces shuffling (``shuffle=True`` with a
            sampler is an error).
        num_workers, drop_last: as in ``DataLoader``.
    """

    shuffle: bool | None = None
    seed: int = 0
    augment: bool | None = None
    num_steps: int | None = None
    limit: int | None = None
    sampler: torch.utils.data.Sampler | None = None
    num_workers: int = 0
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.sampler is not None and self.shuffle:
            raise ValueError("pass either a sampler or shuffle=True, not both")


def make_loader(name: str, root: str | os.PathLike | None, train: bool, batch_size: int,
                options: LoaderOptions | None = None, **settings: Any) -> DataLoader:
    """A ``DataLoader`` over :func:`load_dataset` yielding ``(x, y)`` batches.

    ``x`` is ``[B, *input_shape]`` (direct) or time-major ``[T, B, 2, 34, 34]`` (event), ``y`` a
    LongTensor ``[B]``. ``options`` (or its fields as keywords ``settings``, e.g.
    ``limit=64, num_steps=10``): :class:`LoaderOptions`.
    """
    if options is not None and settings:
        raise ValueError("make_loader: pass LoaderOptions or its fields as keywords, not both")
    o = options or build(LoaderOptions, settings, "loader")
    ds = load_dataset(name, root, train, augment=o.augment, num_steps=o.num_steps)
    if o.limit is not None:
        ds = Subset(ds, range(min(int(o.limit), len(ds))))
    shuffle = False if o.sampler is not None else train if o.shuffle is None else o.shuffle
    gen = torch.Generator()
    gen.manual_seed(o.seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=o.sampler,
        num_workers=o.num_workers,
        drop_last=o.drop_last,
        generator=gen,
        collate_fn=_collate_time_major if DATASETS[name].time_major else _collate_batch_major,
    )


def test_subset(name: str, root: str | os.PathLike | None, n: int | None = None,
                seed: int = 0) -> tuple[Tensor, Tensor]:
    """A seeded random subset of ``n`` test samples as tensors (all of them when ``n`` is None).

    Returns ``x`` ``[n, *input_shape]`` and ``y`` ``[n]``; the same ``(n, seed)`` gives the
    same images on every machine (a CPU ``torch.Generator`` permutation of the test set).
    """
    if DATASETS[name].time_major:
        raise ValueError(f"test_subset: {name} is event data (time-major batches); use make_loader")
    ds = load_dataset(name, root, train=False)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        idx = idx[:n]
    xs, ys = zip(*(ds[int(i)] for i in idx), strict=True)
    return torch.stack(xs), torch.tensor([int(v) for v in ys])

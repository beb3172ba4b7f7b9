"""``snncertify.training.datasets`` on tiny data sets written in the real on-disk formats."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data.distributed import DistributedSampler

from snncertify.training.datasets import DATASETS, load_dataset, load_digits_split, make_loader

# ----------------------------------------------------------------------------- writers


def _write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """IDX files as torchvision reads them (uncompressed, big-endian header)."""
    raw.mkdir(parents=True, exist_ok=True)
    n = len(images)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x0803, n, 28, 28) + images.astype(np.uint8).tobytes()
    )
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x0801, n) + labels.astype(np.uint8).tobytes()
    )


def _mnist_like(root: Path, folder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        imgs[:, 0, 0] = 255
        imgs[:, 27, 27] = 0
        imgs[:, 0, 27] = 0  # distinguishes a horizontal flip
        labels = np.arange(n) % 10
        _write_idx(root / folder / "raw", prefix, imgs, labels)
        out[prefix] = (imgs, labels)
    return out


def _cifar_pickles(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, fname in enumerate(names):
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        labels = [(2 * k) % 10, (2 * k + 1) % 10]
        with open(base / fname, "wb") as f:
            pickle.dump({"batch_label": fname, "data": data, "labels": labels,
                         "filenames": ["a.png", "b.png"]}, f)
        out[fname] = (data, labels)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"],
                     "num_cases_per_batch": 2, "num_vis": 3072}, f)
    return out


def _nmnist_bin(path: Path, events: list[tuple[int, int, int, int]]) -> None:
    """N-MNIST .bin: 40-bit big-endian events x(8) y(8) p(1) t(23), events as (x, y, p, t)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = bytearray()
    for x, y, p, t in events:
        buf += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    path.write_bytes(bytes(buf))


def _nmnist_events(shift: int) -> list[tuple[int, int, int, int]]:
    # event k at t = 1000 k in time bin k of 10 (tonic: bin width (t_last - t_first) // T);
    # the closing event at t = 10000 marks the end and falls outside the last half-open bin.
    ev = [(k + shift, 2 * k + 1, k % 2, 1000 * k) for k in range(10)]
    ev.insert(4, (3 + shift, 7, 1, 3500))  # a second event at pixel 3 bin 3: binarised to 1
    return [*ev, (33, 33, 0, 10000)]


# ----------------------------------------------------------------------------- registry / errors


def test_registry_lists_every_dataset_with_its_shape_and_encoding():
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10", "nmnist"}
    assert DATASETS["cifar10"].input_shape == (3, 32, 32)
    assert DATASETS["nmnist"].encoding == "event"
    assert all(DATASETS[n].encoding == "direct" for n in DATASETS if n != "nmnist")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "nmnist"])
def test_missing_data_names_layout(tmp_path, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, empty, train=True, num_steps=4)
    msg = str(e.value)
    assert DATASETS[name].layout in msg and str(empty) in msg and repr(name) in msg
    assert "download" in msg or "tonic.datasets.NMNIST" in msg
    assert list(empty.iterdir()) == []  # nothing downloaded or created
    with pytest.raises(ValueError):
        load_dataset(name, None, train=True, num_steps=4)


def test_unknown_name_and_nmnist_without_steps(tmp_path):
    with pytest.raises(ValueError, match="mnist"):
        load_dataset("imagenet", tmp_path, train=True)
    with pytest.raises(ValueError, match="num_steps"):
        load_dataset("nmnist", tmp_path, train=True)


# ----------------------------------------------------------------------------- digits


def test_digits_loader_matches_split():
    _, _, xte, yte = load_digits_split(test_fraction=0.2, seed=0)
    loader = make_loader("digits", None, train=False, batch_size=64)
    xs, ys = zip(*loader, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x, xte) and torch.equal(y, yte)
    x0, y0 = load_dataset("digits", None, train=True)[0]
    assert x0.shape == (64,) and isinstance(y0, int)


def test_loader_shuffle_is_seeded_and_honours_limit_and_sampler():
    def order(seed, **kw):
        loader = make_loader("digits", None, train=True, batch_size=32, seed=seed, **kw)
        return torch.cat([x for x, _ in loader])

    a, b, c = order(0), order(0), order(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = make_loader("digits", None, train=True, batch_size=1000, shuffle=False)
    first = next(iter(plain))[0]
    assert not torch.equal(a[:1000], first)  # train shuffles by default
    lim = order(3, limit=20)
    assert lim.shape == (20, 64)
    assert not torch.equal(lim, first[:20])
    # the shuffled 20 are the first 20 samples, permuted
    assert sorted(map(tuple, lim.tolist())) == sorted(map(tuple, first[:20].tolist()))
    s = DistributedSampler(range(20), num_replicas=2, rank=1, shuffle=False)
    got = torch.cat([x for x, _ in make_loader("digits", None, True, 4, sampler=s, limit=20)])
    assert torch.equal(got, first[1:20:2])
    with pytest.raises(ValueError):
        make_loader("digits", None, True, 4, sampler=s, shuffle=True)


# ----------------------------------------------------------------------------- MNIST-like


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_round_trip(tmp_path, name, folder):
    raw = _mnist_like(tmp_path, folder)
    for train, prefix in ((True, "train"), (False, "t10k")):
        imgs, labels = raw[prefix]
        ds = load_dataset(name, tmp_path, train=train, augment=False)
        assert len(ds) == len(imgs)
        for i in range(len(imgs)):
            x, y = ds[i]
            assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
            assert y == labels[i]
            assert x[0, 0, 0] == 1.0 and x[0, 27, 27] == 0.0
            assert torch.equal(x[0], torch.from_numpy(imgs[i]).float() / 255)
    # default augmentation: fashion-mnist flips on train only, mnist never
    torch.manual_seed(0)
    imgs = raw["train"][0]
    xs = torch.stack([load_dataset(name, tmp_path, train=True)[0][0] for _ in range(40)])
    assert xs.min() >= 0 and xs.max() <= 1
    flipped = xs[:, 0, 0, 27] == 1.0
    exact = torch.from_numpy(imgs[0]).float() / 255
    if name == "fashion-mnist":
        assert 0 < int(flipped.sum()) < 40
        assert torch.equal(xs[flipped][0, 0], exact.flip(-1))
    else:
        assert not flipped.any()
    x, y = next(iter(make_loader(name, tmp_path, train=False, batch_size=2)))
    assert x.shape == (2, 1, 28, 28) and y.tolist() == raw["t10k"][1][:2].tolist()


# ----------------------------------------------------------------------------- CIFAR-10


def test_cifar10_pickles_load_pixel_for_pixel(tmp_path):
    raw = _cifar_pickles(tmp_path)
    ds = load_dataset("cifar10", tmp_path, train=False)  # test split: no augmentation
    data, labels = raw["test_batch"]
    assert len(ds) == 2
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and y == labels[1] and isinstance(y, int)
    c, r, col = 2, 5, 7
    assert x[c, r, col] == data[1, c * 1024 + r * 32 + col] / 255
    assert torch.equal(x, torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 255)
    tr = load_dataset("cifar10", tmp_path, train=True, augment=False)
    assert len(tr) == 10 and [tr[i][1] for i in range(10)] == list(range(10))
    loader = make_loader("cifar10", tmp_path, train=True, batch_size=10)  # augmented
    for _ in range(3):
        x, y = next(iter(loader))
        assert x.shape == (10, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
        assert sorted(y.tolist()) == list(range(10))


def _save_images(folder: Path, classes: dict[str, int], ext: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    out = {}
    for cls in classes:
        arr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        if ext == "jpg":  # smooth picture: JPEG keeps it close
            arr = np.broadcast_to(arr[:1, :1], arr.shape).copy()
            arr[:, :, 0] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :]
        (folder / cls).mkdir(parents=True)
        Image.fromarray(arr).save(folder / cls / f"img0.{ext}")
        out[cls] = arr
    return out


def test_cifar10_image_folder_png(tmp_path):
    classes = {"airplane": 0, "cat": 3, "truck": 9}
    pixels = _save_images(tmp_path / "test", classes, "png")
    _save_images(tmp_path / "train", classes, "png")
    ds = load_dataset("cifar10", tmp_path, train=False)
    got = {y: x for x, y in (ds[i] for i in range(len(ds)))}
    assert sorted(got) == [0, 3, 9]
    for cls, idx in classes.items():
        exact = torch.from_numpy(pixels[cls]).permute(2, 0, 1).float() / 255
        assert torch.equal(got[idx], exact)
    x, y = next(iter(make_loader("cifar10", tmp_path, train=True, batch_size=3)))
    assert x.shape == (3, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert sorted(y.tolist()) == [0, 3, 9]


def test_cifar10_image_folder_jpeg_public_copy(tmp_path):
    base = tmp_path / "CIFAR-10-images"
    _save_images(base / "train", {"bird": 2, "ship": 8}, "jpg")
    pixels = _save_images(base / "test", {"bird": 2, "ship": 8}, "jpg")
    ds = load_dataset("cifar10", tmp_path, train=False)
    x, y = ds[1]
    assert y == 8 and x.shape == (3, 32, 32)
    exact = torch.from_numpy(pixels["ship"]).permute(2, 0, 1).float() / 255
    assert (x - exact).abs().max() < 0.05  # lossy JPEG
    # a split folder absent from a folder copy: clear error
    (tmp_path / "alt" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="layout"):
        load_dataset("cifar10", tmp_path / "alt", train=False)


# ----------------------------------------------------------------------------- N-MNIST


def test_nmnist_tonic_layout_time_major(tmp_path):
    root = tmp_path / "data"
    _nmnist_bin(root / "NMNIST" / "Train" / "3" / "00001.bin", _nmnist_events(0))
    _nmnist_bin(root / "NMNIST" / "Train" / "7" / "00002.bin", _nmnist_events(10))
    _nmnist_bin(root / "NMNIST" / "Test" / "5" / "00003.bin", _nmnist_events(20))
    T = 10
    ds = load_dataset("nmnist", root, train=True, num_steps=T)
    assert len(ds) == 2
    x, y = ds[0]
    assert y == 3 and x.shape == (T, 2, 34, 34) and x.dtype == torch.float32
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert x.sum() == T  # one pixel per bin; the repeated pixel binarised
    for k in range(T):
        assert x[k, k % 2, 2 * k + 1, k] == 1.0  # axes [T, polarity, y, x]
    loader = make_loader("nmnist", root, train=True, batch_size=2, num_steps=T, shuffle=False)
    xb, yb = next(iter(loader))
    assert xb.shape == (T, 2, 2, 34, 34) and yb.dtype == torch.long and yb.tolist() == [3, 7]
    assert torch.equal(xb[:, 0], x)
    assert xb[4, 1, 0, 9, 14] == 1.0  # second sample shifted by 10 in x
    xt, yt = next(iter(make_loader("nmnist", root, train=False, batch_size=4, num_steps=5)))
    assert xt.shape == (5, 1, 2, 34, 34) and yt.tolist() == [5]
    assert set(xt.unique().tolist()) <= {0.0, 1.0}

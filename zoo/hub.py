"""Weight files of the zoo: where they live, how they are fetched and checked.

A card's ``"weights"`` entry names the file, its full SHA-256 and the URL it
is published at. :func:`weights_path` resolves it, in this order:

1. ``zoo/checkpoints/<file>`` next to this module: every file of the repository's
   ``zoo/checkpoints`` ships as package data (``pip install .`` or editable), used in
   place without any network.
2. the cache, ``$SNNCERTIFY_ZOO_CACHE`` or else ``<torch.hub.get_dir()>/checkpoints/snncertify``
   (torch.hub's convention: ``$TORCH_HOME``, ``torch.hub.set_dir``).
3. a download (``torch.hub.download_url_to_file``: a ``.partial`` file in the
   cache folder, the SHA-256 checked, then renamed), from the card's URL or
   from ``$SNNCERTIFY_ZOO_URL/<file>`` (a mirror).

Every file is hashed before it is used, wherever it comes from: a wrong file
is an error (or, in the cache, deleted and fetched again); a failed or
interrupted transfer leaves nothing in the cache.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

PACKAGE_DIR = Path(__file__).resolve().parent / "checkpoints"
CACHE_ENV = "SNNCERTIFY_ZOO_CACHE"
URL_ENV = "SNNCERTIFY_ZOO_URL"
#: where the published weight files live (the repository's ``zoo/checkpoints`` folder).
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/snncertify/snncertify/main/zoo/checkpoints/"


class ZooDownloadError(RuntimeError):
    """A weight file could not be fetched, or its SHA-256 is not the card's."""


def cache_dir() -> Path:
    """The download cache folder (not created here)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / "snncertify"


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def url_for(weights: dict[str, Any]) -> str:
    """The URL a card's file is fetched from (``$SNNCERTIFY_ZOO_URL`` overrides)."""
    base = os.environ.get(URL_ENV)
    if base:
        return base.rstrip("/") + "/" + weights["file"]
    return weights["url"]


def download(weights: dict[str, Any], dst: Path, progress: bool = True) -> Path:
    """Fetch ``weights`` into ``dst``; the file appears only complete and hash-checked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    url = url_for(weights)
    try:
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=weights["sha256"],
                                       progress=progress)
    except RuntimeError as err:  # torch.hub's hash mismatch
        raise ZooDownloadError(f"{weights['file']} from {url}: {err}; nothing was kept") from err
    except Exception as err:  # URLError, HTTPError, IncompleteRead, OSError, ...
        raise ZooDownloadError(
            f"could not download {weights['file']} from {url}: {type(err).__name__}: {err}; "
            f"nothing was kept (set ${URL_ENV} to a mirror folder, or place the file, "
            f"sha256 {weights['sha256']}, in {dst.parent})") from err
    return dst


def weights_path(weights: dict[str, Any], download_missing: bool = True,
                 progress: bool = True) -> Path:
    """A local, hash-checked path of a card's weight file (see the module docstring).

    Raises:
        ZooDownloadError: a packaged file has the wrong hash, or the download
            failed or delivered a wrong file.
        FileNotFoundError: the file is not local and ``download_missing`` is False.
    """
    name, want = weights["file"], weights["sha256"]
    local = PACKAGE_DIR / name
    if local.is_file():
        got = sha256(local)
        if got != want:
            raise ZooDownloadError(f"{local} has sha256 {got}, its card says {want}: the file "
                                   "was modified; restore it (git checkout) or reinstall")
        return local
    cached = cache_dir() / name
    if cached.is_file():
        got = sha256(cached)
        if got == want:
            return cached
        warnings.warn(f"cached {cached} has sha256 {got}, expected {want}: deleting and "
                      "fetching it again", stacklevel=2)
        cached.unlink()
    if not download_missing:
        raise FileNotFoundError(f"{name} is neither in {PACKAGE_DIR} nor in the cache {cached.parent}")
    return download(weights, cached, progress)

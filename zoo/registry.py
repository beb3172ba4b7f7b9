"""The registry: one JSON card per entry in ``zoo/cards``, named ``<dataset>-<arch>-<defense>``.

A card (RobustBench style) says what the entry is (``dataset``, ``arch``,
``defense``, ``neuron``), how it is wrapped (``certify``: the keyword
arguments of :func:`snncertify.certify`), how it was trained (``training``,
with the exact command), what it measured (``clean_accuracy`` on the full test
set of ``n_test`` images; ``results``: the rows of ``attacks.evaluate``, per
eps and column, on the subset the ``protocol`` states), how to re-measure it
(``command``), when (``date``) and with what (``versions``), and its weight
file (``weights``: file, sha256, bytes, url).
"""

from __future__ import annotations

import copy
import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snncertify import BoundedSNN, certify
from snncertify.training.archs import build_arch

from . import hub

CARDS_DIR = Path(__file__).resolve().parent / "cards"
REQUIRED_KEYS = ("name", "dataset", "arch", "defense", "certify", "training", "clean_accuracy",
                 "n_test", "results", "protocol", "command", "date", "versions", "weights")


@lru_cache(maxsize=1)
def _cards() -> dict[str, dict[str, Any]]:
    cards = {}
    for path in sorted(CARDS_DIR.glob("*.json")):
        c = json.loads(path.read_text())
        missing = [k for k in REQUIRED_KEYS if k not in c]
        if missing or c["name"] != path.stem:
            raise ValueError(f"zoo card {path} is malformed: missing {missing} or name "
                             f"{c.get('name')!r} != file name {path.stem!r}")
        cards[c["name"]] = c
    return cards


def _entry(name: str) -> dict[str, Any]:
    cards = _cards()
    if not isinstance(name, str) or name not in cards:
        close = difflib.get_close_matches(str(name), list(cards), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no zoo entry {name!r}{hint} (zoo.list() names {len(cards)} entries)")
    return cards[name]


def list_entries(dataset: str | None = None, defense: str | None = None) -> list[str]:
    """Names of the entries, sorted; filtered by ``dataset`` and/or ``defense``.

    Raises:
        ValueError: a filter value no entry has (the message lists the known ones).
    """
    cards = _cards()
    for key, value in (("dataset", dataset), ("defense", defense)):
        known = sorted({c[key] for c in cards.values()})
        if value is not None and value not in known:
            raise ValueError(f"unknown {key} {value!r}; the zoo has {known}")
    return [n for n, c in cards.items()
            if (dataset is None or c["dataset"] == dataset)
            and (defense is None or c["defense"] == defense)]


def card(name: str) -> dict[str, Any]:
    """The entry's card as a dict (a copy: changing it changes nothing)."""
    return copy.deepcopy(_entry(name))


def download(name: str, progress: bool = True) -> Path:
    """Fetch the entry's weights (if not local) and return their hash-checked path."""
    return hub.weights_path(_entry(name)["weights"], progress=progress)


def build(c: dict[str, Any]) -> nn.Sequential:
    """The card's architecture with its neuron parameters, randomly initialised."""
    return build_arch(c["arch"], **c.get("neuron", {}))


def load(name: str, pretrained: bool = True,
         map_location: str | torch.device | None = None) -> nn.Sequential:
    """The entry's snnTorch network: an unmodified ``nn.Sequential`` in eval mode.

    Args:
        name: an entry of :func:`list_entries`.
        pretrained: load the card's weights (hash-checked; fetched if needed);
            False gives the architecture with a fresh initialisation.
        map_location: device for the weights (default: CPU).
    """
    c = _entry(name)
    net = build(c)
    if pretrained:
        path = hub.weights_path(c["weights"])
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    if map_location is not None:
        net.to(map_location)
    return net.eval()


def load_bounded(name: str, pretrained: bool = True,
                 map_location: str | torch.device | None = None) -> BoundedSNN:
    """``certify(load(name), **card(name)["certify"])``: the model exactly as its card was measured."""
    return certify(load(name, pretrained, map_location), **_entry(name)["certify"]).eval()

"""Train an SNN with one of the defenses: ``python -m snncertify.train`` (this module's :func:`main`).

    python -m snncertify.train --method certified --dataset mnist --arch mnist-fc \\
        --eps 0.1 --steps 10 --epochs 20 --data-root DIR --out runs/mnist-fc-ibp

``--method``: ``clean``, ``hire``, ``stable``, ``pgd-at``, ``certified`` (and the
aliases ``ibp`` / ``crown-ibp`` for certified training with that bound method).
Every other flag is a field of :class:`~snncertify.training.config.TrainConfig`
or a hyperparameter of a defense, with its default there. The run folder gets
``model.pt`` (weights only) and ``config.json`` (everything needed to rebuild and
re-measure the model, with the measured clean test accuracy); ``--resume``
continues an interrupted run. Under ``torchrun`` the same command trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA); ``--batch-size`` is then the
GLOBAL batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from typing import Any

import torch.distributed as dist

from ..report import fmt_percent
from .config import TrainConfig
from .defenses import DEFENSES, METHODS, options
from .options import field_type, public_name
from .run import train_model

PROG = "python -m snncertify.train"
#: config fields the command line must give
REQUIRED = ("out",)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(group: Any, cls: type, f: dataclasses.Field, help: str | None = None) -> None:
    """``--<name>`` for field ``f`` of ``cls``; absent flags stay absent (the default is the
    field's; ``help`` given: shared by several defenses, no default shown)."""
    kind, meta = field_type(cls, f.name), f.metadata
    default = "" if help or f.default in (None, dataclasses.MISSING) else f" (default: {f.default})"
    kw: dict[str, Any] = {"help": (help or meta["help"]) + default, "default": argparse.SUPPRESS,
                          "required": f.name in REQUIRED}
    if kind is bool:
        kw["action"] = "store_true"
    else:
        kw["type"] = kind
        if meta["choices"]:
            kw["choices"] = sorted(meta["choices"])
    group.add_argument(_flag(public_name(f)), **kw)


def _add_fields(parser: argparse.ArgumentParser, group: Any, cls: type) -> None:
    """One flag per field of dataclass ``cls``; a nested dataclass gets its own group."""
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        if dataclasses.is_dataclass(field_type(cls, f.name)):
            sub = parser.add_argument_group(f.metadata["help"])
            _add_fields(parser, sub, field_type(cls, f.name))
        else:
            _add_field(group, cls, f)


def _add_defense_options(group: Any) -> None:
    """One flag per defense option; its help names the defenses that take it."""
    seen: dict[str, list[tuple[str, type, dataclasses.Field]]] = {}
    for name, cls in DEFENSES.items():
        for key, f in options(cls).items():
            if f.metadata.get("cli", True):
                seen.setdefault(key, []).append((name, cls, f))
    for uses in seen.values():
        texts: dict[str, list[str]] = {}
        for name, _, f in uses:
            shown = "" if f.default in (None, dataclasses.MISSING) else f" ({f.default})"
            texts.setdefault(f.metadata["help"], []).append(name + shown)
        help = "; ".join(f"{', '.join(names)}: {text}" for text, names in texts.items())
        _, cls, f = uses[0]
        _add_field(group, cls, f, help)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m snncertify.train``, built from the config's fields."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=METHODS)
    _add_fields(p, p, TrainConfig)
    _add_defense_options(p.add_argument_group("defense options (absent: the defense's default)"))
    return p


def parse_config(argv: list[str]) -> TrainConfig:
    """The :class:`TrainConfig` of a command line (``argv`` without the program name);
    ``--out`` is required."""
    args = vars(build_parser().parse_args(argv))
    return TrainConfig.from_flat(args | {"command": f"{PROG} {shlex.join(argv)}"})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train the run of the command line ``argv`` (default: ``sys.argv[1:]``); returns its
    ``config.json`` record."""
    cfg = parse_config(sys.argv[1:] if argv is None else argv)
    _, record = train_model(cfg)
    if "metrics" in record:
        m = record["metrics"]
        print(f"{record['defense']} on {record['dataset']} ({record['arch']}): clean accuracy "
              f"{fmt_percent(m['clean_accuracy'])} of {m['n_test']} test samples; "
              f"{m['epoch_seconds_mean']:.1f} s/epoch; saved to {cfg.out}")
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return record


if __name__ == "__main__":
    main()

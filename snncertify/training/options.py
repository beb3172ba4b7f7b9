"""Typed settings: dataclass fields that carry their own help text and choices.

Every setting of a training run is a field of a dataclass (the run's
:class:`~snncertify.training.config.TrainConfig`, its optimiser, its neurons,
each defense's hyperparameters); its default lives there and nowhere else.
The command line, ``config.json`` and the Python keywords are derived from
these fields: :func:`option` declares one, :func:`build` makes a dataclass
from keywords with a clear error for a wrong name, :func:`check` casts and
validates an instance's values.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def option(help: str, default: Any = dataclasses.MISSING, *,
           factory: Callable[[], Any] | None = None, name: str | None = None,
           choices: tuple[str, ...] | None = None, cli: bool = True, **field_kw: Any) -> Any:
    """A dataclass field with metadata: ``help`` (for ``--help``), ``name`` (its keyword and
    flag when they differ from the field's name, e.g. ``bound_method`` for a ``method``
    field), ``choices`` (checked by :func:`check`), ``cli`` (False: not a command-line flag).
    ``field_kw``: passed on to :func:`dataclasses.field` (``kw_only``, ``init``)."""
    if factory is not None:
        field_kw["default_factory"] = factory
    else:
        field_kw["default"] = default
    meta = {"help": help, "name": name, "choices": choices, "cli": cli}
    return dataclasses.field(metadata=meta, **field_kw)


def public_name(f: dataclasses.Field) -> str:
    """The keyword (and, dashed, the flag) of field ``f``."""
    return f.metadata.get("name") or f.name


@cache
def field_type(cls: type, name: str) -> type:
    """The declared type of ``cls.name`` without ``None`` (``float | None`` -> ``float``)."""
    hint = get_type_hints(cls)[name]
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    return hint


def build(cls: type[T], settings: Mapping[str, Any], what: str) -> T:
    """``cls(**settings)``; ValueError naming any setting ``cls`` does not have."""
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**settings)


def check(obj: Any) -> None:
    """Cast ``int`` / ``float`` fields of dataclass ``obj`` to their type (None stays None) and
    raise ValueError for a value outside a field's ``choices``."""
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), field_type(type(obj), f.name)
        if value is not None and kind in (int, float):
            object.__setattr__(obj, f.name, kind(value))
        choices = f.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise ValueError(f"unknown {public_name(f)} {value!r}; known: {sorted(choices)}")

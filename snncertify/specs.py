"""The one parser of the project's spec strings.

Three forms, each refused with a ``ValueError`` that quotes the bad spec:

* a call, ``"square(n_queries=1000)"``: a name and keyword parameters with
  Python literal values (:func:`parse_call`);
* a call with a gradient mode, ``"apgd-ce(steps=50)@surrogate:fast_sigmoid"``:
  everything after the first ``@`` is the mode (:func:`parse_spec`);
* a size in bytes, ``"4GB"``, ``"512 MiB"`` or a number (:func:`parse_size`).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SIZE_UNITS", "Spec", "parse_call", "parse_size", "parse_spec"]

#: size suffix (lower case) -> bytes
SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


@dataclass(frozen=True)
class Spec:
    """A parsed ``name(key=value, ...)@grad`` string (``grad`` None without ``@``)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    grad: str | None = None


def parse_call(text: str, what: str = "spec", quote: str | None = None) -> tuple[str, dict[str, Any]]:
    """``"square(n_queries=1000)"`` -> ``("square", {"n_queries": 1000})``.

    Args:
        text: a name, optionally followed by ``(key=value, ...)`` with literal values.
        what: what the string names, for the error message (``"attack spec"``).
        quote: the string the error message quotes (default ``text``; :func:`parse_spec`
            quotes the whole spec).

    Raises:
        ValueError: an empty name, a missing ``)``, positional or ``**`` arguments,
            or a non-literal value; the message quotes ``text``.
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    quote = text if quote is None else quote
    head, paren, args = text.strip().partition("(")
    name = head.strip()
    if not name:
        raise ValueError(f"{what} {quote!r}: no name before the parameters")
    if not paren:
        return name, {}
    try:
        if not args.rstrip().endswith(")"):
            raise SyntaxError("no closing parenthesis")
        call = ast.parse(f"f({args}", mode="eval").body
        if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
            raise SyntaxError("only key=value parameters")
        return name, {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as err:
        raise ValueError(f"{what} {quote!r}: parameters must read name(key=value, ...) with "
                         f"literal values ({err})") from None


def parse_spec(text: str, what: str = "spec") -> Spec:
    """``"pgd(steps=10)@surrogate:fast_sigmoid"`` -> ``Spec("pgd", {"steps": 10},
    "surrogate:fast_sigmoid")``: the call before the first ``@`` (:func:`parse_call`),
    the gradient mode after it (an empty mode is a ValueError)."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    call, at, grad = text.partition("@")
    name, params = parse_call(call, what, quote=text)
    if at and not grad.strip():
        raise ValueError(f"{what} {text!r}: no gradient mode after '@'")
    return Spec(name, params, grad.strip() if at else None)


def parse_size(value: int | float | str, what: str = "size") -> int:
    """Bytes (an int > 0) from a number of bytes or a string such as ``"4GB"``,
    ``"512 MiB"`` (units: :data:`SIZE_UNITS`, decimal kB..TB and binary KiB..TiB)."""
    if isinstance(value, str):
        m = _SIZE.fullmatch(value)
        if m is None or m.group(2).lower() not in SIZE_UNITS:
            raise ValueError(f"{what} {value!r} is not a size such as '4GB', '512MiB' or 1e9 (bytes)")
        value = float(m.group(1)) * SIZE_UNITS[m.group(2).lower()]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{what} must be a number of bytes or a size string, got {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be > 0 bytes, got {value}")
    return int(value)

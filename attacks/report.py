"""Rows of an evaluation -> CSV, Markdown table, PNG plot (matplotlib, Agg backend).

A row is a dict with at least ``eps``, ``attack``, ``kind`` (``clean`` |
``attack`` | ``robust`` | ``exact`` | ``certified``) and ``accuracy`` (a fraction in
[0, 1]); :func:`attacks.evaluate` adds ``correct``, ``n``, ``grad``,
``gradient_based``, ``search``, ``transfer`` and ``seconds``, and on attack and robust rows
``ties`` and ``flips``: of the clean-correct samples the column breaks, how many only by a tie
(another class equal to the true one, none above) and how many by a strict flip. A tie is
wrong (``accuracy`` counts it); ``accuracy + ties / n`` is the accuracy under an argmax
that resolves ties in the true class's favour.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

from snncertify.io import write_text
from snncertify.report import percent, plot_lines

__all__ = ["read_csv", "to_csv", "to_markdown", "plot"]

FIELDS = (
    "eps", "attack", "kind", "accuracy", "correct", "n", "ties", "flips", "grad",
    "gradient_based", "search", "transfer", "seconds",
)
_ORDER = {"clean": 0, "attack": 1, "robust": 2, "exact": 3, "certified": 4}


def to_csv(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Write the rows (long format, one per eps x attack) as CSV (atomically)."""
    keys = list(FIELDS) + sorted({k for r in rows for k in r} - set(FIELDS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows back from :func:`to_csv` (numbers and booleans parsed)."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict = dict(r)
            for k in ("eps", "accuracy", "seconds"):
                if row.get(k) not in (None, ""):
                    row[k] = float(row[k])
            for k in ("correct", "n", "ties", "flips"):
                if row.get(k) not in (None, ""):
                    row[k] = int(row[k])
            for k in ("gradient_based", "search", "transfer"):
                if k in row:
                    row[k] = row[k] == "True"
            out.append(row)
    return out


def _columns(rows: Sequence[dict]) -> list[str]:
    seen: dict[str, tuple[int, int]] = {}
    for i, r in enumerate(rows):
        seen.setdefault(r["attack"], (_ORDER.get(r["kind"], 9), i))
    return sorted(seen, key=seen.get)


def to_markdown(rows: Sequence[dict], path: str | os.PathLike | None = None) -> str:
    """A table with one row per eps and one column per attack: accuracy in percent, one
    decimal (``snncertify.report.percent``), as every table of the project."""
    cols = _columns(rows)
    table: dict[float, dict[str, float]] = {}
    for r in rows:
        table.setdefault(float(r["eps"]), {})[r["attack"]] = float(r["accuracy"])
    lines = ["| eps | " + " | ".join(cols) + " |", "|---:|" + "---:|" * len(cols)]
    for e in sorted(table):
        cells = []
        for c in cols:
            v = table[e].get(c)
            cells.append("" if v is None else str(percent(v)))
        lines.append(f"| {e:g} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if path is not None:
        write_text(path, text)
    return text


def plot(rows: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> None:
    """PNG: accuracy (%) vs eps, one line per column (``snncertify.report.plot_lines``):
    worst case (robust) bold, certified dashed, clean dotted; coinciding lines offset."""
    order = _columns(rows)
    pct = [{"eps": float(r["eps"]), "column": r["attack"], "accuracy (%)": percent(r["accuracy"])}
           for r in sorted(rows, key=lambda r: order.index(r["attack"]))]
    plot_lines(pct, "eps", "accuracy (%)", "column", path, title=title or "",
               xlabel="eps (L-inf, input in [0, 1])", ylim=(-2, 102), dodge=0.004)

"""Result tables: rows (dicts) -> CSV, Markdown and a line plot (PNG), written atomically."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from .io import atomic_path, write_text

Row = dict[str, object]


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def to_markdown(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (floats with 4 decimals)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Row], path: str | os.PathLike, columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def write_markdown(rows: Sequence[Row], path: str | os.PathLike, columns: Sequence[str] | None = None,
                   title: str | None = None) -> Path:
    text = (f"# {title}\n\n" if title else "") + to_markdown(rows, columns)
    return write_text(path, text)


def plot_lines(rows: Sequence[Row], x: str, y: str, series: str, path: str | os.PathLike,
               title: str = "", ylabel: str | None = None) -> Path:
    """One line per distinct ``row[series]``: ``row[y]`` against ``row[x]``, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r[series] for r in rows):
        pts = sorted((r[x], r[y]) for r in rows if r[series] == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(name))
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)

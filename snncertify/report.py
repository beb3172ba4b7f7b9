"""The one report module: rows (dicts, long format) -> pivot -> CSV, Markdown, line and
grouped-bar plots (PNG), written atomically.

Generic tables (:func:`pivot`, :func:`write_csv`, :func:`to_markdown`, :func:`plot_lines`,
:func:`plot_bars`) and the tables of :func:`attacks.evaluate`'s rows
(:func:`results_to_csv`, :func:`results_from_csv`, :func:`results_markdown`,
:func:`plot_results`; re-exported as ``attacks.to_csv``, ``attacks.read_csv``,
``attacks.to_markdown``, ``attacks.plot``).
"""

from __future__ import annotations

import csv
import io
import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .io import atomic_path, write_text

Row = dict[str, object]


class Percent(float):
    """An accuracy in percent, shown as every table shows one: one decimal (``97.5``)."""

    def __repr__(self) -> str:
        return f"{float(self):.1f}"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(float(self), spec or ".1f")


def percent(fraction: float) -> Percent:
    """A fraction in [0, 1] (the API's unit: ``clean_accuracy``, a row's ``accuracy``) as
    the percent every user-facing table, plot and message shows (rounded to 0.1)."""
    return Percent(round(100 * float(fraction), 1))


def fmt_percent(fraction: float) -> str:
    """``fraction`` in prose: ``"97.5 %"``."""
    return f"{percent(fraction)} %"


def _fmt(v: object) -> str:
    if v is None:  # not measured
        return ""
    if isinstance(v, Percent):
        return str(v)
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


MARKERS = "osD^vPX*ph<>"


def default_style(name: str) -> dict:
    """Line style by series name: clean dotted, worst case bold, certified/verified dashed."""
    low = name.lower()
    if low == "clean":
        return {"linestyle": ":", "color": "grey"}
    if low in ("robust", "worst-case attack"):
        return {"linewidth": 2.6, "color": "black"}
    if "certified" in low or "verified" in low:
        return {"linestyle": "--", "linewidth": 1.8}
    return {"linewidth": 1.2}


@dataclass(frozen=True)
class PlotOptions:
    """How :func:`plot_lines` draws: the look, not the data.

    Attributes:
        title: the figure's title (per panel without ``panel``, above all panels with it).
        xlabel, ylabel: axis labels (default: the ``x`` / ``y`` keys).
        panel: row key: one subplot per distinct value (None: one plot).
        ylim: y range (None: matplotlib's).
        dodge: series ``i`` of ``n`` shifts by ``(i - (n - 1) / 2) * dodge`` times the x range.
        style: series name -> extra line keywords (None: none).
        ncols: subplots per row.
    """

    title: str = ""
    xlabel: str | None = None
    ylabel: str | None = None
    panel: str | None = None
    ylim: tuple[float, float] | None = (-0.02, 1.02)
    dodge: float = 0.0
    style: Callable[[str], dict] | None = default_style
    ncols: int = 3


def plot_lines(rows: Sequence[Row], x: str, y: str, series: str, path: str | os.PathLike,
               options: PlotOptions | None = None) -> Path:
    """One line per distinct ``row[series]``: ``row[y]`` against ``row[x]``, saved as PNG.

    With ``options.panel``, one subplot per distinct ``row[panel]`` (up to ``ncols`` per
    row; same colour and marker per series everywhere). Curves that coincide stay
    readable: each series has its own marker and colour, ``options.style`` adds line
    styles, and ``options.dodge`` offsets series along x (:class:`PlotOptions`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    o = options or PlotOptions()
    panels = list(dict.fromkeys(r[o.panel] for r in rows)) if o.panel else [None]
    cols = min(len(panels), o.ncols)
    nrows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.6 * cols + 2.4, 3.8 * nrows + 0.6))
    FigureCanvasAgg(fig)  # the Agg canvas directly: the caller's pyplot backend is untouched
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)
    handles: dict[str, object] = {}
    for k, ax in enumerate(axes.flat):
        if k >= len(panels):
            ax.set_visible(False)
            continue
        subset = [r for r in rows if o.panel is None or r[o.panel] == panels[k]]
        for name, line in _draw_lines(ax, rows, subset, (x, y, series), o).items():
            handles.setdefault(name, line)  # the first panel's line stands for the series
        ax.set_xlabel(o.xlabel or x)
        if o.ylim is not None:
            ax.set_ylim(*o.ylim)
        ax.grid(alpha=0.3)
        ax.set_title("\n".join(textwrap.wrap(f"{o.panel}: {panels[k]}" if o.panel else o.title,
                                             60)), fontsize=10)
    for row in axes:
        row[0].set_ylabel(o.ylabel or y)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8)
    if o.panel and o.title:
        fig.suptitle("\n".join(textwrap.wrap(o.title, 110)), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1 - 2.2 / fig.get_figwidth(), 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def _draw_lines(ax, rows: Sequence[Row], subset: Sequence[Row], keys: tuple[str, str, str],
                o: PlotOptions) -> dict[str, object]:
    """Draw each series of ``subset`` on ``ax`` (colours, markers and dodge from the
    series' place in all ``rows``); returns ``{series name: line}``."""
    x, y, series = keys
    names = list(dict.fromkeys(r[series] for r in rows))
    xs_all = [float(r[x]) for r in rows]
    span = (max(xs_all) - min(xs_all)) if xs_all else 0.0
    drawn = {}
    for i, name in enumerate(names):
        pts = sorted((float(r[x]), r[y]) for r in subset if r[series] == name)
        if not pts:
            continue
        shift = (i - (len(names) - 1) / 2) * o.dodge * span
        kw = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "markersize": 5,
              "markerfacecolor": "none" if i % 2 else None}
        kw.update(o.style(str(name)) if o.style else {})
        (line,) = ax.plot([q[0] + shift for q in pts], [q[1] for q in pts], label=str(name), **kw)
        drawn.setdefault(str(name), line)
    return drawn


def plot_bars(rows: Sequence[Row], group: str, bar: str, y: str, path: str | os.PathLike,
              title: str = "", ylabel: str | None = None, ymax: float | None = None) -> Path:
    """Grouped bars: one group per distinct ``row[group]``, one bar per ``row[bar]``
    (same colour per bar name across groups), height ``row[y]`` written above each bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys(r[group] for r in rows))
    bars = list(dict.fromkeys(r[bar] for r in rows))
    width = 0.8 / len(bars)
    crowded = len(groups) * len(bars) > 30  # labels turned upright and smaller
    fig = Figure(figsize=(min(16.0, max(8.0, 2.5 + 1.3 * len(groups) * max(1, len(bars) / 3))),
                          5.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for j, name in enumerate(bars):
        xs, hs = [], []
        for i, g in enumerate(groups):
            vals = [r[y] for r in rows if r[group] == g and r[bar] == name]
            if vals:
                xs.append(i + (j - (len(bars) - 1) / 2) * width)
                hs.append(vals[0])
        drawn = ax.bar(xs, hs, width, label=str(name), color=f"C{j % 10}",
                       hatch="//" if "certified" in str(name) or "verified" in str(name) else None)
        ax.bar_label(drawn, fmt="%.1f", fontsize=5 if crowded else 7, rotation=90 if crowded else 0)
    ax.set_xticks(range(len(groups)), [str(g) for g in groups], rotation=15)
    if ymax is not None:
        ax.set_ylim(0, ymax)
    ax.set_ylabel(ylabel or y)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def pivot(rows: Sequence[Row], index: Sequence[str], column: str, value: str) -> list[Row]:
    """Long rows -> one row per distinct ``index`` values, one column per ``row[column]``."""
    wide: dict[tuple, Row] = {}
    for r in rows:
        key = tuple(r[k] for k in index)
        wide.setdefault(key, dict(zip(index, key, strict=True)))[str(r[column])] = r[value]
    return list(wide.values())


# ------------------------------------------------------------------ evaluation rows
# Rows of an evaluation -> CSV, Markdown table, PNG plot (matplotlib, Agg backend).
#
# A row is a dict with at least ``eps``, ``attack``, ``kind`` (``clean`` |
# ``attack`` | ``robust`` | ``exact`` | ``certified``) and ``accuracy`` (a fraction in
# [0, 1]); :func:`attacks.evaluate` adds ``correct``, ``n``, ``grad``,
# ``gradient_based``, ``search``, ``transfer`` and ``seconds``, and on attack and robust rows
# ``ties`` and ``flips``: of the clean-correct samples the column breaks, how many only by a tie
# (another class equal to the true one, none above) and how many by a strict flip. A tie is
# wrong (``accuracy`` counts it); ``accuracy + ties / n`` is the accuracy under an argmax
# that resolves ties in the true class's favour.

RESULT_FIELDS = (
    "eps", "attack", "kind", "accuracy", "correct", "n", "ties", "flips", "grad",
    "gradient_based", "search", "transfer", "seconds",
)
_KIND_ORDER = {"clean": 0, "attack": 1, "robust": 2, "exact": 3, "certified": 4}


def results_to_csv(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Write the rows (long format, one per eps x attack) as CSV (atomically)."""
    keys = list(RESULT_FIELDS) + sorted({k for r in rows for k in r} - set(RESULT_FIELDS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def results_from_csv(path: str | os.PathLike) -> list[dict]:
    """Rows back from :func:`results_to_csv` (numbers and booleans parsed)."""
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


def _result_columns(rows: Sequence[dict]) -> list[str]:
    seen: dict[str, tuple[int, int]] = {}
    for i, r in enumerate(rows):
        seen.setdefault(r["attack"], (_KIND_ORDER.get(r["kind"], 9), i))
    return sorted(seen, key=seen.get)


def results_markdown(rows: Sequence[dict], path: str | os.PathLike | None = None) -> str:
    """A table with one row per eps and one column per attack: accuracy in percent, one
    decimal (:func:`percent`), as every table of the project."""
    cols = _result_columns(rows)
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


def plot_results(rows: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> None:
    """PNG: accuracy (%) vs eps, one line per column (:func:`plot_lines`):
    worst case (robust) bold, certified dashed, clean dotted; coinciding lines offset."""
    order = _result_columns(rows)
    pct = [{"eps": float(r["eps"]), "column": r["attack"], "accuracy (%)": percent(r["accuracy"])}
           for r in sorted(rows, key=lambda r: order.index(r["attack"]))]
    plot_lines(pct, "eps", "accuracy (%)", "column", path,
               PlotOptions(title=title or "", xlabel="eps (L-inf, input in [0, 1])",
                           ylim=(-2, 102), dodge=0.004))

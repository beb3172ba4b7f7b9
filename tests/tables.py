"""Test helper: read the accuracy cells of a Markdown table a user sees."""

from __future__ import annotations

import re

PERCENT_CELL = re.compile(r"^\d{1,3}\.\d$")  # 0.0 ... 100.0: the one format of every table


def cells(markdown: str, skip: tuple[str, ...]) -> list[str]:
    """Every non-empty cell of the first table in ``markdown`` outside the ``skip`` columns."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    out = []
    for ln in lines[2:]:
        for h, c in zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=True):
            if h not in skip and c:
                out.append(c)
    return out


def assert_percent_table(markdown: str, skip: tuple[str, ...]) -> None:
    got = cells(markdown, skip)
    assert got, "no accuracy cells"
    bad = [c for c in got if not PERCENT_CELL.match(c) or float(c) > 100]
    assert not bad, f"cells not in percent (one decimal): {bad[:5]}"
    assert any(float(c) > 1 for c in got), "looks like fractions, not percent"

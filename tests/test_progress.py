"""Progress output: bars on a terminal, few whole lines in a log file."""

from __future__ import annotations

import io
import sys

import pytest
import torch

import attacks
from snncertify import certify, progress
from snncertify.progress import LogProgress, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _work(outer: int, inner: int) -> None:
    bar = progress_bar(total=outer, desc="outer", unit="attack")
    for _ in range(outer):
        with progress_bar(total=inner, desc="inner", unit="query") as q:
            for _ in range(inner):
                q.update(1)
        bar.update(1)
        bar.set_postfix_str("eps=0.1")
    bar.close()


def test_off_a_terminal_only_the_outermost_bar_writes_whole_lines(monkeypatch):
    err = io.StringIO()  # a log file: not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)  # a line at every finished unit
    _work(outer=5, inner=200)
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert len(lines) == 5 + 1, lines  # one per finished attack, one final; no query lines
    assert lines[-1].startswith("outer: done, 5/5 attack in 00:0") and "eps=0.1" in lines[-1]
    assert all("inner" not in ln for ln in lines)


def test_off_a_terminal_lines_are_throttled(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    _work(outer=300, inner=50)  # 300 units in well under LOG_INTERVAL seconds
    assert len(err.getvalue().splitlines()) == 1  # the final line only


def test_on_a_terminal_bars_are_drawn_and_nested(monkeypatch):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    _work(outer=3, inner=20)
    out = tty.getvalue()
    assert "\r" in out and "inner" in out and "outer" in out  # tqdm's redraws
    assert not isinstance(progress_bar(total=1), LogProgress)


def test_disable_and_terminal_only_bars_write_nothing(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    for kw in ({"disable": True}, {"log": False}):
        with progress_bar(total=3, desc="quiet", **kw) as bar:
            bar.update(3)
    assert err.getvalue() == ""


def test_evaluate_in_a_log_file_writes_a_few_lines(monkeypatch, fc_net, unit_inputs):
    net = fc_net(16, 12, 4, beta=0.8, threshold=1.0, flatten=False)
    bnet = certify(net, 4)
    x, y = unit_inputs(24, 16), torch.randint(0, 4, (24,))
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    attacks.evaluate(bnet, (x, y), eps=[0.05, 0.1], attacks=["fgsm", attacks.PGD(steps=5)],
                     bounds=["ibp", "crown"], batch_size=8, seed=0)
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith(("evaluate", "  ", "crown"))]
    assert len(lines) == 1 and lines[0].startswith("evaluate: done, 24/24 column in"), lines


@pytest.mark.parametrize("bad", [None, object()])
def test_on_terminal_is_false_without_isatty(bad):
    assert progress.on_terminal(bad if bad is not None else io.StringIO()) is False

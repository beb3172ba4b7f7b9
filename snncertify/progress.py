"""Progress that a terminal shows moving and a log file can hold.

:func:`progress_bar` is the one factory every long loop uses (training, evaluation,
bound refinement, the exact verifier, benchmarks):

* stderr is a terminal: a tqdm bar, drawn as tqdm draws it (nested bars below).
* stderr is not a terminal (CI, ``nohup``, ``> log 2>&1``): the outermost open bar
  writes one plain line at most every :data:`LOG_INTERVAL` seconds and one final line
  with the work done and the elapsed time; bars opened inside it (an attack's queries,
  CROWN's refinement of one bound call) write nothing. A 10-minute run so writes a few
  dozen lines, not thousands of redraws.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL", "LogProgress", "on_terminal", "progress_bar"]

#: seconds between two lines of a bar when stderr is not a terminal
LOG_INTERVAL = 30.0
_open: weakref.WeakSet = weakref.WeakSet()  # bars open now (a dropped one closes itself)


def on_terminal(stream: Any = None) -> bool:
    """True when ``stream`` (default: ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class LogProgress:
    """The subset of tqdm's API the project uses, writing whole lines (see the module).

    ``silent``: a nested bar, which counts but writes nothing.
    """

    def __init__(self, iterable: Iterable | None = None, total: float | None = None,
                 desc: str | None = None, unit: str = "it", silent: bool = False,
                 file: Any = None, interval: float | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.silent = total, desc or "progress", unit, silent
        self.file = file
        self.interval = LOG_INTERVAL if interval is None else float(interval)
        self.n, self.postfix = 0, ""
        self.start = self.last = time.monotonic()
        self.closed = False
        _open.add(self)

    # -------------------------------------------------------------- output
    def _line(self, done: bool) -> str:
        count = f"{self.n:g}" + (f"/{self.total:g}" if self.total else "") + f" {self.unit}"
        elapsed = _clock(time.monotonic() - self.start)
        head = f"{self.desc}: done, {count} in {elapsed}" if done else \
            f"{self.desc}: {count}, {elapsed} elapsed"
        return head + (f" ({self.postfix})" if self.postfix else "")

    def _write(self, done: bool = False) -> None:
        if self.silent:
            return
        print(self._line(done), file=self.file if self.file is not None else sys.stderr,
              flush=True)
        self.last = time.monotonic()

    # --------------------------------------------------------- tqdm's API
    def update(self, n: float = 1) -> None:
        self.n += n
        if not self.silent and time.monotonic() - self.last >= self.interval:
            self._write()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kw) -> None:
        items = {**(ordered_dict or {}), **kw}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _open.discard(self)
        self._write(done=True)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _TrackedTqdm(tqdm):
    """A tqdm bar that knows it is open (so bars opened inside it know they are nested)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        _open.add(self)

    def close(self) -> None:
        _open.discard(self)
        super().close()


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None,
                 desc: str | None = None, unit: str = "it", disable: bool = False,
                 leave: bool = True, log: bool = True, **tqdm_kw) -> tqdm | LogProgress:
    """A progress bar over ``iterable`` or ``total`` units (see the module docstring).

    ``disable``: no output at all (a tqdm with ``disable=True``). ``log=False``: a bar
    for a terminal only (the inner loop of one library call, e.g. one CROWN bound),
    silent off a terminal even when outermost. ``leave`` and ``tqdm_kw``
    (``position``, ...) apply on a terminal only.
    """
    if disable or (not log and not on_terminal()):
        return tqdm(iterable, total=total, disable=True)
    if on_terminal():
        return _TrackedTqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, **tqdm_kw)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, silent=bool(_open))

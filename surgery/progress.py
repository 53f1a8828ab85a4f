"""Progress of long work: a bar on a terminal, one line per step elsewhere, nothing when quiet.

Every long loop (training epochs, latency tables, the coverage benchmark) reports through one
``Progress``: with ``show="bar"`` (a terminal) its inner loop is a tqdm bar on stderr, gone when
done; with ``show="lines"`` (a log file, CI) each finished step prints one line on stderr with
the time elapsed since the work began; with ``show="off"`` (``--quiet``) nothing. Results are
never progress: they are printed by the caller whatever ``show`` is. ``resolve`` turns the
``progress=`` argument of the library's functions (None: bar on a terminal, else lines) into
one of the three.

Example:
    >>> import io
    >>> log = io.StringIO()
    >>> progress = Progress("lines", stream=log)
    >>> for epoch in range(2):
    ...     for batch in progress.bar(range(3), f"epoch {epoch + 1}/2", unit="batch"):
    ...         pass
    ...     progress.line(f"epoch {epoch + 1}/2: 3 batches")
    >>> print(log.getvalue().strip())  # doctest: +ELLIPSIS
    epoch 1/2: 3 batches (elapsed ... s)
    epoch 2/2: 3 batches (elapsed ... s)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from tqdm import tqdm

BAR, LINES, OFF = "bar", "lines", "off"
SHOWS = (BAR, LINES, OFF)


def resolve(progress: bool | str | None, stream: TextIO | None = None) -> str:
    """``"bar"``, ``"lines"`` or ``"off"`` from a ``progress=`` argument: None picks a bar
    when ``stream`` (default stderr) is a terminal and lines otherwise; True is a bar, False
    nothing; a name is itself.

    Example:
        >>> import io
        >>> resolve(None, stream=io.StringIO()), resolve(True), resolve(False), resolve("lines")
        ('lines', 'bar', 'off', 'lines')
    """
    if progress is None:
        return BAR if (stream or sys.stderr).isatty() else LINES
    if isinstance(progress, bool):
        return BAR if progress else OFF
    if progress not in SHOWS:
        raise ValueError(f"progress must be None, a bool or one of {SHOWS}, got {progress!r}")
    return progress


def elapsed(seconds: float) -> str:
    """A duration for a log line.

    Example:
        >>> elapsed(4.25), elapsed(125.0), elapsed(7384.0)
        ('4.2 s', '2 min 05 s', '2 h 03 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass(frozen=True)
class Progress:
    """How one piece of long work shows its progress (see the module docstring); the clock
    starts when it is made."""

    show: str = LINES
    stream: TextIO | None = None  # None: sys.stderr when written
    start: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.show not in SHOWS:
            raise ValueError(f"show must be one of {SHOWS}, got {self.show!r}")

    def bar(self, items: Iterable, desc: str, total: int | None = None,
            unit: str = "it") -> Iterable:
        """``items``, in a tqdm bar (removed when done) when showing bars."""
        if self.show != BAR:
            return items
        return tqdm(items, desc=desc, total=total, unit=unit, leave=False, file=self.stream)

    def line(self, text: str) -> None:
        """When showing lines: ``text`` and the time elapsed since the start, on one line."""
        if self.show == LINES:
            print(f"{text} (elapsed {elapsed(time.monotonic() - self.start)})",
                  file=self.stream or sys.stderr, flush=True)


__all__ = ["BAR", "LINES", "OFF", "SHOWS", "Progress", "elapsed", "resolve"]

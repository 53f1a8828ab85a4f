"""Bounds on what a saved folder may ask for.

A folder from someone else is data: ``plan.json`` is read with a size, nesting-depth and
integer-length bound (``read_json``), and a recorded input shape is bounded in elements
(``check_shape``) before anything is allocated. Files are written by ``surgery.atomic``.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from surgery.atomic import write_text
    >>> read_json(write_text(Path(tempfile.mkdtemp()) / "a.json", "[1]"))
    [1]
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from surgery.errors import SurgeryError

MAX_JSON_BYTES = 64 << 20  # a densenet201 plan is ~2 MB
MAX_DEPTH = 8  # plan.json nests 6 deep (groups -> members -> kept)
MAX_INT_DIGITS = 12
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 27  # 128 Mi floats (512 MiB) per example input


def check_shape(shape: Iterable[Any], what: str) -> tuple[int, ...]:
    """An example input shape: 1 to 8 positive ints, at most ``MAX_ELEMENTS`` in all.

    Example:
        >>> check_shape([1, 1, 28, 28], "plan.json input_shape")
        (1, 1, 28, 28)
    """
    shape = tuple(shape)
    if not 0 < len(shape) <= MAX_DIMS or not all(type(s) is int and s > 0 for s in shape):
        raise SurgeryError(f"{what} must be 1 to {MAX_DIMS} positive integers, "
                           f"got {str(list(shape))[:60]}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise SurgeryError(f"{what} {list(shape)} has {math.prod(shape):,} elements; at most "
                           f"{MAX_ELEMENTS:,} are allowed")
    return shape


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH and isinstance(item, (dict, list)):
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the plain file ``path``, read from the open file (never trusting its stat
    size: /proc files say 0) and at most ``limit`` of them; else SurgeryError. A FIFO, device or
    folder is refused without blocking.

    Example:
        >>> import tempfile
        >>> from surgery.atomic import write_text
        >>> read_bounded(write_text(Path(tempfile.mkdtemp()) / "a.json", "[1]"), 10)
        b'[1]'
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise SurgeryError(f"{path} is not a plain file")
            data = file.read(limit + 1)
    except OSError as exc:
        raise SurgeryError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise SurgeryError(f"{path} is over {limit:,} bytes; at most {limit:,} are read")
    return data


def read_json(path: Path) -> Any:
    """Parse a JSON file of at most ``MAX_JSON_BYTES`` (``read_bounded``), nesting at most
    ``MAX_DEPTH`` deep, integers of at most ``MAX_INT_DIGITS`` digits, no NaN/Infinity; else
    SurgeryError."""
    text = read_bounded(path, MAX_JSON_BYTES)
    try:
        data = json.loads(text.decode("utf-8"), parse_int=_bounded_int,
                          parse_constant=_no_constant)
    except RecursionError:
        raise SurgeryError(f"{path} nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise SurgeryError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
    if _depth(data) > MAX_DEPTH:
        raise SurgeryError(f"{path} nests deeper than {MAX_DEPTH} levels")
    return data


__all__ = ["MAX_ELEMENTS", "check_shape", "read_bounded", "read_json"]

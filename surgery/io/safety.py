"""Bounds on what a saved folder may ask for.

A folder from someone else is data: ``plan.json`` is read with a size, value-count,
nesting-depth and integer-length bound and finite numbers only (``read_json``), and a recorded
input shape is bounded in elements (``check_shape``) before anything is allocated; the base
model and the cost of an input shape are bounded in ``surgery.io.bases``. Files are written by
``surgery.atomic``.

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
MAX_JSON_VALUES = 1 << 22  # values (counted by commas, before parsing); densenet201: ~0.3M
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


def check_base_params(spec: str, source: str, params: int, max_params: int,
                      detail: str = "") -> None:
    """SurgeryError unless the base ``spec`` that ``source`` names, of ``params`` parameters
    (counted before it is built), is within the ``max_params`` a saved folder may ask for.

    Example:
        >>> check_base_params("lenet", "plan.json", 61_706, 1 << 28)
        >>> check_base_params("timm:big", "plan.json", 11, 10)
        Traceback (most recent call last):
        surgery.errors.SurgeryError: plan.json names base 'timm:big': 11 parameters, over the \
10 a saved folder may ask for: if you trust it, pass --base timm:big yourself
    """
    if params > max_params:
        raise SurgeryError(f"{source} names base {spec[:80]!r}{detail}: {params:,} parameters, "
                           f"over the {max_params:,} a saved folder may ask for: if you trust "
                           f"it, pass --base {spec[:80]} yourself")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON number")


def _check_tree(value: Any, path: Path) -> None:
    """Nesting at most ``MAX_DEPTH`` deep and integers of at most ``MAX_INT_DIGITS`` digits,
    checked in one walk without recursion."""
    bound, stack = 10 ** MAX_INT_DIGITS, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SurgeryError(f"{path} nests deeper than {MAX_DEPTH} levels")
        for child in item.values() if isinstance(item, dict) else item:
            if type(child) is int and not -bound < child < bound:
                raise SurgeryError(f"{path} holds an integer of over {MAX_INT_DIGITS} digits")
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


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


def read_json(path: Path, max_values: int = MAX_JSON_VALUES) -> Any:
    """Parse a JSON file of at most ``MAX_JSON_BYTES`` (``read_bounded``) and ``max_values``
    values (at most ``MAX_JSON_VALUES``; counted by commas before parsing), nesting at most
    ``MAX_DEPTH`` deep, integers of at most ``MAX_INT_DIGITS`` digits, finite numbers only (no
    NaN, Infinity or 1e999); else SurgeryError."""
    text = read_bounded(path, MAX_JSON_BYTES)
    max_values = min(max_values, MAX_JSON_VALUES)
    if text.count(b",") >= max_values:
        raise SurgeryError(f"{path} holds over {max_values:,} values; at most {max_values:,} "
                           f"are read")
    try:
        data = json.loads(text.decode("utf-8"), parse_float=_finite_float,
                          parse_constant=_no_constant)
    except RecursionError:
        raise SurgeryError(f"{path} nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise SurgeryError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
    if isinstance(data, (dict, list)):
        _check_tree(data, path)
    return data


__all__ = ["MAX_ELEMENTS", "MAX_JSON_VALUES", "check_base_params", "check_shape", "read_bounded", "read_json"]

"""Bounds on what a saved folder may ask for, and writes that never follow a symlink.

A folder from someone else is data: ``plan.json`` is read with a size, nesting-depth and
integer-length bound (``read_json``), a recorded input shape is bounded in elements
(``check_shape``) before anything is allocated, and files are written to a temporary name and
renamed into place (``write_atomic``), so a symlink at the destination is replaced, never
written through.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = write_atomic(Path(tempfile.mkdtemp()) / "a.json", lambda p: p.write_text("[1]"))
    >>> read_json(path)
    [1]
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
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


def read_json(path: Path) -> Any:
    """Parse a JSON file of at most ``MAX_JSON_BYTES``, nesting at most ``MAX_DEPTH`` deep,
    integers of at most ``MAX_INT_DIGITS`` digits, no NaN/Infinity; else SurgeryError."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise SurgeryError(f"{path} is {size:,} bytes; at most {MAX_JSON_BYTES:,} are read")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"), parse_int=_bounded_int,
                          parse_constant=_no_constant)
    except RecursionError:
        raise SurgeryError(f"{path} nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise SurgeryError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
    if _depth(data) > MAX_DEPTH:
        raise SurgeryError(f"{path} nests deeper than {MAX_DEPTH} levels")
    return data


def write_atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a new temporary file beside ``path``, then rename it to ``path``
    (a symlink there is replaced, not followed); the temporary file is removed on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


__all__ = ["MAX_ELEMENTS", "check_shape", "read_json", "write_atomic"]

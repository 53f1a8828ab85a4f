"""How the command line fails: one printable line ``error: ...`` on stderr and exit code 2.

Every error, from argparse or from a command, is one line: bad input names what is wrong
(``SurgeryError``, ``TraceError``), a file the system refuses names the file (``OSError``), an
allocation failure says so, and anything else (a bug) says which exception it was and that
``--traceback`` shows where. Text from files (module names in plan.json, paths) is printed
with control characters escaped, so no terminal escape sequence reaches the terminal.

Example:
    >>> printable("conv\\x1b[31m1")
    'conv\\\\x1b[31m1'
    >>> error_line(OSError(13, "Permission denied", "/out/plan.json"))
    '/out/plan.json: Permission denied'
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from surgery.errors import SurgeryError

MAX_LINE = 1000  # characters of an error line


class UsageError(SurgeryError):
    """A command line argparse refuses (the message is argparse's, in one line)."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise ``UsageError`` instead of printing the usage
    and exiting: ``main`` prints them in one line (exit 2) like every other error.

    Example:
        >>> parser = OneLineParser(prog="surgery demo")
        >>> _ = parser.add_argument("--n", type=int)
        >>> try:
        ...     parser.parse_args(["--n", "x"])
        ... except UsageError as exc:
        ...     print(exc)
        surgery demo: argument --n: invalid int value: 'x' (see `surgery demo --help`)
    """

    def error(self, message: str) -> NoReturn:
        hint = ""
        if "expected one argument" in message:
            hint = "; a value that starts with '-' is written --flag=VALUE"
        raise UsageError(f"{self.prog}: {message}{hint} (see `{self.prog} --help`)")


def printable(text: str) -> str:
    """``text`` with every non-printable character (ANSI escapes, newlines, bidi controls,
    undecodable bytes) written as a backslash escape.

    Example:
        >>> printable("a\\tb\\u202e")
        'a\\\\tb\\\\u202e'
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def _message(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _loaded(module: str, name: str) -> tuple[type, ...]:
    """``(module.name,)`` if that module is imported, else ``()``: an exception class of a
    module never imported cannot have been raised, and ``--help`` must not import torch."""
    found = sys.modules.get(module)
    return (getattr(found, name),) if found is not None else ()


def error_line(exc: BaseException) -> str:
    """The one line (without ``error: ``) that reports ``exc``.

    Example:
        >>> error_line(MemoryError())
        'out of memory (MemoryError): try a smaller input shape or batch size'
        >>> error_line(KeyError("x"))[:38]
        "unexpected KeyError: 'x' (a bug: rerun"
    """
    if isinstance(exc, (SurgeryError, *_loaded("graphs.errors", "TraceError"))):
        text = _message(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or _message(exc)}"
    elif isinstance(exc, OSError):
        text = _message(exc)
    elif isinstance(exc, (MemoryError, *_loaded("torch", "OutOfMemoryError"))) or \
            "can't allocate memory" in str(exc):
        text = f"out of memory ({_message(exc)[:200]}): try a smaller input shape or batch size"
    else:
        text = (f"unexpected {type(exc).__name__}: {_message(exc)[:300]} (a bug: rerun with "
                f"--traceback to see where, and please report it)")
    text = printable(text)
    return text if len(text) <= MAX_LINE else text[:MAX_LINE - 3] + "..."


__all__ = ["OneLineParser", "UsageError", "error_line", "printable"]

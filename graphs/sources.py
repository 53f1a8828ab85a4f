"""Where in the user's code something happened: the innermost frame outside torch and graphs/.

Example:
    >>> user_source('  File "/home/me/net.py", line 7, in forward\\n    x = x.view(1, 64)')
    '/home/me/net.py:7: x = x.view(1, 64)'
"""

from __future__ import annotations

import inspect
import linecache
import os
import re
import traceback
from pathlib import Path

import torch

TORCH_DIR = str(Path(torch.__file__).parent) + os.sep  # a prefix torchvision's path lacks
GRAPHS_DIR = str(Path(__file__).parent) + os.sep


def _ours(filename: str) -> bool:
    return filename.startswith((TORCH_DIR, GRAPHS_DIR))


def innermost_user_frame() -> str:
    """The innermost calling frame outside torch and graphs/, formatted as fx formats frames."""
    frame = inspect.currentframe()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _ours(filename) and not filename.startswith("<"):
            code = linecache.getline(filename, frame.f_lineno).strip()
            return f'  File "{filename}", line {frame.f_lineno}, in {frame.f_code.co_name}\n' \
                   f"    {code}"
        frame = frame.f_back
    return ""


def user_frame_of(exc: BaseException) -> str:
    """`` (at file:line: code)`` of the innermost user frame of an exception, or ""."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _ours(f.filename)]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno}: {f.line})"


def user_source(stack_trace: str) -> str:
    """The last frame of a stack trace outside torch itself, as ``file:line: code``."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)', stack_trace)
    for filename, line, code in reversed(frames):
        if not filename.startswith(TORCH_DIR):
            return f"{filename}:{line}: {code.strip()}"
    return ""


def at_source(node) -> str:
    """`` (at FILE:LINE: code)`` for the user line that made ``node``, or "" if none is known."""
    source = user_source(node.stack_trace or "")
    return f" (at {source})" if source else ""

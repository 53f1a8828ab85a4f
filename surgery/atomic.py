"""The one way the toolkit writes a file: a new temporary file beside it, then ``os.replace``.

Every file written (safetensors, plan.json, ONNX, .pt2, report.json/.md/.png, the latency cache,
the benchmarks' results) goes through ``write_atomic``, which guarantees:

- a symlink or hard link at the destination is replaced, never written through: the rename swaps
  the folder entry, so the link's target (or the hard link's other name) keeps its content;
- readers see the old file or the complete new one, never a half-written one (the data is
  flushed with ``fsync`` before the rename);
- the new file has mode ``0o666 & ~umask``, as ``open()`` would give: the kernel applies the
  umask to the temporary file (created with ``O_CREAT | O_EXCL``, never through a link), and
  that mode is set again if a library put a file of its own there (safetensors: 0o600);
- on any exception (KeyboardInterrupt included) the temporary file is removed and the
  destination is left as it was.

Libraries that take a path (``torch.onnx.export``, ``torch.export.save``, safetensors'
``save_file``, matplotlib's ``savefig``) are handed the temporary path. Its name is
``.<random>.<name>``: hidden, in the destination's folder (so the rename never crosses file
systems), and ending with the destination's name, so a library that picks a format from the
suffix sees the same one. The folder itself must exist and is trusted (it is not re-checked).

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_text(folder / "a.json", "[1]").read_text()
    '[1]'
    >>> _ = write_atomic(folder / "b.bin", lambda tmp: tmp.write_bytes(b"\\x00"))
    >>> sorted(p.name for p in folder.iterdir())  # no temporary file left
    ['a.json', 'b.bin']
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TRIES = 100
_MAX_NAME = 200  # bytes of the destination's name kept in the temporary name (NAME_MAX is 255)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a new empty temporary file beside ``path``, then rename it to
    ``path``; return ``path``. ``write`` may reopen ``tmp`` by name (truncating it is fine).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.txt"
        >>> write_atomic(path, lambda tmp: tmp.write_text("hi")).read_text()
        'hi'
    """
    path = Path(path)
    tmp, mode = _new_temp_file(path)
    done = False
    try:
        write(tmp)
        _flush(tmp, mode)
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            _remove(tmp)
    return path


def write_file_atomic(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """``write_atomic`` handing ``write`` the temporary file opened for binary writing: for
    torch's zip writer (``torch.save``, ``torch.export.save``), which names its archive after a
    file name it is given and refuses some (one ending in a backslash), never a file object.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "m.pt2"
        >>> write_file_atomic(path, lambda f: f.write(b"PK")).read_bytes()
        b'PK'
    """
    def write_into(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)
    return write_atomic(path, write_into)


def write_text(path: str | Path, text: str) -> Path:
    """``write_atomic`` of UTF-8 text.

    Example:
        >>> import tempfile
        >>> write_text(Path(tempfile.mkdtemp()) / "r.md", "# report").read_text()
        '# report'
    """
    return write_atomic(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def _new_temp_file(path: Path) -> tuple[Path, int]:
    """Create an empty, hidden, uniquely named file in ``path``'s folder, never through a link;
    return its path and its mode (0o666 & ~umask: the kernel applied the umask)."""
    name = os.fsencode(path.name)[-_MAX_NAME:].decode("utf-8", "ignore")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    for _ in range(_TRIES):
        tmp = path.parent / f".{secrets.token_hex(6)}.{name}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(f"no free temporary name beside {path} after {_TRIES} tries")


def _flush(tmp: Path, mode: int) -> None:
    """fsync what ``write`` put in ``tmp`` and give it ``mode`` (a library may have replaced
    the file with one of its own, e.g. safetensors' 0o600); refuse anything but a plain file."""
    fd = os.open(tmp, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{tmp} is no longer a plain file")
        if stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


__all__ = ["write_atomic", "write_text"]

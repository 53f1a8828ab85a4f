"""Where the command line writes: ``--out`` (a folder or a file) and ``--force``.

Checked before any work: an output folder is new, empty, or (with ``--force``) one whose
files of ours are replaced and others left alone; an output file is new or replaced with
``--force``; neither is ever a symlink. Missing folders above the output are created (as
``mkdir -p``), and a file is actually created (and removed) in the destination folder first, so
a read-only place fails now, not after training.

Example:
    >>> import tempfile
    >>> out = check_out_folder(tempfile.mkdtemp() + "/new", force=False)
    >>> prepare_out_folder(out).is_dir()
    True
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from surgery.errors import SurgeryError

# Every file the toolkit writes into an output folder: --force replaces these and no others.
OUR_FILES = ("model.safetensors", "plan.json", "model.onnx", "model.pt2", "report.json",
             "report.md", "report.png")


def add_force_argument(p: argparse.ArgumentParser) -> None:
    """--force: replace existing output (only the files the toolkit writes)."""
    p.add_argument("--force", action="store_true",
                   help="replace existing output (clears only the files this tool writes)")


def check_out_folder(text: str, force: bool) -> Path:
    """An output folder: new (missing folders above it are created), empty, or with ``force``
    one whose files of ours (``OUR_FILES``) are removed here; other files stay. Never a file or
    a symlink.

    Example:
        >>> import tempfile
        >>> check_out_folder(tempfile.mkdtemp(), force=False).is_dir()
        True
    """
    out = Path(text)
    if out.is_symlink():
        raise SurgeryError(f"--out {out} is a symbolic link: pass a folder")
    if out.exists() and not out.is_dir():
        raise SurgeryError(f"--out {out} exists and it is a file: pass a folder")
    if not out.exists():
        return check_writable(make_parents(out), out)
    check_writable(out, out)
    ours = _ours(out)
    if not force and any(out.iterdir()):
        raise SurgeryError(f"--out {out} is not empty: pass --force to replace the files this "
                           f"tool writes there ({', '.join(p.name for p in ours) or 'none yet'})")
    folders = [p.name for p in ours if p.is_dir() and not p.is_symlink()]
    if folders:
        raise SurgeryError(f"--out {out}: {folders[0]} is a folder, not a file of ours")
    return out


def _ours(out: Path) -> list[Path]:
    return [out / n for n in OUR_FILES if (out / n).exists() or (out / n).is_symlink()]


def prepare_out_folder(out: Path, names: tuple[str, ...] = OUR_FILES) -> Path:
    """Make a folder passed by ``check_out_folder`` ready: create it, remove our old files
    (those of ``names``; a symlink among them is removed, never followed).

    Example:
        >>> import tempfile
        >>> prepare_out_folder(Path(tempfile.mkdtemp()) / "new").is_dir()
        True
    """
    out.mkdir(exist_ok=True)
    for path in _ours(out):
        if path.name in names:
            path.unlink()
    return out


def check_out_file(text: str, force: bool) -> Path:
    """An output file: new (missing folders above it are created), or an existing regular file
    with ``force``. Never a folder and never written through a symlink.

    Example:
        >>> import tempfile
        >>> check_out_file(tempfile.mkdtemp() + "/m.onnx", force=False).name
        'm.onnx'
    """
    out = Path(text)
    if out.is_symlink():
        raise SurgeryError(f"--out {out} is a symbolic link: refusing to write through it")
    if out.is_dir():
        raise SurgeryError(f"--out {out} is a folder: pass a file name")
    if out.exists() and not force:
        raise SurgeryError(f"--out {out} exists: pass --force to replace it")
    return check_writable(make_parents(out), out)


def make_parents(out: Path) -> Path:
    """Create the missing folders above ``out`` (as ``mkdir -p``) and return its parent; a
    file (or a dangling link) in the way is a SurgeryError.

    Example:
        >>> import tempfile
        >>> make_parents(Path(tempfile.mkdtemp()) / "a" / "b" / "m.onnx").name
        'b'
    """
    parent = out.parent
    for above in (parent, *parent.parents):
        if above.is_dir():
            break
        if above.exists() or above.is_symlink():
            raise SurgeryError(f"--out {out}: {above} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SurgeryError(f"--out {out}: cannot create folder {parent} "
                           f"({exc.strerror or type(exc).__name__})") from None
    return parent


def check_writable(folder: Path, out: Path) -> Path:
    """Return ``out`` if a file can be created (and removed) in ``folder``; else SurgeryError.
    Tried, not inferred from permission bits: read-only mounts and root's view count too.

    Example:
        >>> import tempfile
        >>> check_writable(Path(tempfile.mkdtemp()), Path("m.onnx")).name
        'm.onnx'
    """
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".surgery-probe-"):
            pass
    except OSError as exc:
        raise SurgeryError(f"--out {out}: cannot write in {folder} "
                           f"({exc.strerror or type(exc).__name__})") from None
    return out


__all__ = ["OUR_FILES", "add_force_argument", "check_out_file", "check_out_folder",
           "check_writable", "make_parents", "prepare_out_folder"]

"""Helpers shared by the benchmark scripts (inputs, timing, markdown tables); models: builders."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from surgery.atomic import write_text


def input_for(name: str, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    shape = (1, 1, 28, 28) if name == "lenet" else (1, 3, size, size)
    return torch.randn(*shape, generator=generator)


def last_linear(model: nn.Module) -> nn.Module | None:
    """The final classifier: the last nn.Linear registered in the model."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


def median_seconds(fn: Callable[[], object], repeats: int,
                   setup: Callable[[], object] | None = None) -> tuple[float, object]:
    """Median wall time of ``fn(setup())`` over ``repeats`` calls; setup is not timed."""
    times, last = [], None
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        t0 = time.perf_counter()
        last = fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), last


def short_error(exc: BaseException, limit: int = 140) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def environment_line(threads: int) -> str:
    import torch_pruning as tp

    return (f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"torch-pruning {tp.__version__}, python {platform.python_version()}, "
            f"{platform.machine()} CPU ({platform.processor() or 'unknown'}), "
            f"torch.set_num_threads({threads})")


def write_marked_section(path, name: str, body: str, *, new_file: str = "",
                         before_heading: str | None = None) -> None:
    """Put ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``.

    Only that span changes, so sections other scripts (or people) wrote survive. Without the
    markers the section goes before the line ``before_heading`` (if given and present), else at
    the end; a missing file starts as ``new_file``.
    """
    from pathlib import Path

    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else new_file
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block.rstrip("\n") + rest.split(end, 1)[1]
    elif before_heading and f"\n{before_heading}\n" in text:
        head, tail = text.split(f"\n{before_heading}\n", 1)
        text = f"{head}\n{block}\n{before_heading}\n{tail}"
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block
    write_text(path, text)

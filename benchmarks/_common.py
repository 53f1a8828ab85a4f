"""Helpers shared by the benchmark scripts (model building, timing, markdown tables)."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import torch
import torchvision
from torch import nn

from surgery.zoo import LeNet


def build_model(name: str) -> nn.Module:
    """A randomly initialised model in eval mode (seeded, so every run builds the same one)."""
    torch.manual_seed(0)
    model = LeNet() if name == "lenet" else torchvision.models.get_model(name, weights=None)
    return model.eval()


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

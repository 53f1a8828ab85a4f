"""How important each removable block is (``graphs.blocks``), and the settings of removing some.

Two criteria, by name in ``BLOCK_CRITERIA``:

- ``weight`` (the data-free default): per branch, the RMS gain of its last layer, the norm of
  the parameter its zeroing zeroes divided by the square root of its output count
  (||W||_F / sqrt(out) for a projection, the RMS of a BatchNorm's or layer scale's gamma),
  summed over the block's branches: a branch that adds little to the stream scores low. A
  block whose branches end in an op without parameters scores +inf (it is never chosen);
- ``cosine`` (needs data: the example inputs, or ``BlockRemoval.batches``): 1 - the cosine
  similarity between the block's stream input and its output, per position along the
  channel dim (dim -1 of a (B, T, C) stream, dim 1 of a (B, C, H, W) map), averaged: how much
  the block changes its input (ShortGPT's block influence; the angular distance of Gromov et
  al. is its arccos).

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from graphs.blocks import find_blocks
    >>> model, x = resnet18().eval(), torch.randn(2, 3, 32, 32)
    >>> blocks = find_blocks(model, x)
    >>> scores = block_scores(model, blocks, x, BlockRemoval(2, "cosine"))
    >>> len(scores), all(0 <= s <= 2 for s in scores.values())
    (5, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from graphs.blocks import Block
from graphs.inputs import call_model
from graphs.modes import eval_mode
from surgery.errors import SurgeryError


@dataclass(frozen=True)
class BlockRemoval:
    """Remove the ``count`` least important blocks, ranked by ``importance`` (a key of
    ``BLOCK_CRITERIA``); ``batches``: inputs for ``cosine`` (default: the example inputs),
    each an input as prune() takes it, or an ``(inputs, targets)`` pair."""

    count: int = 0
    importance: str = "weight"
    batches: Sequence[Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise SurgeryError(f"remove_blocks must be a non-negative integer, got "
                               f"{self.count!r}")
        if self.importance not in BLOCK_CRITERIA:
            raise SurgeryError(f"unknown block importance {self.importance!r}: choose one of "
                               f"{', '.join(sorted(BLOCK_CRITERIA))}")

    @staticmethod
    def of(value: int | BlockRemoval | None) -> BlockRemoval | None:
        """``prune(remove_blocks=...)``: a count, settings, or None.

        Example:
            >>> BlockRemoval.of(2).count, BlockRemoval.of(None)
            (2, None)
        """
        return value if value is None or isinstance(value, BlockRemoval) else BlockRemoval(value)


def weight_scores(model: nn.Module, blocks: Sequence[Block], inputs: Any,
                  settings: BlockRemoval) -> dict[str, float]:
    """Block name -> summed RMS gain of its branches' last layers (see the module docstring)."""
    params = dict(model.named_parameters())
    scores = {}
    for block in blocks:
        tensors = [params[n].detach() for n in block.zero if n.rpartition(".")[2] != "bias"]
        scores[block.module] = math.inf if not tensors else sum(
            float(t.double().norm()) / math.sqrt(t.shape[0] if t.dim() else 1) for t in tensors)
    return scores


def cosine_scores(model: nn.Module, blocks: Sequence[Block], inputs: Any,
                  settings: BlockRemoval) -> dict[str, float]:
    """Block name -> mean 1 - cos(stream in, out) on the batches (see the module docstring)."""
    modules = dict(model.named_modules())
    sums = {b.module: [0.0, 0] for b in blocks}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            x = args[0] if args and isinstance(args[0], torch.Tensor) else \
                kwargs.get("hidden_states")
            y = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and \
                    x.shape == y.shape:
                dim = 1 if x.dim() == 4 else -1
                cos = torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=dim)
                sums[name][0] += float((1 - cos).clamp_min(0).sum())
                sums[name][1] += cos.numel()
        return record

    handles = [modules[b.module].register_forward_hook(hook(b.module), with_kwargs=True)
               for b in blocks]
    batches = settings.batches if settings.batches is not None else [inputs]
    try:
        with eval_mode(model), torch.no_grad():
            for batch in batches:
                call_model(model, batch[0] if _is_pair(batch) else batch)
    finally:
        for h in handles:
            h.remove()
    return {name: total / n if n else math.inf for name, (total, n) in sums.items()}


def _is_pair(batch: Any) -> bool:
    """An ``(inputs, targets)`` pair of a training loader (targets: integer labels)."""
    return isinstance(batch, (tuple, list)) and len(batch) == 2 and \
        isinstance(batch[1], torch.Tensor) and not batch[1].is_floating_point()


BLOCK_CRITERIA: Mapping[str, Callable[..., dict[str, float]]] = MappingProxyType({
    "weight": weight_scores, "cosine": cosine_scores})


def block_scores(model: nn.Module, blocks: Sequence[Block], inputs: Any,
                 settings: BlockRemoval) -> dict[str, float]:
    """Block name -> importance by ``settings.importance`` (low: removed first).

    Example:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> from graphs.blocks import find_blocks
        >>> model, x = resnet18().eval(), torch.zeros(1, 3, 32, 32)
        >>> scores = block_scores(model, find_blocks(model, x), x, BlockRemoval(1))
        >>> scores["layer1.0"]  # BatchNorm gammas start at 1
        1.0
    """
    return BLOCK_CRITERIA[settings.importance](model, blocks, inputs, settings)


def least_important(scores: Mapping[str, float], count: int) -> list[str]:
    """The ``count`` lowest-scored block names (ties: forward order).

    Example:
        >>> least_important({"a": 2.0, "b": 1.0, "c": 1.0}, 2)
        ['b', 'c']
    """
    if count > len(scores):
        raise SurgeryError(f"remove_blocks={count}, but the model has {len(scores)} removable "
                           f"blocks (residual branches that add into a stream)")
    order = sorted(range(len(scores)), key=lambda i: (list(scores.values())[i], i))
    names = list(scores)
    return [names[i] for i in order[:count]]

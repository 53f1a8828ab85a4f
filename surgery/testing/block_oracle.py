"""The exactness oracle for whole blocks: zero their branches, so removing them changes nothing.

``check_blocks`` zeroes every branch of ``count`` random removable blocks (``graphs.blocks``:
the parameters of each branch's last layer, ``Block.zero``), so each such block computes
``x + 0``; their data-free importance (``weight``) is then 0, ``prune(remove_blocks=count)``
must remove exactly them, and the pruned model must give the zeroed model's output. A
post-norm block (BERT: ``LN(x + f(x))``) computes ``LN(x)`` once zeroed, not ``x``: removing
it is not exact against the zeroed model, and ``BlockCheck.inexact`` names it. What *is*
exact for every block is ``skipped``: the original model with each removed block's forward
replaced by its stream input (a forward hook), which ``BlockCheck.skip_error`` compares.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from surgery.testing.oracle import randomize_weights
    >>> model = randomize_weights(resnet18())
    >>> c = check_blocks(model, torch.randn(2, 3, 32, 32), 2)
    >>> c.removed == c.zeroed, c.error, c.skip_error, c.output_scale > 0.01
    (True, 0.0, 0.0, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from graphs.blocks import Block, find_blocks
from surgery.prune import PruneResult, prune
from surgery.testing.oracle import outputs_at, relative_error


@dataclass(frozen=True)
class BlockCheck:
    """What ``check_blocks`` saw: the zeroed and removed blocks and the output errors."""

    result: PruneResult
    zeroed: list[str]
    removed: list[str]
    error: float  # relative error of the pruned output against the zeroed model's
    skip_error: float  # ... against the zeroed model with the removed blocks skipped
    output_scale: float  # mean |output| of the zeroed model: ~0 makes the check vacuous
    inexact: tuple[str, ...]  # removed blocks whose removal is not their zeroed branch


def check_blocks(model: nn.Module, example_inputs: Any, count: int, seed: int = 0
                 ) -> BlockCheck:
    """Zero the branches of ``count`` random removable blocks of ``model`` (in place), prune
    with ``remove_blocks=count``, compare (see the module docstring)."""
    blocks = [b for b in find_blocks(model, example_inputs) if b.zero]
    generator = torch.Generator().manual_seed(seed)
    picked = sorted(torch.randperm(len(blocks), generator=generator)[:count].tolist())
    chosen = [blocks[i] for i in picked]
    zero_branches(model, chosen)
    result = prune(model, example_inputs, remove_blocks=count)
    expected = outputs_at(model, example_inputs, None)
    skipped = skipped_outputs(model, result.plan.removed_blocks, example_inputs)
    got = outputs_at(result.model, example_inputs, None)
    return BlockCheck(result, [b.module for b in chosen], sorted(result.plan.removed_blocks,
                      key=[b.module for b in blocks].index),
                      _error(got, expected), _error(got, skipped),
                      float(torch.cat([e.flatten().abs() for e in expected]).mean()),
                      tuple(b.module for b in chosen if b.inexact))


def zero_branches(model: nn.Module, blocks: Sequence[Block]) -> None:
    """Zero the last layer of every branch of ``blocks`` (``Block.zero``), in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for block in blocks:
            for name in block.zero:
                params[name].zero_()


def skipped_outputs(model: nn.Module, names: Sequence[str], example_inputs: Any
                    ) -> list[torch.Tensor]:
    """``model``'s outputs with each block in ``names`` returning its stream input (the first
    positional tensor, else ``hidden_states``) instead of computing."""
    def skip(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs["hidden_states"]
        return (x, *out[1:]) if isinstance(out, tuple) else x

    handles = [model.get_submodule(n).register_forward_hook(skip, with_kwargs=True)
               for n in names]
    try:
        return outputs_at(model, example_inputs, None)
    finally:
        for h in handles:
            h.remove()


def _error(got: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    if [g.shape for g in got] != [e.shape for e in expected]:
        return float("inf")
    return max((relative_error(g, e) for g, e in zip(got, expected)), default=0.0)

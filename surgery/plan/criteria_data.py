"""Criteria that need data: activation statistics (APoZ, mean activation) and a diagonal Hessian.

Like ``surgery.plan.taylor.taylor``, each is a factory ``(model, batches) -> criterion`` whose
result goes to ``prune(importance=...)``; ``DATA_CRITERIA`` lists them by name.

- ``apoz``: one minus the Average Percentage of Zeros after the activation (Hu et al. 2016):
  channels that are mostly zero after ReLU score low. Activations are read with forward hooks on
  the group's producing layers: a norm layer's output when the group has one, else the conv /
  linear output, through ReLU (the model's activation may be a function, not a module);
- ``mean_activation``: the mean of ReLU(output) per channel (Molchanov et al. 2017's baseline);
- ``hessian``: ``sum 0.5 * w**2 * g**2`` per channel, the diagonal Hessian approximated by
  squared gradients (torch-pruning's HessianImportance squares per-sample gradients; this uses
  per-batch gradients).

Example:
    >>> import torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    >>> batches = [(torch.randn(8, 1, 28, 28), torch.arange(8))]
    >>> prune(model, x, ratio=0.5, importance=apoz(model, batches)).model.conv1.out_channels
    3
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from types import MappingProxyType

import torch
from torch import Tensor, nn

from graphs.datamodel import OUT, Group
from graphs.inputs import call_model
from graphs.kinds import layer_kind, member_tensor
from graphs.modes import eval_mode
from surgery.errors import SurgeryError
from surgery.plan.importance import Criterion
from surgery.plan.saliency import accumulate, criterion

Statistic = Callable[[Tensor], Tensor]  # post-ReLU activations moved to (channels, rest) -> [C]


def hessian(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> Criterion:
    """Diagonal-Hessian criterion ``sum 0.5 * w**2 * g**2`` over ``batches``."""
    return criterion(accumulate(model, batches, "hessian", max_batches=max_batches), "hessian")


def apoz(model: nn.Module, batches: Iterable, max_batches: int | None = 8) -> Criterion:
    """``1 - APoZ`` per channel: the fraction of post-ReLU activations that are non-zero."""
    return _activation_criterion(model, batches, max_batches, "apoz",
                                 lambda a: (a > 0).double().mean(dim=1))


def mean_activation(model: nn.Module, batches: Iterable, max_batches: int | None = 8
                    ) -> Criterion:
    """Mean post-ReLU activation per channel."""
    return _activation_criterion(model, batches, max_batches, "mean_activation",
                                 lambda a: a.double().mean(dim=1))


DATA_CRITERIA: Mapping[str, Callable[..., Criterion]] = MappingProxyType(
    {"apoz": apoz, "mean_activation": mean_activation, "hessian": hessian})


def _activation_criterion(model: nn.Module, batches: Iterable, max_batches: int | None,
                          name: str, statistic: Statistic) -> Criterion:
    stats = activation_stats(model, batches, statistic, max_batches)

    def score(scored: nn.Module, group: Group) -> Tensor:
        members = _watched(scored, group)
        if not members or any(m.module not in stats or len(stats[m.module]) !=
                              member_tensor(scored, m).shape[0]
                              for m in members):
            raise SurgeryError(f"{name}: no activations recorded for group {group.id} "
                               f"(score the same model the statistics came from)")
        total = torch.zeros(group.channels, dtype=torch.float64)
        for m in members:
            total += stats[m.module][torch.tensor(m.indices)].mean(dim=1)
        return total / len(members)

    score.__name__ = name
    return score


def activation_stats(model: nn.Module, batches: Iterable, statistic: Statistic,
                     max_batches: int | None = 8) -> dict[str, Tensor]:
    """Module name -> ``statistic`` of ReLU(output) per output channel, averaged over batches.

    Every conv, linear and norm layer is watched (channels: dim 1, or the last dim of a
    linear / layer norm on sequences).
    """
    watched = {n: m for n, m in model.named_modules() if _watchable(m)}
    sums: dict[str, Tensor] = {}

    def hook(name: str, module: nn.Module, output: Tensor) -> None:
        dim = layer_kind(module).channel_axis
        flat = output.detach().relu().movedim(dim, 0).flatten(1)
        sums[name] = sums.get(name, 0) + statistic(flat)

    handles = [m.register_forward_hook(lambda mod, _, out, n=n: hook(n, mod, out))
               for n, m in watched.items()]
    seen = 0
    try:
        with eval_mode(model), torch.no_grad():
            for inputs, _ in islice(batches, max_batches):
                call_model(model, inputs)
                seen += 1
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise SurgeryError("activation criteria need at least one (inputs, targets) batch")
    return {name: s / seen for name, s in sums.items()}


def _watchable(module: nn.Module) -> bool:
    """A layer whose output carries its channels on a known axis (conv, linear, norms)."""
    kind = layer_kind(module)
    return kind is not None and kind.channel_axis is not None and not kind.leaf


def _is_norm(module: nn.Module) -> bool:
    kind = layer_kind(module)
    return kind is not None and kind.norm


def _watched(model: nn.Module, group: Group) -> list:
    """The group's norm outputs if it has norms (the activation's input), else its producers.

    Members naming a parameter (``attr``: a layer scale, a bias) or a size have no output of
    their own to watch; only layers' output dims are.
    """
    producers = [m for m in group.members if m.role == OUT and m.dim == 0 and not m.attr
                 and _watchable(model.get_submodule(m.module))]
    norms = [m for m in producers if _is_norm(model.get_submodule(m.module))]
    return norms or producers

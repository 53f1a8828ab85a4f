"""The exactness oracle: make chosen channels dead, so pruning them must not change the output.

Zeroing a channel's producers (filter rows, bias, norm affine) and its consumers' input slices makes
it contribute nothing; a correct surgery then removes exactly those channels (they score 0 under
L1) and the pruned model computes the same function.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> from surgery.io.models import LeNet
    >>> model = LeNet().eval()
    >>> dead = kill_channels(model, trace(model, torch.zeros(1, 1, 28, 28)), ratio=0.5)
    >>> sorted(len(v) for v in dead.values())
    [3, 8, 42, 60]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from graphs.datamodel import OUT, DependencyGraph, Group
from graphs.inputs import call_model
from graphs.kinds import indexed_tensor, member_tensor
from graphs.trace import trace
from surgery.plan.plan import channels_to_remove
from surgery.prune import PruneResult, prune


@dataclass(frozen=True)
class OracleCheck:
    """What ``check()`` saw: the dead channels, what prune removed, and the output error."""

    graph: DependencyGraph
    result: PruneResult
    dead: dict[int, list[int]]
    removed: dict[int, list[int]]
    error: float  # relative error of the pruned output against the killed model's output
    shape_kept: bool
    output_scale: float  # mean |output| of the killed model: ~0 makes the comparison vacuous


def check(model: nn.Module, example_inputs: Any, ratio: float, seed: int = 0,
          at: str | None = None) -> OracleCheck:
    """Kill floor(ratio*C) random channels per group of ``model`` (in place), prune, compare.

    ``at`` names a submodule whose output is compared instead of the model's (a detector's
    head: post-processing such as NMS turns 1e-7 differences into other boxes).

    Example:
        >>> from surgery.io.models import LeNet
        >>> torch.manual_seed(0) is not None
        True
        >>> c = check(LeNet().eval(), torch.randn(2, 1, 28, 28), ratio=0.5)
        >>> c.removed == c.dead, c.shape_kept, c.error <= 1e-4 and c.output_scale > 1e-6
        (True, True, True)
    """
    graph = trace(model, example_inputs)
    dead = kill_channels(model, graph, ratio, seed=seed)
    exact = {g.id: ratio for g in graph.prunable if not g.inexact}
    result = prune(model, example_inputs, ratio=exact if len(exact) < len(graph.prunable)
                   else ratio)
    expected, got = (outputs_at(m, example_inputs, at) for m in (model, result.model))
    same = [g.shape for g in got] == [e.shape for e in expected]
    error = max((relative_error(g, e) for g, e in zip(got, expected)), default=0.0) \
        if same else float("inf")
    return OracleCheck(graph, result, dead,
                       {g.group: g.removed_channels for g in result.plan.groups
                        if g.removed_channels or g.group in exact},
                       error, same, float(torch.cat([e.flatten().abs() for e in expected])
                                          .mean()) if expected else 0.0)


def outputs_at(model: nn.Module, example_inputs: Any, at: str | None) -> list[torch.Tensor]:
    """The float tensors ``model`` (or its submodule ``at``, on its first call) outputs."""
    seen: list[torch.Tensor] = []

    def keep(module: nn.Module, args: Any, output: Any) -> None:
        if not seen:
            seen.extend(tensors_of(output))

    handle = model.get_submodule(at).register_forward_hook(keep) if at else None
    try:
        with torch.no_grad():
            output = call_model(model, example_inputs)
    finally:
        if handle is not None:
            handle.remove()
    return seen if at else tensors_of(output)


def tensors_of(output: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a model output (a tensor, tuple, list or dict of them).

    Example:
        >>> [tuple(t.shape) for t in tensors_of({"a": torch.zeros(2), "b": [torch.ones(1, 3)]})]
        [(2,), (1, 3)]
    """
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in tensors_of(item)]
    return []


def kill_channels(model: nn.Module, graph: DependencyGraph, ratio: float,
                  seed: int = 0) -> dict[int, list[int]]:
    """Zero floor(ratio*C) random channels of every prunable group that prunes exactly (see
    ``Group.inexact``) in place; group id -> channels."""
    generator = torch.Generator().manual_seed(seed)
    dead = {}
    for group in (g for g in graph.prunable if not g.inexact):
        n = channels_to_remove(group.channels, ratio)
        chosen = torch.randperm(group.channels, generator=generator)[:n].sort().values.tolist()
        kill(model, group, chosen)
        dead[group.id] = chosen
    return dead


def kill(model: nn.Module, group: Group, channels: list[int]) -> None:
    """Zero ``channels`` of ``group`` in every member: weights along the member's dim, OUT biases."""
    with torch.no_grad():
        for m in group.members:
            module = model.get_submodule(m.module)
            tensor = member_tensor(model, m) if m.attr else weight_source(module, m.dim)
            positions = torch.tensor([p for c in channels for p in m.indices[c]], dtype=torch.long)
            if positions.numel() == 0 or tensor is None:
                continue
            tensor.index_fill_(m.dim, positions, 0.0)
            bias = getattr(model.get_submodule(m.module), "bias", None)
            if m.role == OUT and not m.attr and bias is not None:
                bias.index_fill_(0, positions, 0.0)


def weight_source(module: nn.Module, dim: int) -> torch.Tensor | None:
    """The stored tensor whose zeros along ``dim`` zero the layer's weight there: the weight
    itself, or what a parametrization computes it from (weight_norm: the scale g along the
    output dim, the direction v along others; spectral_norm: the original).

    Example:
        >>> from torch.nn.utils.parametrizations import weight_norm
        >>> layer = weight_norm(nn.Linear(2, 3))
        >>> weight_source(layer, 0) is layer.parametrizations.weight.original0
        True
    """
    stored = module.parametrizations.weight if parametrize.is_parametrized(module, "weight") \
        else module
    g, v = (getattr(stored, a, None) for a in ("original0", "original1")) \
        if stored is not module else (getattr(module, "weight_g", None),
                                      getattr(module, "weight_v", None))
    if isinstance(g, torch.Tensor) and isinstance(v, torch.Tensor):
        return g if dim == 0 else v
    return getattr(stored, "original", None) if stored is not module else indexed_tensor(module)


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial affine and running stats, so tests exercise them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model


def randomize_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights everywhere, in place; returns ``model`` in eval mode.

    torchvision zero-inits ViT's head and ConvNeXt's layer scale is 1e-6: an oracle comparison
    on such outputs would be vacuous. Matrices get N(0, 1/fan_in), weight and layer-scale vectors
    U(0.5, 1.5), other vectors N(0, 0.01).

    Example:
        >>> from surgery.io.models import LeNet
        >>> float(randomize_weights(LeNet()).fc3.weight.detach().abs().sum()) > 0
        True
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "layer_scale" not in name:
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)
            elif name.endswith("weight") or "layer_scale" in name:
                p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return model.eval()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||.

    Example:
        >>> relative_error(torch.ones(4), torch.ones(4))
        0.0
    """
    return float((a - b).norm() / b.norm().clamp_min(1e-12))

"""Unstructured magnitude sparsity: per-layer masks, applying them, and measuring zeros.

Unlike the structured surgery elsewhere in this package, this keeps every tensor's shape and
only zeroes individual weights; pass the masks to ``surgery.recover.train.train(..., masks=...)`` so
the zeros survive fine-tuning.

Example (the LeNet recipe: 73.87% of all parameters, biases included, are zero):
    >>> from surgery.io.models import LeNet
    >>> model = LeNet()
    >>> recipe = {"conv1": 0.85, "conv2": 0.8, "fc1": 0.75, "fc2": 0.7, "fc3": 0.8}
    >>> masks = magnitude_masks(model, recipe)
    >>> apply_masks(model, masks)
    >>> round(sparsity_report(model)["sparsity"], 4)
    0.7387
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from surgery.errors import SurgeryError


def magnitude_masks(model: nn.Module, sparsity: dict[str, float]) -> dict[str, Tensor]:
    """Build 0/1 masks that zero the smallest-magnitude weights of each named layer.

    For layer name ``L`` with fraction ``f``, the ``round(f * L.weight.numel())`` entries of
    ``L.weight`` with the smallest ``|w|`` get mask 0 (ties broken by position, so the count
    is exact). Keys of the result are parameter names such as ``"conv1.weight"``; biases are
    never masked. The model is not modified.

    Raises SurgeryError for a name that is not a layer with a ``weight`` or a fraction
    outside ``[0, 1)``.

    Example:
        >>> from surgery.io.models import LeNet
        >>> masks = magnitude_masks(LeNet(), {"fc3": 0.5})
        >>> int((masks["fc3.weight"] == 0).sum())
        420
    """
    modules = dict(model.named_modules())
    masks: dict[str, Tensor] = {}
    for name, fraction in sparsity.items():
        weight = _layer_weight(modules, name)
        _check_fraction(name, fraction)
        masks[f"{name}.weight"] = _smallest_mask(weight.detach(), fraction)
    return masks


def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Multiply each named parameter by its mask in place (under ``no_grad``).

    Raises SurgeryError if a mask names no parameter or its shape differs.

    Example:
        >>> from surgery.io.models import LeNet
        >>> model = LeNet()
        >>> apply_masks(model, {"fc3.bias": torch.zeros(10)})
        >>> int(model.fc3.bias.count_nonzero())
        0
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            param = params.get(name)
            if param is None:
                raise SurgeryError(f"mask for unknown parameter {name!r}; known: {sorted(params)}")
            if mask.shape != param.shape:
                raise SurgeryError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, "
                    f"parameter has {tuple(param.shape)}"
                )
            param.mul_(mask.to(device=param.device, dtype=param.dtype))


def sparsity_report(model: nn.Module) -> dict:
    """Count exact zeros per layer and overall, over ALL parameters (weights and biases).

    Returns ``{"zeros", "params", "sparsity", "layers": {name: {"zeros", "params",
    "sparsity", "weight_sparsity"}}}``; a layer is any module owning parameters directly,
    and ``weight_sparsity`` is ``None`` for a layer without a ``weight``.

    Example:
        >>> from surgery.io.models import LeNet
        >>> report = sparsity_report(LeNet())
        >>> report["params"], report["sparsity"], sorted(report["layers"])[:2]
        (44426, 0.0, ['conv1', 'conv2'])
    """
    layers = {}
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own:
            layers[name] = _layer_stats(module, own)
    zeros = sum(stats["zeros"] for stats in layers.values())
    params = sum(stats["params"] for stats in layers.values())
    return {
        "zeros": zeros,
        "params": params,
        "sparsity": zeros / params if params else 0.0,
        "layers": layers,
    }


def _layer_weight(modules: dict[str, nn.Module], name: str) -> Tensor:
    module = modules.get(name)
    weight = getattr(module, "weight", None) if module is not None else None
    if not isinstance(weight, Tensor):
        known = sorted(
            n for n, m in modules.items() if isinstance(getattr(m, "weight", None), Tensor)
        )
        raise SurgeryError(
            f"unknown layer {name!r} in sparsity recipe; layers with weights: {known}"
        )
    return weight


def _check_fraction(name: str, fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise SurgeryError(f"sparsity for {name!r} must be a number in [0, 1), got {fraction!r}")
    if not 0.0 <= fraction < 1.0:
        raise SurgeryError(f"sparsity for {name!r} must be in [0, 1), got {fraction}")


def _smallest_mask(weight: Tensor, fraction: float) -> Tensor:
    """0 at the ``round(fraction * numel)`` smallest |w| entries, 1 elsewhere."""
    count = round(fraction * weight.numel())
    flat = torch.ones(weight.numel(), dtype=weight.dtype, device=weight.device)
    order = torch.argsort(weight.abs().flatten(), stable=True)
    flat[order[:count]] = 0
    return flat.reshape(weight.shape)


def _layer_stats(module: nn.Module, own: list[Tensor]) -> dict:
    zeros = sum(int((p == 0).sum()) for p in own)
    params = sum(p.numel() for p in own)
    weight = getattr(module, "weight", None)
    weight_sparsity = None
    if isinstance(weight, Tensor) and weight.numel():
        weight_sparsity = int((weight == 0).sum()) / weight.numel()
    return {
        "zeros": zeros,
        "params": params,
        "sparsity": zeros / params if params else 0.0,
        "weight_sparsity": weight_sparsity,
    }

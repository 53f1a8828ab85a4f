"""Random example inputs for a model the command line names: what it takes, of a shape.

A transformers model gets keyword inputs named by its ``main_input_name``: token ids
(``input_ids``, long, below the config's ``vocab_size``) or images (``pixel_values``), with
``use_cache=False`` where its forward takes it (a cache is no output to measure). Any other
model gets a float tensor, or with ``dtype="long"`` token ids below the smallest
``nn.Embedding``'s ``num_embeddings``. Numbers are drawn from torch's global generator (the
command line seeds it with ``--seed``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> example_inputs(nn.Linear(4, 2), (1, 4)).shape
    torch.Size([1, 4])
    >>> ids = example_inputs(nn.Embedding(10, 4), (1, 6), "long")
    >>> ids.dtype, int(ids.max()) < 10
    (torch.int64, True)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from surgery.errors import SurgeryError
from surgery.io.hf_config import is_hf_model

DTYPES = ("float", "long")
TOKENS = 8  # token ids per example when no shape is given


def example_inputs(model: nn.Module, shape: Sequence[int], dtype: str | None = None,
                   device: str | torch.device = "cpu") -> Any:
    """Random inputs of ``shape`` for ``model`` (see the module docstring); ``dtype``:
    ``"float"``, ``"long"`` or None (the model's own: long for a text model)."""
    if dtype is not None and dtype not in DTYPES:
        raise SurgeryError(f"--input-dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if is_hf_model(model):
        return hf_inputs(model, shape, dtype, device)
    if dtype == "long":
        return torch.randint(0, vocabulary(model), tuple(shape)).to(device)
    return torch.randn(*shape).to(device)


def vocabulary(model: nn.Module) -> int:
    """The smallest ``num_embeddings`` of the model's ``nn.Embedding`` layers: token ids below
    it index every table.

    Example:
        >>> vocabulary(nn.Sequential(nn.Embedding(100, 8), nn.Embedding(32, 8)))
        32
    """
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    if not sizes:
        raise SurgeryError("--input-dtype long makes token ids, but the model has no "
                           "nn.Embedding to size them by: pass float inputs")
    return min(sizes)


def hf_inputs(model: nn.Module, shape: Sequence[int], dtype: str | None,
              device: str | torch.device) -> dict[str, Any]:
    """``{main_input_name: tensor}`` of ``shape`` for a transformers model, with
    ``use_cache=False`` where its forward takes it."""
    name, config = getattr(model, "main_input_name", "input_ids"), model.config
    ids = name == "input_ids"
    own = "long" if ids else "float"
    if name not in ("input_ids", "pixel_values") or dtype not in (None, own):
        raise SurgeryError(f"{type(model).__name__} takes {name}: example inputs are made for "
                           f"token ids (long) and pixel_values (float) only")
    tensor = torch.randint(0, config.vocab_size, tuple(shape)) if ids else torch.randn(*shape)
    inputs = {name: tensor.to(device)}
    if "use_cache" in inspect.signature(model.forward).parameters:
        inputs["use_cache"] = False
    return inputs


def with_attention_mask(model: nn.Module, inputs: Any) -> Any:
    """``inputs`` with an all-ones ``attention_mask`` beside a transformers model's token ids
    when its forward takes one (ONNX export of a decoder needs it: without one, transformers
    checks for packed sequences with ``torch.diff``, which the exporter lacks); else as given.

    Example:
        >>> with_attention_mask(nn.Linear(2, 2), torch.zeros(1, 2)).shape
        torch.Size([1, 2])
    """
    if not is_hf_model(model) or not isinstance(inputs, dict) or "attention_mask" in inputs \
            or not isinstance(inputs.get("input_ids"), torch.Tensor) \
            or "attention_mask" not in inspect.signature(model.forward).parameters:
        return inputs
    return {**inputs, "attention_mask": torch.ones_like(inputs["input_ids"])}


def hf_shape(model: nn.Module) -> tuple[int, ...]:
    """The default example shape of a transformers model: ``(1, TOKENS)`` token ids, or one
    image of the config's ``num_channels`` and ``image_size``."""
    config = model.config
    if getattr(model, "main_input_name", "input_ids") != "pixel_values":
        return 1, TOKENS
    size = config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return 1, int(getattr(config, "num_channels", 3)), int(height), int(width)


def main_shape(inputs: Any) -> tuple[int, ...] | None:
    """The shape of a float example tensor (recorded in plan.json); None for token ids or
    keyword inputs, which a recorded float shape would not rebuild.

    Example:
        >>> main_shape(torch.zeros(1, 3, 8, 8)), main_shape({"input_ids": torch.zeros(1, 4)})
        ((1, 3, 8, 8), None)
    """
    if isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
        return tuple(inputs.shape)
    return None


__all__ = ["DTYPES", "TOKENS", "example_inputs", "hf_inputs", "hf_shape", "main_shape",
           "vocabulary", "with_attention_mask"]

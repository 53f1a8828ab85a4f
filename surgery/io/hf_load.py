"""``hf:DIR``: a transformers model from a local folder written by ``save_pretrained``.

Nothing is downloaded (``local_files_only``) and no code from the folder runs: the config is
read with ``trust_remote_code=False`` and the architecture is the class its ``architectures``
field names, which must be one of transformers' own model classes. ``load_hf`` (the command
line's MODEL ``hf:DIR``, your own folder) loads its weights; ``hf_base`` (a base a saved
folder's plan.json names) builds the architecture from the config only, after counting its
parameters on the meta device (shapes, no memory).

Example:
    >>> import tempfile, transformers
    >>> config = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=16,
    ...     intermediate_size=32, num_attention_heads=2, vocab_size=50)
    >>> folder = tempfile.mkdtemp()
    >>> transformers.LlamaForCausalLM(config).save_pretrained(folder)
    >>> model, shape = load_hf(f"hf:{folder}")
    >>> type(model).__name__, shape
    ('LlamaForCausalLM', (1, 8))
    >>> try:
    ...     hf_base(f"hf:{folder}", "plan.json", max_params=10)
    ... except SurgeryError as exc:
    ...     print(str(exc).split("': ")[1].split(":")[0])
    4,208 parameters, over the 10 a saved folder may ask for
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgery.errors import SurgeryError
from surgery.io.example_inputs import hf_shape
from surgery.io.optional import optional_module
from surgery.io.safety import check_base_params

PREFIX = "hf:"


def hf_folder(spec: str) -> Path:
    """The folder of an ``hf:DIR`` MODEL argument; it must hold a config.json.

    Example:
        >>> hf_folder("hf:/nowhere")
        Traceback (most recent call last):
        surgery.errors.SurgeryError: hf:/nowhere: /nowhere/config.json not found (pass a \
folder written by save_pretrained)
    """
    folder = Path(spec.removeprefix(PREFIX))
    if not (folder / "config.json").is_file():
        raise SurgeryError(f"{spec}: {folder / 'config.json'} not found (pass a folder "
                           f"written by save_pretrained)")
    if optional_module("transformers") is None:
        raise SurgeryError(f"{spec} needs transformers: pip install transformers")
    return folder


def read_architecture(spec: str) -> tuple[Any, type]:
    """The config of an ``hf:DIR`` folder (no remote code) and the transformers class its
    ``architectures`` field names; SurgeryError in one line for anything else."""
    folder = hf_folder(spec)
    transformers = optional_module("transformers")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True,
                                                         trust_remote_code=False)
    except (ValueError, OSError, KeyError, TypeError) as exc:  # unknown type, remote code
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise SurgeryError(f"{spec}: cannot read its config.json ({type(exc).__name__}: "
                           f"{first})") from None
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if len(names) == 1 and \
        isinstance(names[0], str) else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise SurgeryError(f"{spec}: config.json names architecture "
                           f"{str(names)[:80]}, not one transformers model class: only "
                           f"transformers' own architectures are built (never remote code)")
    return config, cls


def load_hf(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The model of an ``hf:DIR`` folder with its weights, and its default example shape."""
    config, cls = read_architecture(spec)
    try:
        model = cls.from_pretrained(hf_folder(spec), config=config, local_files_only=True)
    except (ValueError, OSError, RuntimeError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise SurgeryError(f"{spec}: cannot load {cls.__name__} ({type(exc).__name__}: "
                           f"{first})") from None
    return model, hf_shape(model)


def hf_base(spec: Any, source: str, max_params: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The architecture an ``hf:DIR`` base read from a file (``source``) names, built from its
    config only (random weights, no remote code), if its parameters, counted on the meta
    device first, are at most ``max_params``; see the module example."""
    config, cls = read_architecture(spec)
    with torch.device("meta"):
        params = sum(p.numel() for p in cls(config).parameters())
    check_base_params(spec, source, params, max_params)
    model = cls(config).eval()
    return model, hf_shape(model)


__all__ = ["PREFIX", "hf_base", "hf_folder", "load_hf", "read_architecture"]

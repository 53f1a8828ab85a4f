"""timm models as the base a saved folder names: ``timm:NAME``, built only when timm is
installed, NAME is one of ``timm.list_models()`` and its parameter count, counted on the meta
device before anything is allocated, is within the bound (random init, ``pretrained=False``:
nothing is downloaded).

A pruned timm model stays a timm model: ``forward_features``, ``forward_head``,
``reset_classifier`` and ``pretrained_cfg`` work at the pruned widths (``num_features`` and kin
follow the layers they mirror: ``surgery.rebuild.widths``).

Example:
    >>> timm_params("resnet18", num_classes=10)
    11181642
    >>> check_timm_base("timm:resnet18", "plan.json", max_params=1 << 28)
    >>> check_timm_base("timm:no_such_net", "plan.json", max_params=1 << 28)
    Traceback (most recent call last):
    surgery.errors.SurgeryError: plan.json names base 'timm:no_such_net', which is not a built-in \
model (not in timm.list_models())
"""

from __future__ import annotations

import torch

from surgery.errors import SurgeryError
from surgery.io.optional import optional_module
from surgery.io.safety import check_base_params

PREFIX = "timm:"


def timm_params(name: str, num_classes: int | None = None) -> int:
    """Parameters of timm's ``name`` (with ``num_classes`` outputs if given), counted on the
    meta device: nothing is allocated. See the module example."""
    options = {} if num_classes is None else {"num_classes": num_classes}
    timm = optional_module("timm")
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, **options)
    except Exception as exc:  # a model's constructor may raise anything on meta tensors
        raise SurgeryError(f"timm:{name}: its size cannot be counted before it is built "
                           f"({type(exc).__name__}); pass --base timm:{name} yourself") from exc
    return sum(p.numel() for p in model.parameters())


def check_timm_base(spec: str, source: str, max_params: int,
                    num_classes: int | None = None) -> None:
    """SurgeryError unless ``spec`` (``timm:NAME``, read from ``source``) may be built for a
    saved folder: timm installed, NAME in ``timm.list_models()``, at most ``max_params``
    parameters. See the module example."""
    name = spec[len(PREFIX):]
    timm = optional_module("timm")
    if timm is None:
        raise SurgeryError(f"{source} names base {spec[:80]!r}, which needs timm: "
                           f"pip install timm")
    if name not in timm.list_models():
        raise SurgeryError(f"{source} names base {spec[:80]!r}, which is not a built-in "
                           f"model (not in timm.list_models())")
    params = timm_params(name, num_classes)
    check_base_params(spec, source, params, max_params, f" with num_classes {num_classes}")


__all__ = ["PREFIX", "check_timm_base", "timm_params"]

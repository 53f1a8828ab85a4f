"""Seeded models by name, the one place tests and benchmarks build them.

Scripts here import it as ``builders`` (their folder is on the path); tests as
``benchmarks.builders`` (pytest runs from the repository root, see ``pythonpath`` in
pyproject.toml).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from surgery.io.models import LeNet
from surgery.testing.oracle import randomize_norms, randomize_weights

NO_AUX_HEADS = {"googlenet", "inception_v3"}  # built without aux heads and their own init


def build_model(name: str, *, norms: bool = False, weights: bool = False,
                **options: object) -> nn.Module:
    """``lenet`` or a torchvision classifier, random init after ``torch.manual_seed(0)``, eval mode.

    ``norms``: give BatchNorm layers random affine and running stats (``randomize_norms``);
    ``weights``: re-randomise every weight (``randomize_weights``; for families that zero-init
    their head or use tiny layer scales). ``options`` go to ``torchvision.models.get_model``.
    """
    torch.manual_seed(0)
    if name == "lenet":
        model = LeNet()
    else:
        extra = {"aux_logits": False, "init_weights": False} if name in NO_AUX_HEADS else {}
        model = torchvision.models.get_model(name, weights=None, **extra, **options)
    if weights:
        randomize_weights(model)
    if norms:
        randomize_norms(model)
    return model.eval()

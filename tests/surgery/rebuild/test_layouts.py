"""Rebuilt layers keep their memory layout; a model without weights is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from surgery import SurgeryError, count_flops, prune


def test_channels_last_weights_stay_channels_last():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    model = model.to(memory_format=torch.channels_last)
    small = prune(model, torch.randn(1, 3, 8, 8), ratio=0.5).model
    assert small[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert small[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert not small[2].weight.is_contiguous()  # really channels_last, not just contiguous


def test_a_meta_device_model_is_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3))
    with pytest.raises(SurgeryError, match="meta device"):
        prune(model, torch.randn(1, 3, 8, 8), ratio=0.5)


def test_counting_a_meta_device_model_is_refused():
    with torch.device("meta"):
        model = nn.Linear(4, 2)
    with pytest.raises(SurgeryError, match="meta"):
        count_flops(model, torch.zeros(1, 4))

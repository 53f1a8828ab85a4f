"""graphs.blocks: which modules are removable residual blocks, worked out by hand."""

import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnet18

from graphs.blocks import POST_NORM, find_blocks


class Residual(nn.Module):
    def __init__(self, act_after: bool = False):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act_after = act_after

    def forward(self, x):
        out = x + self.fc(x)
        return torch.relu(out) if self.act_after else out


class Net(nn.Module):
    """Two plain residuals, a residual with ReLU after its add on a signed stream (not exact:
    not a block), and a bias add (no branch from the stream: not a block)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = Residual(), Residual(), Residual(act_after=True)
        self.bias = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.c(self.b(self.a(x))) + self.bias


def test_hand_model_blocks():
    blocks = find_blocks(Net(), torch.zeros(2, 4))
    assert [(b.module, b.zero, b.inexact) for b in blocks] == [
        ("a", ("a.fc.weight", "a.fc.bias"), ""), ("b", ("b.fc.weight", "b.fc.bias"), "")]


def test_resnet18_blocks_are_those_without_downsample():
    blocks = find_blocks(resnet18(), torch.zeros(1, 3, 32, 32))
    assert [b.module for b in blocks] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1",
                                          "layer4.1"]
    assert all(b.zero == (f"{b.module}.bn2.weight", f"{b.module}.bn2.bias") for b in blocks)


def test_mobilenet_v2_inverted_residuals_with_shortcut():
    blocks = find_blocks(mobilenet_v2(), torch.zeros(1, 3, 32, 32))
    assert [b.module for b in blocks] == [f"features.{i}" for i in (3, 5, 6, 8, 9, 10, 12, 13,
                                                                    15, 16)]


class PostNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.norm = nn.Linear(4, 4), nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(x + self.fc(x))


def test_post_norm_is_marked():
    blocks = find_blocks(nn.Sequential(nn.Linear(4, 4), PostNorm()), torch.zeros(1, 3, 4))
    assert [(b.module, b.zero, b.inexact) for b in blocks] == [
        ("1", ("1.fc.weight", "1.fc.bias"), POST_NORM)]

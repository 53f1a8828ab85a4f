"""pixel_shuffle / pixel_unshuffle (super-resolution heads, space-to-depth stems): whole runs of
r*r channels prune together, exactly by the oracle."""

import torch
import torch.nn.functional as F
from torch import nn

from graphs import OUT, trace
from tests.graphs.exactness import exact


class SuperResolution(nn.Module):
    """ESPCN-style: conv -> conv to C*r*r -> nn.PixelShuffle(r) -> conv."""

    def __init__(self, r: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.expand = nn.Conv2d(8, 6 * r * r, 3, padding=1)
        self.shuffle = nn.PixelShuffle(r)
        self.tail = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(torch.relu(self.shuffle(self.expand(self.body(x)))))


class SpaceToDepth(nn.Module):
    """conv -> pixel_unshuffle(2) -> conv: each channel becomes 4 input channels of the next."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(20, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.pixel_unshuffle(torch.relu(self.stem(x)), 2))


def produced_by(graph, name: str):
    """The group of the output channels of layer ``name``."""
    return next(g for g in graph.groups
                if any(m.module == name and m.role == OUT for m in g.members))


def test_pixel_shuffle_couples_each_run_of_r_squared_channels() -> None:
    graph = trace(SuperResolution(), torch.randn(1, 3, 6, 6))
    assert not graph.unsupported
    group = produced_by(graph, "expand")
    expand = next(m for m in group.members if m.module == "expand")
    tail = next(m for m in group.members if m.module == "tail")
    assert group.prunable and group.channels == 6 and not group.inexact
    assert expand.indices[1] == (4, 5, 6, 7) and tail.indices[1] == (1,)


def test_pixel_shuffle_prunes_exactly() -> None:
    small = exact(SuperResolution(), torch.randn(2, 3, 6, 6))
    assert small.expand.out_channels == 4 * small.tail.in_channels == 12


def test_pixel_unshuffle_prunes_exactly() -> None:
    graph = trace(SpaceToDepth(), torch.randn(1, 3, 6, 6))
    group = produced_by(graph, "stem")
    head = next(m for m in group.members if m.module == "head")
    assert group.prunable and group.channels == 5 and head.indices[1] == (4, 5, 6, 7)
    small = exact(SpaceToDepth(), torch.randn(2, 3, 6, 6))
    assert small.head.in_channels == 4 * small.stem.out_channels == 12

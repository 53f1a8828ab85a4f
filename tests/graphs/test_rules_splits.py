"""Channel splits into fixed pieces as real models write them (YOLO's C2f, GhostNet/MobileViT
style splits by attributes, fused qkv and gate/up projections cut by slicing or chunk): each
piece prunes on its own or the equal pieces together, exactly by the oracle, and the size
attributes follow."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import OUT, SIZE, trace
from tests.graphs.exactness import exact


def produced_by(graph, name: str):
    return next(g for g in graph.groups
                if any(m.module == name and m.role == OUT for m in g.members))


def sizes(group) -> set[tuple[str, int]]:
    return {(m.attr, m.dim) for m in group.members if m.role == SIZE}


class C2f(nn.Module):
    """ultralytics' C2f: ``self.cv1(x).split((self.c, self.c), 1)``, a bottleneck on the last
    piece, every piece concatenated into cv2."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.c = c
        self.cv1, self.cv2 = nn.Conv2d(3, 2 * c, 1), nn.Conv2d(3 * c, 4, 1)
        self.m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


def test_equal_pieces_by_one_int_attribute_couple_like_chunk() -> None:
    graph = trace(C2f(), torch.randn(1, 3, 6, 6))
    cv1 = produced_by(graph, "cv1")
    assert cv1.prunable and cv1.channels == 4 and sizes(cv1) == {("c", 0)}
    small = exact(C2f(), torch.randn(2, 3, 6, 6))
    assert small.c == 2 and small.cv1.out_channels == 4


class TwoWays(nn.Module):
    """GhostNet / MobileViT style: ``torch.split(x, [self.a, self.b], dim=1)``, two branches."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = 6, 4
        self.stem, self.head = nn.Conv2d(3, 10, 1), nn.Conv2d(10, 4, 1)
        self.local = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.wide = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = torch.split(self.stem(x), [self.a, self.b], dim=1)
        return self.head(torch.cat([self.local(left), self.wide(right)], dim=1))


def test_pieces_by_int_attributes_prune_on_their_own() -> None:
    graph = trace(TwoWays(), torch.randn(1, 3, 6, 6))
    stem = sorted((g for g in graph.prunable if "stem" in g.modules()), key=lambda g: g.channels)
    assert [(g.channels, sizes(g)) for g in stem] == [(4, {("b", 0)}), (6, {("a", 0)})]
    small = exact(TwoWays(), torch.randn(2, 3, 6, 6))
    assert (small.a, small.b, small.stem.out_channels) == (3, 2, 5)


class FusedQKV(nn.Module):
    """One projection cut into q, k, v by slicing the last dim, single-head attention."""

    def __init__(self, width: str) -> None:
        super().__init__()
        self.n, self.width = 8, width
        self.embed, self.qkv, self.proj = nn.Linear(4, 6), nn.Linear(6, 24), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(torch.relu(self.embed(x)))
        n = self.n if self.width == "attribute" else qkv.shape[-1] // 3
        q, k, v = qkv[..., :n], qkv[..., n:2 * n], qkv[..., 2 * n:]
        return self.proj(F.softmax(q @ k.transpose(-2, -1), dim=-1) @ v)


@pytest.mark.parametrize("width", ["attribute", "computed"])
def test_fused_qkv_cut_by_slices_prunes_its_pieces_together(width: str) -> None:
    graph = trace(FusedQKV(width), torch.randn(1, 5, 4))
    qkv = produced_by(graph, "qkv")
    assert qkv.prunable and qkv.channels == 8 and not qkv.inexact
    assert next(m for m in qkv.members if m.module == "qkv").indices[1] == (1, 9, 17)
    assert sizes(qkv) == ({("n", 0)} if width == "attribute" else set())
    small = exact(FusedQKV(width), torch.randn(2, 5, 4))
    assert small.qkv.out_features == 12 and small.n == (4 if width == "attribute" else 8)


def test_slices_by_a_bare_literal_still_block() -> None:
    class Literal(FusedQKV):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(self.qkv(torch.relu(self.embed(x)))[..., 8:16])

    model = Literal("attribute")
    model.n = 7  # no int attribute of the module says 8
    qkv = produced_by(trace(model, torch.randn(1, 5, 4)), "qkv")
    assert not qkv.prunable and "takes channels 8:16" in qkv.reason
    assert "test_rules_splits.py" in qkv.reason


class GatedMLP(nn.Module):
    """LLaMA-style gate/up from one projection, by ``split(self.hidden)`` or ``chunk(2)``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.hidden, self.how = 6, how
        self.up, self.down = nn.Linear(4, 12), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        gate, up = h.split(self.hidden, dim=-1) if self.how == "split" else h.chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


@pytest.mark.parametrize("how", ["split", "chunk"])
def test_gate_and_up_from_one_projection_prune_together(how: str) -> None:
    graph = trace(GatedMLP(how), torch.randn(1, 5, 4))
    up = produced_by(graph, "up")
    assert up.prunable and up.channels == 6
    assert sizes(up) == ({("hidden", 0)} if how == "split" else set())
    small = exact(GatedMLP(how), torch.randn(2, 5, 4))
    assert small.up.out_features == 6 and small.hidden == (3 if how == "split" else 6)

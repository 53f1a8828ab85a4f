"""Matmul with channels on a matrix dim (rows, columns, contracted) and F.normalize."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from graphs import trace
from graphs.datamodel import OUT
from surgery import prune
from surgery.measure.flops import count_flops
from surgery.plan.target import MacModel
from surgery.testing.oracle import check


class Additive(nn.Module):
    """SwiftFormer's additive attention: channels normalised, contracted with a bare (C, 1)
    weight, the (tokens, 1) result multiplied back over the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.to_query, self.to_key = nn.Linear(6, 8), nn.Linear(6, 8)
        self.w_g = nn.Parameter(torch.randn(8, 1))
        self.proj, self.final = nn.Linear(8, 8), nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 6, tokens)
        x = x.transpose(1, 2)
        query = F.normalize(self.to_query(x), dim=-1)
        key = F.normalize(self.to_key(x), dim=-1)
        attn = F.normalize(query @ self.w_g * 0.3, dim=1)
        attn = torch.sum(attn * query, dim=1, keepdim=True)
        return self.final(self.proj(attn * key) + query).transpose(1, 2)


class Mixes(nn.Module):
    """Channels on a matmul's rows (``h.T @ mix``) and on its columns (``mix @ h``), with a
    token-mixing buffer (no channels) on the other side."""

    def __init__(self, columns: bool) -> None:
        super().__init__()
        self.fc, self.out, self.columns = nn.Linear(6, 8), nn.Linear(8, 6), columns
        self.register_buffer("mix", torch.randn(5, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 6, 5 tokens)
        h = self.fc(x.transpose(1, 2))  # (batch, tokens, 8)
        h = self.mix @ h if self.columns else (h.transpose(1, 2) @ self.mix).transpose(1, 2)
        return self.out(torch.relu(h)).transpose(1, 2)


class OneSided(nn.Module):
    """Channels contracted with a buffer that carries none: they cannot be removed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.register_buffer("w", torch.randn(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.transpose(1, 2)) @ self.w


def exact(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The oracle at ratio 0.5: removed what it killed, same output shape, same output."""
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.shape_kept and c.output_scale > 1e-3
    assert c.error <= 1e-5
    return c.result.model


def test_contracted_channels_couple_with_the_bare_weight_and_prune_exactly() -> None:
    model, x = Additive().eval(), torch.randn(2, 6, 5)
    graph = trace(model, x)
    assert not graph.unsupported
    group = next(g for g in graph.prunable if "to_query" in g.modules())
    assert ("", OUT, 0, "w_g") in {(m.module, m.role, m.dim, m.attr) for m in group.members}
    assert exact(model, x).w_g.shape == (4, 1)


@pytest.mark.parametrize("columns", [False, True])
def test_channels_on_rows_or_columns_pass_to_the_output(columns: bool) -> None:
    model, x = Mixes(columns).eval(), torch.randn(2, 6, 5)
    graph = trace(model, x)
    group = next(g for g in graph.prunable if "fc" in g.modules())
    assert group.channels == 8 and "out" in group.modules()
    exact(model, x)


def test_contraction_with_an_untracked_operand_is_reported_and_blocks() -> None:
    graph = trace(OneSided(), torch.randn(2, 6, 5))
    assert [u.op for u in graph.unsupported] == [
        "matmul (channels on a contracted dim of one operand only)"]
    assert not any("fc" in g.modules() for g in graph.prunable)


def test_channels_on_rows_of_one_and_columns_of_the_other_are_reported() -> None:
    """An outer product of two layers' channels (a matrix of both): no one dim carries them."""

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rows, self.columns = nn.Linear(6, 8), nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 6, tokens)
            x = x.transpose(1, 2)
            return self.rows(x).transpose(1, 2) @ self.columns(x)

    graph = trace(Outer(), torch.randn(2, 6, 5))
    assert [u.op for u in graph.unsupported] == [
        "matmul (operands carry channels on different dims)"]
    assert not graph.prunable


@pytest.mark.parametrize("model", [Additive(), Mixes(columns=True)])
def test_mac_model_scales_the_matmul_with_its_channels(model: nn.Module) -> None:
    model, x = model.eval(), torch.randn(2, 6, 5)
    graph = trace(model, x)
    assert [s.op for s in graph.sites] in (["matmul"], ["__matmul__"])
    result = prune(model, x, ratio=0.5)
    counts = {g.group: len(g.removed_channels) for g in result.plan.groups}
    macs = MacModel(model, count_flops(model, x).by_module, graph.prunable, graph.sites)
    assert macs.estimate(counts) == count_flops(result.model, x).total

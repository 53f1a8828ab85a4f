"""torch.einsum attention (heads kept by both einsums) and a linear-like einsum with a bare
weight (channels summed away on both operands): exact by the oracle; a channel letter summed
away on one operand only is reported."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import OUT, SIZE, trace
from tests.graphs.exactness import exact


class EinsumAttention(nn.Module):
    """Multi-head attention written with einsum, heads as the channels."""

    def __init__(self, ellipsis: bool = False) -> None:
        super().__init__()
        self.num_heads, self.ellipsis = 2, ellipsis
        self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        scores = torch.einsum("...id,...jd->...ij" if self.ellipsis else "bhid,bhjd->bhij",
                              q, k)
        out = torch.einsum("bhij,bhjd->bhid", F.softmax(scores * 0.5, dim=-1), v)
        return self.proj(out.transpose(1, 2).flatten(2))


class EinsumLinear(nn.Module):
    """``einsum("bnc,dc->bnd", x, self.w)`` with a bare (d, c) weight: x's channels meet w's
    columns and are summed away."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.w = nn.Parameter(torch.randn(5, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnc,dc->bnd", torch.relu(self.fc(x)), self.w)


@pytest.mark.parametrize("ellipsis", [False, True])
def test_einsum_attention_prunes_whole_heads(ellipsis: bool) -> None:
    graph = trace(EinsumAttention(ellipsis), torch.randn(1, 5, 8))
    assert not graph.unsupported
    heads = next(g for g in graph.prunable if g.channels == 2)
    assert {(m.module, m.role) for m in heads.members} == {("qkv", OUT), ("", SIZE),
                                                           ("proj", "in")}
    small = exact(EinsumAttention(ellipsis), torch.randn(2, 5, 8))
    assert small.num_heads == 1 and small.qkv.out_features == 12


def test_linear_like_einsum_couples_the_summed_channels() -> None:
    graph = trace(EinsumLinear(), torch.randn(1, 3, 4))
    fc = next(g for g in graph.prunable if "fc" in g.modules())
    assert ("", OUT, 1, "w") in {(m.module, m.role, m.dim, m.attr) for m in fc.members}
    assert exact(EinsumLinear(), torch.randn(2, 3, 4)).w.shape == (5, 3)


def test_channels_summed_away_on_one_operand_only_are_blocked() -> None:
    class Summed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bnc,bn->b", self.fc(x), x[..., 0])

    graph = trace(Summed(), torch.randn(1, 3, 4))
    assert not graph.unsupported
    assert "sums channels on 'c' with an operand carrying none" in graph.groups_of("fc")[-1].reason

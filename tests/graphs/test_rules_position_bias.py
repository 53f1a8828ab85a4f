"""Attention heads with per-head parameters outside layers, each on a hand-written model: BEiT's
q/k/v bias cat (a zero k bias buffer) fed to ``F.linear``, a relative position bias table indexed
by a buffer and added per head, and widths read from the block input (deferred size checks); the
timm models themselves run under ``-m zoo``."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs import trace
from surgery.testing.oracle import check, randomize_weights


def exact(model, x, ratio=0.5):
    """The oracle: dead channels are removed and the output does not change; returns the check."""
    c = check(randomize_weights(model), x, ratio)
    assert c.removed == c.dead and c.dead and c.shape_kept
    assert c.error <= 1e-4 and c.output_scale > 1e-6
    return c


def members(group):
    return {m.short() for m in group.members}


class BeitAttention(nn.Module):
    """BEiT's attention (timm beit.Attention), small: q/k/v biases catted around a zero k bias
    buffer, a (distances, heads) bias table gathered by an index buffer into the sdpa mask."""

    def __init__(self, dim=8, heads=4, tokens=3, fused=True, width_from_input=False):
        super().__init__()
        self.num_heads, self.fused, self.width_from_input = heads, fused, width_from_input
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.randn(dim)), nn.Parameter(torch.randn(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.relative_position_bias_table = nn.Parameter(torch.randn(2 * tokens - 1, heads))
        pos = torch.arange(tokens)
        self.register_buffer("relative_position_index", pos[:, None] - pos[None, :] + tokens - 1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            x = ((q * 0.5) @ k.transpose(-2, -1) + bias).softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(B, N, C if self.width_from_input else -1)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.fc, self.attn, self.head = nn.Linear(8, 8), BeitAttention(**kwargs), nn.Linear(8, 2)

    def forward(self, x):
        x = self.fc(x)
        return self.head(x + self.attn(x))


def heads_group(graph, name="attn"):
    prefix = f"{name}." if name else ""
    return next(g for g in graph.groups if f"{prefix}qkv.out x6" in members(g))


@pytest.mark.parametrize("fused", [True, False])
def test_beit_heads_prune_with_their_biases_and_bias_table_column(fused):
    c = exact(BeitAttention(fused=fused), torch.randn(2, 3, 8))
    heads = heads_group(c.graph, "")
    assert heads.prunable and heads.channels == 4 and not heads.inexact
    assert {"q_bias.out x2", "k_bias.out x2", "v_bias.out x2", "num_heads.size",
            "relative_position_bias_table.out", "proj.in x2"} <= members(heads)
    pruned = c.result.model
    assert pruned.num_heads == 2 and pruned.k_bias.shape == (4,)
    assert pruned.relative_position_bias_table.shape == (5, 2)
    assert "k_bias" in dict(pruned.named_buffers())


def test_a_width_read_from_the_block_input_blocks_heads_and_that_input():
    """``reshape(B, N, C)`` with C the block input's width: pruning the heads or those channels
    alone would break the shape, so both stay, with the line as the reason."""
    graph = trace(Block(width_from_input=True), torch.randn(2, 3, 8))
    heads = heads_group(graph)
    residual = next(g for g in graph.groups if "fc.out" in members(g))
    for group in (heads, residual):
        assert not group.prunable and "size computed from other dims" in group.reason


def test_a_width_read_from_the_input_follows_when_a_later_add_couples_them():
    """Swin's ``attn_windows.view(-1, ws, ws, C)``, C read from the block input: the residual add
    after it couples the two, so the size follows pruning (checked once every rule has run)."""

    class Windows(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.proj, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            x = self.fc(x)
            B, N, C = x.shape
            y = self.proj(x).view(B * N, C).view(B, N, C)
            return self.head(x + y)

    c = exact(Windows(), torch.randn(2, 3, 8))
    assert any({"fc.out", "proj.out"} <= members(g) for g in c.graph.prunable)


def test_a_gather_of_the_channel_dim_is_reported():
    class Gather(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.register_buffer("index", torch.tensor([3, 1, 2, 0]))

        def forward(self, x):
            return self.fc(x)[:, self.index]

    graph = trace(Gather(), torch.randn(2, 4))
    assert any(u.op.startswith("getitem") for u in graph.unsupported)


TIMM = {"beit_base_patch16_224": False, "vit_tiny_patch16_dinov3_qkvb": False,
        "swin_tiny_patch4_window7_224": True}


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_attention_with_bias_tables_prunes_exactly(name):
    """BEiT and EVA read the block input's width in ``reshape(B, N, C)``: their heads stay
    (reported); timm Swin's heads prune with their bias table columns."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, img_size=64)
    c = exact(model, torch.randn(1, 3, 64, 64))
    heads = [g for g in c.graph.groups if any(m.attr == "num_heads" for m in g.members)]
    assert heads and all(g.prunable == TIMM[name] for g in heads)
    assert not c.graph.unsupported

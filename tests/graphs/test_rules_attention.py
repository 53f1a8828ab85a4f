"""Each transformer coupling rule on its own: attention heads, functional LayerNorm, Swin helpers."""

import numpy as np
import torch
from torch import nn
from torchvision.models.convnext import LayerNorm2d
from torchvision.models.swin_transformer import PatchMerging
from torchvision.ops.misc import Permute

from graphs import trace
from graphs.datamodel import IN, OUT
from graphs.rules.attention import head_rows


class SelfAttention(nn.Module):
    def __init__(self, need_weights=False, cross=False, batch_first=True):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 4, batch_first=batch_first)
        self.need_weights, self.cross = need_weights, cross

    def forward(self, x):  # x: (batch, 8, tokens), as the model input's channels are on dim 1
        x = x.transpose(1, 2) if self.attn.batch_first else x.permute(2, 0, 1)
        h = self.proj(x)
        out, weights = self.attn(h, x if self.cross else h, h, need_weights=self.need_weights)
        return out + weights.sum() if self.need_weights else out


def test_head_rows_number_q_k_v_rows_and_out_proj_columns_by_head():
    rows, cols = head_rows(2, 2, np.array([5, 6]))
    assert rows.tolist() == [5, 5, 6, 6] * 3 and cols.tolist() == [5, 5, 6, 6]


def test_each_head_is_one_channel_of_packed_rows_and_out_proj_columns():
    graph = trace(SelfAttention(), torch.zeros(2, 8, 3))
    heads = next(g for g in graph.groups if "attn.out_proj" in g.modules() and g.channels == 4)
    assert heads.prunable
    rows = next(m for m in heads.members if m.module == "attn" and m.role == OUT)
    cols = next(m for m in heads.members if m.module == "attn.out_proj" and m.role == IN)
    assert rows.dim == 0 and rows.indices[1] == (2, 3, 10, 11, 18, 19)
    assert cols.dim == 1 and cols.indices[1] == (2, 3)


def test_the_query_stream_is_the_packed_columns_of_q_k_and_v():
    graph = trace(SelfAttention(), torch.zeros(2, 8, 3))
    proj = next(g for g in graph.groups_of("proj") if any(m.role == OUT for m in g.members
                                                          if m.module == "proj"))
    cols = next(m for m in proj.members if m.module == "attn")
    assert proj.prunable and (cols.role, cols.dim, cols.attr) == (IN, 1, "")
    out = next(g for g in graph.groups_of("attn.out_proj") if g.channels == 8)
    assert [m.short() for m in out.members] == ["attn.out_proj.out"]


def test_sequence_first_attention_is_traced_too():
    graph = trace(SelfAttention(batch_first=False), torch.zeros(2, 8, 3))
    assert any(g.channels == 4 and g.prunable for g in graph.groups_of("attn"))


def test_heads_stay_when_the_head_averaged_weights_are_used():
    graph = trace(SelfAttention(need_weights=True), torch.zeros(2, 8, 3))
    heads = next(g for g in graph.groups_of("attn") if g.channels == 4)
    assert not heads.prunable and "attention weights" in heads.reason


def test_cross_attention_couples_packed_key_columns_with_the_query():
    """The key is the model input: the query stream, one with it, is blocked; heads prune."""
    graph = trace(SelfAttention(cross=True), torch.zeros(2, 8, 3))
    assert graph.unsupported == ()
    stream = next(g for g in graph.groups_of("proj") if any(m.role == OUT for m in g.members
                                                            if m.module == "proj"))
    assert not stream.prunable and "model input" in stream.reason
    assert any(g.prunable and g.channels == 4 for g in graph.groups_of("attn"))


def test_functional_layer_norm_of_layernorm2d_passes_channels_and_records_its_affine():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), LayerNorm2d(8), nn.Conv2d(8, 4, 1))
    graph = trace(model, torch.zeros(1, 3, 4, 4))
    assert graph.unsupported == ()
    group = next(g for g in graph.groups if g.channels == 8)
    assert group.prunable and set(group.modules()) == {"0", "1", "2"}


class ForeignAffine(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x):
        x = self.conv(x).permute(0, 2, 3, 1)
        return nn.functional.layer_norm(x, (8,), self.scale, None)


def test_functional_layer_norm_with_a_loose_parameter_is_unsupported():
    graph = trace(ForeignAffine(), torch.zeros(1, 3, 4, 4))
    assert [u.op.split(" ")[0] for u in graph.unsupported] == ["layer_norm"]
    assert not graph.prunable


def test_swin_patch_merging_stacks_four_copies_of_each_channel():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Permute([0, 2, 3, 1]), PatchMerging(4))
    graph = trace(model, torch.zeros(1, 3, 4, 4))
    group = next(g for g in graph.groups_of("0") if g.channels == 4)
    reduction = next(m for m in group.members if m.module == "2.reduction")
    assert group.prunable and reduction.indices[0] == (0, 4, 8, 12)


class Heads(nn.Module):
    """Hand-written attention: query and key/value heads of 4 over 5 tokens."""

    def __init__(self, num_heads: int = 2, kv_heads: int = 2) -> None:
        super().__init__()
        self.num_heads, self.kv_heads, self.head_dim = num_heads, kv_heads, 4
        self.q, self.kv = nn.Linear(8, 4 * num_heads), nn.Linear(8, 8 * kv_heads)
        self.proj = nn.Linear(4 * num_heads, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        k, v = self.kv(x).unflatten(-1, (2, self.kv_heads, self.head_dim)).permute(
            2, 0, 3, 1, 4).unbind(0)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, enable_gqa=self.kv_heads != self.num_heads)
        return self.proj(out.transpose(1, 2).flatten(2))


def test_sdpa_is_a_site_whose_heads_are_the_head_group():
    graph = trace(Heads(), torch.zeros(1, 5, 8))
    heads = next(g for g in graph.groups if "proj" in g.modules() and g.channels == 2)
    (site,) = graph.sites
    assert (site.op, site.module, site.dim, site.size) == ("scaled_dot_product_attention", "",
                                                            1, 2)
    assert site.shapes == ((1, 2, 5, 4),) * 3
    assert site.channels == ((heads.id, 1),)  # one position (head) per channel


def test_grouped_query_site_counts_query_heads_per_key_value_head():
    graph = trace(Heads(num_heads=4, kv_heads=2), torch.zeros(1, 5, 8))
    (site,) = graph.sites
    (gid, width), = site.channels
    assert graph.groups[gid].channels == 2 and (site.size, width) == (4, 2)


def test_explicit_attention_matmuls_are_sites_too():
    from timm.models.vision_transformer import VisionTransformer
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4,
                            num_classes=10).eval()
    vit.blocks[0].attn.fused_attn = False
    sites = trace(vit, torch.zeros(1, 3, 32, 32)).sites
    assert [(s.op, s.module, s.size) for s in sites] == [("matmul", "blocks.0.attn", 4)] * 2

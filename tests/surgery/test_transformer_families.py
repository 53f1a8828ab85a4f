"""Transformer families of torchvision (ViT, ConvNeXt, Swin v1/v2, MaxViT): trace, prune, oracle.

Fast tests build each family's own classes with small configs; ``-m zoo`` runs the real
constructors. Every prunable group of these models is exact: MLP hidden widths (Linear -> GELU ->
Linear) and whole attention heads. What is not pruned, and why, is asserted on the reasons.
"""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, LayerNorm2d
from torchvision.models.maxvit import MaxVit
from torchvision.models.swin_transformer import (
    PatchMergingV2,
    SwinTransformer,
    SwinTransformerBlockV2,
)
from torchvision.models.vision_transformer import VisionTransformer

from graphs import trace
from surgery import Budget, lint, prune
from surgery.rebuild.attention import PrunedMultiheadAttention, kept_heads
from surgery.rebuild.attention import multihead_attention as rebuild_mha
from surgery.testing.oracle import check, randomize_weights, relative_error

SMALL = {
    "vit": lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                     hidden_dim=64, mlp_dim=128, num_classes=10),
    "convnext": lambda: ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)],
                                 num_classes=10),
    "swin": lambda: SwinTransformer([4, 4], 16, [2, 1], [2, 4], [4, 4], num_classes=10),
    "swin_v2": lambda: SwinTransformer([4, 4], 16, [2, 1], [2, 4], [4, 4], num_classes=10,
                                       block=SwinTransformerBlockV2,
                                       downsample_layer=PatchMergingV2),
    "maxvit": lambda: MaxVit((32, 32), 8, 2, [16, 32], [1, 1], head_dim=8,
                             stochastic_depth_prob=0.0, num_classes=10),
}
# What happens to each family's residual stream: kept whole (a phrase of the reason) or
# prunable but not exactly (a phrase of Group.inexact: a norm over the channels).
STREAM_REASON = {
    "vit": "layer_norm",  # prunable through nn.MultiheadAttention, but LayerNorm statistics change
    "convnext": "layer_norm",  # prunable with its layer scales, but LayerNorm statistics change
    "swin": "size read from these channels",  # head width C // num_heads, C the stream's
    "swin_v2": "unsupported op",  # F.linear with a computed qkv bias (k part zeroed)
    "maxvit": "reshape",  # window/grid partition reshapes with literal sizes
}


def check_exact(model, x, ratio=0.5):
    c = check(model, x, ratio)
    graph, result = c.graph, c.result
    assert c.removed == c.dead
    assert c.shape_kept and c.output_scale > 1e-3
    assert c.error <= 1e-4
    assert result.params_after < result.params_before
    assert lint(result.model, x) == []
    return graph, result


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_transformer_families_prune_exactly(name):
    torch.manual_seed(0)
    graph, _ = check_exact(randomize_weights(SMALL[name]()), torch.randn(2, 3, 32, 32))
    assert graph.prunable
    stream = [g for g in graph.groups if (not g.prunable and STREAM_REASON[name] in g.reason)
              or (g.prunable and STREAM_REASON[name] in g.inexact)]
    assert stream, f"{name}: the residual stream should be blocked or inexact because of "\
                   f"{STREAM_REASON[name]}"


def test_convnext_stream_prunes_with_its_layer_scales_but_not_exactly():
    """Where a norm over the channels makes exactness impossible: it runs, keeps the output
    shape, and removes what was planned from every layer and layer scale of the group."""
    torch.manual_seed(0)
    model, x = randomize_weights(SMALL["convnext"]()), torch.randn(2, 3, 32, 32)
    graph = trace(model, x)
    stream = next(g for g in graph.prunable if g.inexact and g.channels == 16)
    assert "layer_norm" in stream.inexact
    assert {m.attr for m in stream.members} >= {"", "layer_scale"}
    result = prune(model, x, ratio={stream.id: 0.5})
    assert result.model(x).shape == model(x).shape and lint(result.model, x) == []
    block = result.model.features[1][0]
    assert block.layer_scale.shape == (8, 1, 1) and block.block[0].out_channels == 8
    assert result.model.features[0][0].out_channels == 8


def test_vit_loses_whole_heads_and_mlp_width():
    torch.manual_seed(0)
    model, x = randomize_weights(SMALL["vit"]()), torch.randn(2, 3, 32, 32)
    graph, result = check_exact(model, x)
    assert sorted(g.channels for g in graph.prunable) == [4, 4, 64, 128, 128]  # 64: stream
    block = result.model.encoder.layers.encoder_layer_0
    attn = block.self_attention
    assert isinstance(attn, PrunedMultiheadAttention)
    assert (attn.num_heads, attn.head_dim, tuple(attn.in_proj_weight.shape)) == (2, 16, (96, 64))
    assert attn.out_proj.in_features == 32 and block.mlp[0].out_features == 64


@pytest.mark.parametrize("batch_first", [True, False])
def test_pruned_attention_keeping_every_head_equals_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 4, batch_first=batch_first).eval()
    same = rebuild_mha(mha, {0: torch.arange(24)})
    x = torch.randn(3, 5, 8)
    batch, tokens = (3, 5) if batch_first else (5, 3)
    mask = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=1)
    pad = torch.zeros(batch, tokens, dtype=torch.bool)
    pad[1, -1] = True
    for kwargs in ({}, {"attn_mask": mask}, {"key_padding_mask": pad}, {"need_weights": False},
                   {"need_weights": True, "average_attn_weights": False}):
        with torch.no_grad():
            want, want_w = mha(x, x, x, **kwargs)
            got, got_w = same(x, x, x, **kwargs)
        assert relative_error(got, want) <= 1e-5
        assert (got_w is None) == (want_w is None)
        if want_w is not None:
            assert relative_error(got_w, want_w) <= 1e-5


def test_kept_heads_refuses_rows_that_split_a_head():
    assert kept_heads([0, 1, 4, 5, 8, 9], 2, 2) == [0]
    with pytest.raises(Exception, match="whole heads"):
        kept_heads([0, 4, 8], 2, 2)


def test_layer_norm_over_pruned_channels_is_not_exact_but_shrinks_as_planned():
    """LayerNorm over channels: removing dead channels changes the mean and variance over the
    channel dim, so the output differs from the dead-channel model. We check it still runs,
    keeps its output shape, and every layer has the planned width."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), LayerNorm2d(8), nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(2, 3, 5, 5)
    result = prune(model, x, ratio=0.5)
    assert result.model(x).shape == model(x).shape and lint(result.model, x) == []
    assert isinstance(result.model[1], LayerNorm2d)
    assert (result.model[0].out_channels, result.model[1].normalized_shape,
            result.model[2].in_channels) == (4, (4,), 4)


ZOO = {"vit_b_16": 224, "convnext_tiny": 64, "swin_t": 64, "swin_v2_t": 64, "maxvit_t": 224}


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(ZOO))
def test_full_size_transformer_families_prune_exactly(name):
    torch.manual_seed(0)
    model = randomize_weights(torchvision.models.get_model(name, weights=None))
    graph, _ = check_exact(model, torch.randn(1, 3, ZOO[name], ZOO[name]), ratio=0.3)
    assert graph.prunable



def test_a_pruned_vit_prunes_again_exactly():
    """PrunedMultiheadAttention is a traced leaf with the MHA rule: its heads prune again."""
    model, x = randomize_weights(SMALL["vit"]()), torch.randn(2, 3, 32, 32)
    once = prune(model, x, ratio=0.5).model
    assert once.encoder.layers[0].self_attention.num_heads == 2
    c = check(once, x, ratio=0.5)
    assert c.removed == c.dead and c.shape_kept and c.error <= 1e-4
    attention = c.result.model.encoder.layers[0].self_attention
    assert isinstance(attention, PrunedMultiheadAttention) and attention.num_heads == 1
    assert lint(c.result.model, x) == []


def test_target_macs_sizes_attention_members_by_their_packed_weight():
    """The MAC model measures MHA members through in_proj_weight (it used to look for .weight)."""
    model, x = randomize_weights(SMALL["vit"]()), torch.randn(1, 3, 32, 32)
    result = prune(model, x, budget=Budget(target_macs=500_000))
    assert result.params_after < result.params_before
    assert lint(result.model, x) == []

"""MACs of attention: the same formula before and after surgery, checked against FlopCounterMode.

fvcore left fused attention (``aten::_native_multi_head_attention``, the eval fast path of
``nn.MultiheadAttention``, and ``aten::scaled_dot_product_attention``) uncounted, so a pruned
ViT (explicit projections + sdpa) counted more MACs than the dense one.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from surgery import Budget, prune
from surgery.macs import multihead_macs
from surgery.measure.flops import count_flops
from surgery.rebuild.attention import multihead_attention


def tiny_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                                num_heads=4, hidden_dim=32, mlp_dim=64,
                                                num_classes=10)


class SelfAttention(nn.Module):
    """Self-attention as a ViT calls it (no attention weights: the fused fast path in eval)."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def test_fused_multihead_attention_counted_by_formula() -> None:
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(2, 5, 16)
    count = count_flops(SelfAttention(mha), x)
    assert count.uncounted == {}
    # q, k, v, out projections 4 * 2*5*16*16 = 10240; q @ k^T and attn @ v 2 * 2*4*5*5*4 = 1600
    assert count.total == multihead_macs(2, 5, 5, 16, 16) == 10240 + 1600


def test_pruned_attention_counted_by_the_same_formula() -> None:
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(2, 5, 16)
    rows = [r for head in (0, 2) for part in range(3) for r in range(part * 16 + head * 4,
                                                                     part * 16 + head * 4 + 4)]
    small = multihead_attention(mha, {0: torch.tensor(sorted(rows))})
    small.out_proj = nn.Linear(8, 16)  # its input columns: a member of their own
    count = count_flops(SelfAttention(small), x)
    assert "aten::scaled_dot_product_attention" not in count.uncounted
    assert count.total == multihead_macs(2, 5, 5, 16, 8)  # half the heads: inner 8


def test_fvcore_total_matches_flop_counter_mode_on_a_transformer() -> None:
    """timm ViT with explicit attention matmuls: every MAC FlopCounterMode sees, we count too;
    fvcore adds the layer norms, which FlopCounterMode leaves out. The fused (sdpa) path counts
    the same."""
    vit = TimmViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                  num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    for block in vit.blocks:
        block.attn.fused_attn = False
    explicit = count_flops(vit, x)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vit(x)
    assert explicit.total - explicit.by_operator["layer_norm"] == counter.get_total_flops() // 2
    for block in vit.blocks:
        block.attn.fused_attn = True
    assert count_flops(vit, x).total == explicit.total


def test_torchvision_vit_fast_path_matches_flop_counter_mode_on_explicit_path() -> None:
    vit, x = tiny_vit().eval(), torch.randn(2, 3, 32, 32)
    fused = count_flops(vit, x)  # eval + no_grad: nn.MultiheadAttention's fused fast path
    assert "aten::_native_multi_head_attention" not in fused.uncounted
    with FlopCounterMode(display=False) as counter:  # grad on: explicit linear + sdpa
        vit(x)
    attention = 2 * 2 * 17 * 17 * 32 * 2  # q @ k^T and attn @ v, 2 layers: sdpa on CPU is
    # dispatched to a kernel FlopCounterMode has no formula for
    core = fused.total - fused.by_operator["layer_norm"] - attention
    assert core == counter.get_total_flops() // 2


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_pruned_vit_counts_fewer_macs_than_dense(ratio: float) -> None:
    vit, x = tiny_vit(), torch.randn(1, 3, 32, 32)
    dense = count_flops(vit, x)
    pruned = count_flops(prune(vit, x, ratio=ratio).model, x)
    assert pruned.total < dense.total
    assert not {"aten::scaled_dot_product_attention",
                "aten::_native_multi_head_attention"} & set(pruned.uncounted)


def test_target_macs_on_vit_lands_within_2_percent_by_the_counter() -> None:
    vit, x = tiny_vit(), torch.randn(1, 3, 32, 32)
    target = count_flops(vit, x).total // 2
    after = count_flops(prune(vit, x, budget=Budget(target_macs=target)).model, x).total
    assert 0.98 * target <= after <= target


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "convnext_tiny", "timm:convnext_atto",
                                  "resnet50", "mobilenet_v3_large", "efficientnet_b0",
                                  "regnet_y_400mf", "densenet121",
                                  "timm:deit_tiny_patch16_224"])
def test_zoo_target_macs_within_2_percent_and_fewer_macs_at_every_ratio(name: str) -> None:
    model = timm.create_model(name[5:], num_classes=10) if name.startswith("timm:") else \
        torchvision.models.get_model(name, weights=None)
    x = torch.randn(1, 3, 224, 224)
    dense = count_flops(model, x).total
    for ratio in (0.2, 0.5):
        assert count_flops(prune(model, x, ratio=ratio).model, x).total < dense
    target = dense // 2
    after = count_flops(prune(model, x, budget=Budget(target_macs=target)).model, x).total
    assert 0.98 * target <= after <= target

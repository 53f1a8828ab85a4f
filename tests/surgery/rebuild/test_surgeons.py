"""Surgeons by what a layer holds: subclasses keep their class, child modules, hooks and forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graphs.kinds import KINDS, layer_kind
from surgery import SurgeryError
from surgery.rebuild.attention import PrunedMultiheadAttention
from surgery.rebuild.surgeons import SurgeonTable, default_surgeons, linear, rebuild

OUT, IN = torch.tensor([0, 2, 3]), torch.tensor([1, 3])


class BatchNormAct2d(nn.BatchNorm2d):
    """Like timm's: a BatchNorm2d that holds its activation and dropout as child modules."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.0)
        self.tag = "bn-act"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(super().forward(x)))


class Conv2dSame(nn.Conv2d):
    """Like timm's: its own forward pads 'same' by hand, then convolves with no padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (2, 0, 2, 0))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """Like torchvision's LayerNorm2d: normalises dim 1 of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _randomised(module: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=generator) + 0.5)
    return module.eval()


def test_batch_norm_subclass_keeps_its_class_children_and_settings():
    old = _randomised(BatchNormAct2d(4))
    new = rebuild(old, {0: OUT})
    assert type(new) is BatchNormAct2d and new.num_features == 3 and new.tag == "bn-act"
    assert isinstance(new.act, nn.ReLU) and isinstance(new.drop, nn.Dropout)
    assert new.act is not old.act  # copies: the old layer is left as it was
    assert tuple(new.running_var.shape) == (3,) and old.num_features == 4
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(new(x[:, OUT]), old(x)[:, OUT], atol=1e-6)


def test_conv_subclass_with_its_own_forward():
    old = _randomised(Conv2dSame(4, 5, 3))
    new = rebuild(old, {0: OUT, 1: IN})
    assert type(new) is Conv2dSame and (new.in_channels, new.out_channels) == (2, 3)
    x = torch.randn(2, 4, 6, 6)
    x[:, [0, 2]] = 0  # the input channels that go are dead
    assert torch.allclose(new(x[:, IN]), old(x)[:, OUT], atol=1e-5)


def test_layer_norm_subclass():
    old = _randomised(ChannelsFirstLayerNorm(4))
    new = rebuild(old, {0: OUT})
    assert type(new) is ChannelsFirstLayerNorm and tuple(new.normalized_shape) == (3,)
    x = torch.randn(2, 4, 5, 5)[:, OUT]
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (3,), old.weight[OUT], old.bias[OUT],
                            old.eps).permute(0, 3, 1, 2)  # a norm over fewer channels: not exact
    assert torch.allclose(new(x), expected, atol=1e-6)


def test_forward_hooks_and_pre_hooks_are_carried_over():
    old = _randomised(nn.Linear(4, 5))
    calls = []
    old.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    old.register_forward_hook(lambda m, args, out: out * 2)
    new = rebuild(old, {0: OUT, 1: IN})
    x = torch.randn(3, 4)
    x[:, [0, 2]] = 0
    assert torch.allclose(new(x[:, IN]), old(x)[:, OUT], atol=1e-6)
    assert calls == ["pre", "pre"]  # new's call, then old's


def test_multihead_attention_keeps_hooks_and_mha_out_proj_stays_its_class():
    mha = nn.MultiheadAttention(8, 4, batch_first=True).eval()
    mha.register_forward_hook(lambda m, args, out: None)
    small = rebuild(mha, {0: torch.tensor([0, 1, 8, 9, 16, 17])})  # head 0's q, k and v rows
    assert isinstance(small, PrunedMultiheadAttention) and small.num_heads == 1
    assert len(small._forward_hooks) == 1
    out_proj = rebuild(mha.out_proj, {1: torch.tensor([0, 1])})
    assert type(out_proj) is type(mha.out_proj) and out_proj.in_features == 2


def test_every_kind_has_one_surgeon_and_register_refuses_duplicates():
    table = default_surgeons()
    assert sorted(table) == sorted(k.name for k in KINDS if k.reference)
    with pytest.raises(SurgeryError, match="already has a surgeon"):
        table.register("linear", linear)
    with pytest.raises(SurgeryError, match="unknown layer kind"):
        SurgeonTable().register("transformer_block", linear)
    with pytest.raises(SurgeryError, match="no surgeon for ReLU"):
        rebuild(nn.ReLU(), {0: OUT})


@pytest.mark.parametrize("module,kind", [
    (nn.ConvTranspose2d(2, 3, 3), "conv_transpose"), (Conv2dSame(2, 3, 3), "conv"),
    (nn.Linear(2, 3), "linear"), (BatchNormAct2d(3), "batch_norm"),
    (nn.InstanceNorm2d(3, affine=True), "batch_norm"), (nn.LayerNorm(3), "layer_norm"),
    (nn.GroupNorm(1, 3), "group_norm"), (nn.MultiheadAttention(4, 2), "attention"),
])
def test_layer_kind_is_decided_by_what_the_layer_holds(module, kind):
    assert layer_kind(module).name == kind

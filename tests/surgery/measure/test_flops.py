"""count_flops against torch's own FlopCounterMode and hand-computed LeNet numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from surgery.io.models import LeNet
from surgery.measure.flops import FlopCount, count_flops, count_params


class ConvLinear(nn.Module):
    """Only convs and linears: the ops both fvcore and FlopCounterMode count."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, bias=False)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))


class Residual(nn.Module):
    """A residual add (aten::add), which fvcore has no formula for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 3)
        self.b = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) * self.b(y)


def torch_macs(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode counts 2 FLOPs per multiply-add; halve it to get MACs."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2


def test_conv_linear_matches_flop_counter_mode_exactly() -> None:
    model, x = ConvLinear(), torch.randn(2, 3, 16, 16)
    assert count_flops(model, x).total == torch_macs(model, x)


def test_resnet18_conv_and_linear_match_flop_counter_mode() -> None:
    torchvision = pytest.importorskip("torchvision")
    model, x = torchvision.models.resnet18(), torch.randn(1, 3, 64, 64)
    count = count_flops(model, x)
    leaves = dict(model.named_modules())
    both = sum(n for name, n in count.by_module.items()
               if isinstance(leaves[name], (nn.Conv2d, nn.Linear)))
    # Convs (148,045,824 MACs) and the fc layer (512 * 1000 = 512,000) agree exactly.
    assert both == torch_macs(model, x) == 148_557_824
    # fvcore counts two ops FlopCounterMode does not:
    # - eval-mode batch_norm with affine: 2 per element (scale and shift). BN outputs of
    #   resnet18 at 64x64: stem 64*32*32 = 65,536; layer1 4 * 64*16*16 = 65,536;
    #   layer2 5 * 128*8*8 = 40,960; layer3 5 * 256*4*4 = 20,480; layer4 5 * 512*2*2 = 10,240
    #   (5 = 4 in the blocks + 1 in the downsample); 202,752 elements * 2 = 405,504.
    # - adaptive_avg_pool2d: 1 per input element, 512*2*2 = 2,048.
    # Neither counts relu, max_pool2d or the residual add_.
    bn = sum(n for name, n in count.by_module.items() if isinstance(leaves[name], nn.BatchNorm2d))
    assert bn == 405_504
    assert count.by_module["avgpool"] == 2_048
    assert count.total == both + bn + 2_048 == 148_965_376
    assert count.uncounted == {"aten::max_pool2d": 1, "aten::add_": 8}


def test_lenet_hand_computed() -> None:
    count = count_flops(LeNet(), torch.zeros(1, 1, 28, 28))
    conv1 = 6 * 24 * 24 * (1 * 5 * 5)  # out channels * out pixels * MACs per output = 86,400
    conv2 = 16 * 8 * 8 * (6 * 5 * 5)  # = 153,600
    fc1, fc2, fc3 = 256 * 120, 120 * 84, 84 * 10  # = 30,720, 10,080, 840
    assert count.by_module["conv1"] == conv1 == 86_400
    assert count.by_module["conv2"] == conv2 == 153_600
    assert (count.by_module["fc1"], count.by_module["fc2"], count.by_module["fc3"]) == (
        fc1, fc2, fc3)
    assert count.total == count.by_module[""] == conv1 + conv2 + fc1 + fc2 + fc3 == 281_640
    assert count.flops == 2 * 281_640
    assert count.total == torch_macs(LeNet(), torch.zeros(1, 1, 28, 28))


def test_uncounted_ops_are_listed() -> None:
    count = count_flops(Residual(), torch.randn(1, 4, 8, 8))
    assert count.uncounted == {"aten::add": 1}
    assert count.total == 4 * 8 * 8 * (4 * 3 * 3)
    assert "uncounted ops: aten::add (1)" in str(count)


def test_training_flags_restored() -> None:
    model = LeNet().train()
    model.conv2.eval()
    count_flops(model, torch.zeros(1, 1, 28, 28))
    assert model.training and model.conv1.training and model.fc3.training
    assert not model.conv2.training


def test_model_weights_unchanged() -> None:
    model = LeNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, torch.zeros(1, 1, 28, 28))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_tuple_inputs() -> None:
    count = count_flops(TwoInputs(), (torch.randn(2, 5), torch.randn(2, 7)))
    assert count.by_module["a"] == 2 * 5 * 3
    assert count.by_module["b"] == 2 * 7 * 3


def test_str_uses_macs_and_flops() -> None:
    count = FlopCount(total=1_820_000_000, by_module={}, uncounted={"aten::add": 8})
    assert str(count) == "1.82 GMACs (3.64 GFLOPs); uncounted ops: aten::add (8)"
    assert str(FlopCount(total=840, by_module={}, uncounted={})) == "840 MACs (1.68 KFLOPs)"


def test_count_params_lenet() -> None:
    # conv1 6*1*25+6, conv2 16*6*25+16, fc1 256*120+120, fc2 120*84+84, fc3 84*10+10
    expected = (150 + 6) + (2400 + 16) + (30720 + 120) + (10080 + 84) + (840 + 10)
    assert count_params(LeNet()) == expected == 44_426

"""Every CNN family of torchvision.models: traced, pruned, and exact under the oracle.

One representative per family runs in the default suite at a small input; every model of the
family runs under ``-m zoo``. ResNet-18/50, VGG-11, MobileNetV2 and DenseNet-121 are already in
tests/surgery/test_exact.py, so their families are represented here by their heavier relatives
only under the zoo marker. Transformer families live in tests/surgery/test_transformer_families.py.
"""

import pytest
import torch
import torchvision
from torch import nn

from benchmarks.builders import build_model
from surgery.testing.oracle import check

FAST = ["alexnet", "squeezenet1_1", "googlenet", "inception_v3", "mobilenet_v3_small",
        "mnasnet0_5", "shufflenet_v2_x0_5", "efficientnet_b0", "regnet_y_400mf"]
# regnet_y_400mf stands for grouped convs (ResNeXt, RegNet-X run under -m zoo) and SE blocks
CNN_PREFIXES = ("alexnet", "vgg", "resnet", "resnext", "wide_resnet", "squeezenet", "densenet",
                "googlenet", "inception", "mobilenet", "mnasnet", "shufflenet", "efficientnet",
                "regnet")
ALL_CNNS = [n for n in torchvision.models.list_models(module=torchvision.models)
            if n.startswith(CNN_PREFIXES)]


def build(name):
    # googlenet: transform_input as with its ImageNet weights (x[:, k] slices, cat)
    return build_model(name, norms=True, **({"transform_input": True} if name == "googlenet"
                                            else {}))


def check_family_member(name, ratio=0.4):
    model = build(name)
    side = 75 if name == "inception_v3" else 64
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    c = check(model, x, ratio)
    graph, result = c.graph, c.result
    assert not graph.unsupported, [str(u) for u in graph.unsupported]
    # only the model input and output stay: every inner group is prunable
    assert {g.reason for g in graph.groups if not g.prunable} <= {
        "touches the model input", "touches the model output",
        "the input of conv2d carries no traced channels"}  # googlenet's transform_input
    assert c.removed == c.dead
    assert c.shape_kept and c.output_scale > 1e-3
    assert c.error <= 1e-4
    assert result.params_after < 0.8 * result.params_before
    return model, result


@pytest.mark.parametrize("name", FAST)
def test_family_representative_is_exact(name):
    model, result = check_family_member(name)
    for layer_name, layer in model.named_modules():  # grouped convs keep their group count
        if isinstance(layer, nn.Conv2d) and 1 < layer.groups < layer.in_channels:
            assert result.model.get_submodule(layer_name).groups == layer.groups


@pytest.mark.zoo
@pytest.mark.parametrize("name", ALL_CNNS)
def test_every_cnn_of_the_zoo_is_exact(name):
    check_family_member(name)

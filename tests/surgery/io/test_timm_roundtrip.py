"""A pruned timm model keeps working as one: ``forward_features`` then ``forward_head`` is
``forward``, ``num_features`` / ``head_hidden_size`` are the pruned widths, ``reset_classifier``
builds a head of the pruned width, ``pretrained_cfg`` stays; and a folder whose base is
``timm:NAME`` reloads and exports without ``--base``."""

from __future__ import annotations

import pytest
import torch

import surgery.io.bases
from surgery import load, prune, save
from surgery.cli import main
from surgery.errors import SurgeryError
from surgery.io.bases import resolve_builtin
from surgery.io.timm_models import check_timm_base

timm = pytest.importorskip("timm")

MODELS = {  # name: (create_model options, image size)
    "resnet18": ({}, 64),
    "vit_tiny_patch16_224": ({"img_size": 32}, 32),
    "convnext_atto": ({}, 64),
    "mobilenetv3_small_050": ({}, 64),  # a head conv after the pooling: two widths
}


def _pruned(name: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    options, size = MODELS[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **options).eval()
    x = torch.randn(2, 3, size, size)
    return model, prune(model, x[:1], ratio=0.5).model.eval(), x


def _channels(features: torch.Tensor, model: torch.nn.Module) -> int:
    nhwc = features.ndim == 4 and getattr(model, "output_fmt", "NCHW") == "NHWC"
    return features.shape[1] if features.ndim == 4 and not nhwc else features.shape[-1]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.zoo)  # slow on 2 cores
                                  if n.startswith("mobilenet") else n for n in sorted(MODELS)])
def test_a_pruned_timm_model_keeps_its_api(name):
    model, small, x = _pruned(name)
    with torch.no_grad():
        features = small.forward_features(x)
        assert torch.allclose(small.forward_head(features), small(x), atol=1e-6)
        hidden = small.forward_head(features, pre_logits=True)
    assert small.num_features == _channels(features, small) < model.num_features
    assert small.head_hidden_size == hidden.shape[-1] < model.head_hidden_size
    assert small.pretrained_cfg == model.pretrained_cfg and "input_size" in small.pretrained_cfg
    small.reset_classifier(5)
    assert small(x).shape == (2, 5)
    assert small.get_classifier().in_features == small.head_hidden_size


@pytest.mark.filterwarnings("ignore::surgery.plan.blocked.BlockedWarning")
def test_an_unpruned_head_width_is_left_as_it_was():
    model = timm.create_model("resnet18", num_classes=10).eval()
    small = prune(model, torch.randn(1, 3, 64, 64), ratio=0.5, ignore=["layer4"]).model
    assert small.num_features == small.fc.in_features == 512


def test_a_timm_folder_reloads_and_exports_without_base(tmp_path, capsys):
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    result = prune(model, x[:1], ratio=0.5)
    save(result, tmp_path / "r18", base="timm:resnet18", input_shape=x[:1].shape)
    (tmp_path / "r18" / "plan.json").write_text(  # as `surgery prune --num-classes 10` does
        (tmp_path / "r18" / "plan.json").read_text()[:-1] + ', "num_classes": 10}')
    base, shape = resolve_builtin("timm:resnet18", "plan.json", num_classes=10)
    reloaded = load(tmp_path / "r18", base)
    assert reloaded.num_features == result.model.num_features < 512
    reloaded.reset_classifier(5)
    assert reloaded(x).shape == (2, 5) and shape == (1, 3, 224, 224)
    assert main(["export", str(tmp_path / "r18"), "--format", "onnx"]) == 0
    assert (tmp_path / "r18" / "model.onnx").is_file()


def test_a_timm_base_from_a_folder_is_bounded_before_it_is_built(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a refused base must not be built")

    monkeypatch.setattr(surgery.io.bases, "resolve_model", never)
    with pytest.raises(SurgeryError, match="11,689,512 parameters, over the 1,000"):
        check_timm_base("timm:resnet18", "plan.json", max_params=1000)
    with pytest.raises(SurgeryError, match="not a built-in model"):
        resolve_builtin("timm:resnet18; rm -rf /", "plan.json")

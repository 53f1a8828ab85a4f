"""What loading a saved folder may cost, bounded before anything is built: the base model (a
built-in name, of bounded size), the recorded input shape (by the tensors one forward makes),
plan.json (bytes, values, finite numbers, entries per position of the base model), the
weights file (no larger than the model), and what a SIZE member may change."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

import surgery.io.bases
import surgery.io.safety
import surgery.io.saving
from surgery import SurgeryError, prune
from surgery.io.bases import (
    MAX_BASE_PARAMS,
    activation_bytes,
    builtin_bases,
    estimated_params,
    resolve_builtin,
)
from surgery.io.models import LeNet
from surgery.io.plan_checks import JSON_VALUES_PER_ENTRY, plan_capacity
from surgery.io.safety import MAX_JSON_VALUES, read_json
from surgery.io.saving import load, save

X = torch.zeros(1, 1, 28, 28)


def _never(*args, **kwargs):
    raise AssertionError("built or read before the bound was checked")


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "lenet"
    save(prune(LeNet(), X, ratio=0.5), out, base="lenet", input_shape=X.shape)
    return out


def _edit(folder, edit):
    data = json.loads((folder / "plan.json").read_text())
    edit(data)
    (folder / "plan.json").write_text(json.dumps(data))
    return folder


def test_the_list_of_bases_and_their_estimated_sizes():
    names = builtin_bases()
    assert names[0] == "lenet" and "resnet18" in names and "mobilenet_v2" in names
    assert not any(":" in n for n in names)
    assert estimated_params("lenet") == sum(p.numel() for p in LeNet().parameters())
    resnet = torchvision.models.resnet18(num_classes=10)
    assert sum(p.numel() for p in resnet.parameters()) <= estimated_params("resnet18", 10)


@pytest.mark.parametrize("name,num_classes", [("vit_h_14", None), ("regnet_y_128gf", None),
                                              ("vgg11", 99_999), ("regnet_x_400mf", 50_000)])
def test_a_base_over_the_size_bound_is_refused_before_it_is_built(monkeypatch, name,
                                                                  num_classes):
    monkeypatch.setattr(surgery.io.bases, "resolve_model", _never)
    with pytest.raises(SurgeryError, match=f"over the {MAX_BASE_PARAMS:,} a saved folder"):
        resolve_builtin(name, "plan.json", num_classes)


@pytest.mark.parametrize("name", ["timm:no_such_net", "yolo:best.pt", "evil.py:build",
                                  " lenet", "", "LeNet"])
def test_only_names_of_the_list(monkeypatch, name):
    monkeypatch.setattr(surgery.io.bases, "resolve_model", _never)
    with pytest.raises(SurgeryError, match="not a built-in model"):
        resolve_builtin(name, "plan.json")


def test_activation_bytes_by_hand():
    # the input (2 x 4 floats) and each output (2 x 3 floats), 4 bytes each
    assert activation_bytes(nn.Sequential(nn.Linear(4, 3)), (2, 4)) == 32 + 24
    assert activation_bytes(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), (2, 4)) == 32 + 24 + 24


def test_activation_bytes_leaves_the_model_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    activation_bytes(model, (1, 1, 64, 64))
    assert model.training and model[1].training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(v.device.type == "cpu" for v in model.state_dict().values())


def test_a_recorded_input_shape_is_bounded_by_the_memory_it_implies(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 2))
    out = tmp_path / "net"
    save(prune(net, torch.zeros(1, 1, 16, 16), ratio=0.5), out, input_shape=(1, 1, 16, 16))
    assert load(out, net)(torch.zeros(1, 1, 16, 16)).shape == (1, 2)
    # 2^27 elements (within check_shape's bound): 4.3 GB of conv output, never allocated
    _edit(out, lambda d: d.update(input_shape=[2, 1, 8192, 8192]))
    with pytest.raises(SurgeryError, match=r"makes 4\.\d GiB of tensors in one forward pass; "
                                           r"a saved folder may ask for at most 2 GiB"):
        load(out, net)
    assert load(out, net, example_inputs=torch.zeros(1, 1, 16, 16)) is not None


def test_plan_entries_are_bounded_by_the_base_model_before_the_plan_is_built(folder,
                                                                               monkeypatch):
    _edit(folder, lambda d: d["groups"][0].update(members=d["groups"][0]["members"] * 2000))
    monkeypatch.setattr(surgery.io.saving, "plan_from_json", _never)
    with pytest.raises(SurgeryError, match="lists 28,803 groups, members and indices; a plan "
                                           "for this base model lists at most"):
        load(folder, LeNet())


def test_a_padded_plan_json_is_refused_before_it_is_parsed(folder, monkeypatch):
    _edit(folder, lambda d: d["groups"][0].update(members=d["groups"][0]["members"] * 20_000))
    monkeypatch.setattr(surgery.io.safety.json, "loads", _never)
    limit = JSON_VALUES_PER_ENTRY * plan_capacity(LeNet())
    with pytest.raises(SurgeryError, match=f"holds over {limit:,} values"):
        load(folder, LeNet())


def test_plan_json_is_read_with_a_value_bound(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("[" + "0," * MAX_JSON_VALUES + "0]")
    with pytest.raises(SurgeryError, match=f"holds over {MAX_JSON_VALUES:,} values"):
        read_json(path)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "1" * 13])
def test_plan_json_numbers_are_finite_and_bounded(tmp_path, number):
    path = tmp_path / "plan.json"
    path.write_text(f'{{"ratio": [{number}]}}')
    with pytest.raises(SurgeryError, match="not a finite number|not a JSON number|over 12 dig"):
        read_json(path)


class StridedConv(nn.Conv2d):
    """A subclass: torch's settings (stride, padding, ...) stay out of a plan's reach."""


@pytest.mark.parametrize("attr,kept,removed", [("stride", [0], []), ("padding", [0, 1], [2]),
                                               ("kernel_size", [0, 1, 2, 3], [4]),
                                               ("dilation", [0], []), ("groups", [0], [])])
def test_size_members_may_not_change_a_layer_setting(folder, attr, kept, removed):
    member = {"module": "conv1", "role": "size", "dim": 0, "kept": kept, "removed": removed,
              "attr": attr}
    _edit(folder, lambda d: d["groups"][0]["members"].append(member))
    with pytest.raises(SurgeryError, match=f"changes '{attr}' of 'conv1' \\(Conv2d\\), which "
                                           f"pruning never changes"):
        load(folder, LeNet())
    model = LeNet()
    model.conv1 = StridedConv(1, 6, 5)
    with pytest.raises(SurgeryError, match="which pruning never changes"):
        load(folder, model)


def test_a_weights_file_larger_than_the_model_is_not_read(folder, monkeypatch):
    with open(folder / "model.safetensors", "ab") as file:
        file.write(b"\0" * (1 << 20))
    monkeypatch.setattr(surgery.io.saving, "load_file", _never)
    with pytest.raises(SurgeryError, match="more than the rebuilt model's tensors need"):
        load(folder, LeNet())


@pytest.mark.zoo
@pytest.mark.parametrize("name", builtin_bases()[1:])
def test_every_base_estimate_holds_and_its_cost_is_known(name):
    try:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, num_classes=10)
    except NotImplementedError:  # regnets compute their widths with real tensors
        if estimated_params(name, 10) > 50_000_000:
            pytest.skip(f"{name} builds only with real tensors, too big for a test")
        model = torchvision.models.get_model(name, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) <= estimated_params(name, 10)
    shape = (1, 3, 299, 299) if name == "inception_v3" else (1, 3, 224, 224)
    assert 0 < activation_bytes(model, shape) < 1 << 31

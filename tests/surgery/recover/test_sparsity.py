"""Tests for surgery.recover.sparsity: magnitude masks, applying them, and the sparsity report."""

from __future__ import annotations

import pytest
import torch

from surgery.errors import SurgeryError
from surgery.io.models import LeNet
from surgery.recover.sparsity import apply_masks, magnitude_masks, sparsity_report

RECIPE = {"conv1": 0.85, "conv2": 0.8, "fc1": 0.75, "fc2": 0.7, "fc3": 0.8}
EXPECTED_ZEROS = {"conv1": 128, "conv2": 1920, "fc1": 23040, "fc2": 7056, "fc3": 672}


@pytest.fixture()
def model() -> LeNet:
    torch.manual_seed(0)
    return LeNet()


def test_lenet_recipe_overall_sparsity_exact(model):
    apply_masks(model, magnitude_masks(model, RECIPE))
    report = sparsity_report(model)
    assert report["params"] == 44426
    assert report["zeros"] == sum(EXPECTED_ZEROS.values()) == 32816
    assert round(report["sparsity"], 4) == 0.7387


def test_lenet_recipe_per_layer_counts(model):
    apply_masks(model, magnitude_masks(model, RECIPE))
    layers = sparsity_report(model)["layers"]
    assert sorted(layers) == sorted(RECIPE)
    for name, zeros in EXPECTED_ZEROS.items():
        weight = getattr(model, name).weight
        assert int((weight == 0).sum()) == zeros
        assert layers[name]["zeros"] == zeros  # biases stay dense
        assert layers[name]["params"] == weight.numel() + getattr(model, name).bias.numel()
        assert layers[name]["weight_sparsity"] == pytest.approx(zeros / weight.numel())


def test_masks_zero_the_smallest_magnitudes(model):
    masks = magnitude_masks(model, {"fc1": 0.5, "conv2": 0.3})
    assert set(masks) == {"fc1.weight", "conv2.weight"}
    for key, mask in masks.items():
        weight = dict(model.named_parameters())[key].detach().abs()
        assert mask.shape == weight.shape
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert weight[mask == 0].max() <= weight[mask == 1].min()


def test_magnitude_masks_leaves_model_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    magnitude_masks(model, RECIPE)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_ties_still_give_exact_count(model):
    with torch.no_grad():
        model.fc3.weight.fill_(0.5)
    mask = magnitude_masks(model, {"fc3": 0.5})["fc3.weight"]
    assert int((mask == 0).sum()) == 420


def test_zero_fraction_keeps_everything(model):
    mask = magnitude_masks(model, {"conv1": 0.0})["conv1.weight"]
    assert bool((mask == 1).all())


def test_apply_masks_in_place_keeps_parameters(model):
    weight = model.fc2.weight
    apply_masks(model, magnitude_masks(model, {"fc2": 0.7}))
    assert model.fc2.weight is weight
    assert weight.requires_grad and weight.grad is None
    assert int((weight == 0).sum()) == 7056


@pytest.mark.parametrize("name", ["conv3", "", "fc1.weight", "nope"])
def test_unknown_layer_raises(model, name):
    with pytest.raises(SurgeryError, match="unknown layer"):
        magnitude_masks(model, {name: 0.5})


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, "0.5", None, True])
def test_fraction_outside_range_raises(model, fraction):
    with pytest.raises(SurgeryError, match="conv1"):
        magnitude_masks(model, {"conv1": fraction})


def test_apply_masks_rejects_unknown_parameter(model):
    with pytest.raises(SurgeryError, match="unknown parameter"):
        apply_masks(model, {"fc9.weight": torch.ones(3)})


def test_apply_masks_rejects_wrong_shape(model):
    with pytest.raises(SurgeryError, match="shape"):
        apply_masks(model, {"fc3.weight": torch.ones(84, 10)})


def test_report_counts_biases_too(model):
    report = sparsity_report(model)
    assert report["zeros"] == 0 and report["sparsity"] == 0.0
    apply_masks(model, {"fc3.bias": torch.zeros(10)})
    report = sparsity_report(model)
    assert report["zeros"] == 10
    assert report["layers"]["fc3"]["weight_sparsity"] == 0.0
    assert report["layers"]["fc3"]["sparsity"] == pytest.approx(10 / 850)
    assert report["sparsity"] == pytest.approx(10 / 44426)


def test_report_on_nested_model():
    nested = torch.nn.Sequential(torch.nn.PReLU())
    net = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False), nested)
    with torch.no_grad():
        net[0].weight.zero_()
    report = sparsity_report(net)
    assert set(report["layers"]) == {"0", "1.0"}
    assert report["zeros"] == 8 and report["params"] == 9
    assert report["layers"]["1.0"]["weight_sparsity"] == 0.0


def test_sparsify_cli_reproduces_the_lenet_recipe(tmp_path, capsys):
    from safetensors.torch import load_file

    from surgery.cli import main

    out = tmp_path / "sparse.safetensors"
    argv = ["sparsify", "lenet", "--train-epochs", "1", "--finetune-epochs", "1",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(0.7387, biases included)" in text and "fine-tuned" in text
    state = load_file(str(out))
    assert int((state["fc1.weight"] == 0).sum()) == round(0.75 * 120 * 256)


@pytest.mark.parametrize("recipe", ["conv1", "conv1=x", "=0.5", "conv1=1.5"])
def test_sparsify_cli_refuses_bad_recipes(recipe, tmp_path, capsys):
    from surgery.cli import main

    weights = tmp_path / "w.pt"
    torch.save(LeNet().state_dict(), weights)
    argv = ["sparsify", "lenet", "--sparsity", recipe, "--weights", str(weights),
            "--out", str(tmp_path / "x.safetensors")]
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err

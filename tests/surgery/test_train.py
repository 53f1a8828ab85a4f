"""Tests for surgery.train: accuracy after short training, masks, determinism, errors."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset, TensorDataset

from surgery.data import MnistSplits, load_mnist, loaders
from surgery.errors import SurgeryError
from surgery.sparsity import apply_masks, magnitude_masks, sparsity_report
from surgery.train import evaluate, finetune, train
from surgery.zoo import LeNet

RECIPE = {"conv1": 0.85, "conv2": 0.8, "fc1": 0.75, "fc2": 0.7, "fc3": 0.8}


@pytest.fixture(scope="module")
def splits() -> MnistSplits:
    return load_mnist()


@pytest.fixture(scope="module")
def trained(splits) -> LeNet:
    """LeNet after one epoch of SGD on the 4,000-image split (measured test accuracy 0.865)."""
    torch.manual_seed(0)
    train_loader, _ = loaders(splits, batch_size=64, seed=0)
    return train(LeNet(), train_loader, epochs=1, seed=0, progress=False)


@pytest.fixture()
def small_loader(splits) -> DataLoader:
    subset = Subset(splits.train, range(512))
    generator = torch.Generator().manual_seed(0)
    return DataLoader(subset, batch_size=64, shuffle=True, generator=generator)


def test_one_epoch_beats_chance_clearly(splits, trained):
    _, test_loader = loaders(splits)
    assert evaluate(trained, test_loader) > 0.8


def test_untrained_model_is_near_chance(splits):
    torch.manual_seed(0)
    _, test_loader = loaders(splits)
    assert evaluate(LeNet(), test_loader) < 0.3


@pytest.mark.parametrize("mode", [True, False])
def test_evaluate_restores_training_flag(splits, mode):
    model = LeNet().train(mode)
    _, test_loader = loaders(splits, batch_size=500)
    accuracy = evaluate(model, test_loader)
    assert 0.0 <= accuracy <= 1.0
    assert model.training is mode


def test_evaluate_empty_loader_raises():
    with pytest.raises(SurgeryError, match="empty"):
        evaluate(LeNet(), [])


def test_train_is_in_place_and_deterministic(small_loader):
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        model = LeNet()
        small_loader.generator.manual_seed(0)
        assert train(model, small_loader, seed=5, progress=False) is model
        results.append(model.state_dict())
    for key, value in results[0].items():
        assert torch.equal(value, results[1][key]), key


def test_train_restores_training_flag(small_loader):
    model = LeNet().eval()
    train(model, small_loader, progress=False)
    assert model.training is False


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masks_survive_training(small_loader, optimizer):
    torch.manual_seed(0)
    model = LeNet()
    masks = magnitude_masks(model, RECIPE)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    train(model, small_loader, epochs=2, optimizer=optimizer, progress=False, masks=masks)
    params = dict(model.named_parameters())
    for key, mask in masks.items():
        assert bool((params[key][mask == 0] == 0).all()), key
    assert not torch.equal(params["fc1.weight"], before["fc1.weight"])  # it did train
    assert round(sparsity_report(model)["sparsity"], 4) == 0.7387


def test_finetune_recovers_pruned_accuracy(splits, trained):
    model = LeNet()
    model.load_state_dict(trained.state_dict())
    masks = magnitude_masks(model, RECIPE)
    apply_masks(model, masks)
    train_loader, test_loader = loaders(splits, seed=1)
    pruned = evaluate(model, test_loader)  # measured 0.724
    finetune(model, train_loader, masks=masks, seed=1, progress=False)
    assert evaluate(model, test_loader) > max(0.85, pruned)  # measured 0.936
    assert round(sparsity_report(model)["sparsity"], 4) == 0.7387


def test_progress_bar_goes_to_stderr(small_loader, capsys):
    train(LeNet(), small_loader, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -0.1}, "learning rate"),
        ({"masks": {"fc9.weight": torch.ones(1)}}, "unknown parameter"),
    ],
)
def test_bad_arguments_raise(small_loader, kwargs, match):
    with pytest.raises(SurgeryError, match=match):
        train(LeNet(), small_loader, progress=False, **kwargs)


def test_runs_under_initialised_process_group(tmp_path):
    """Single-process gloo group: exercises the DDP + DistributedSampler path on CPU."""
    data = TensorDataset(torch.randn(64, 1, 28, 28), torch.arange(64) % 10)
    loader = DataLoader(data, batch_size=16)
    torch.manual_seed(0)
    model = LeNet()
    masks = magnitude_masks(model, {"fc1": 0.5})
    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        out = train(model, loader, epochs=2, progress=True, masks=masks)
    finally:
        dist.destroy_process_group()
    assert out is model and isinstance(out, LeNet)
    assert int((model.fc1.weight == 0).sum()) == 15360

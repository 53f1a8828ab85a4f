"""Iterative prune -> fine-tune schedules: per-round budgets, fine-tune calls, final landing."""

import pytest
import torch

from surgery import SurgeryError
from surgery.io.models import LeNet
from surgery.measure.flops import count_flops
from surgery.recover.data import load_mnist, loaders
from surgery.recover.schedule import iterative_prune
from surgery.recover.train import evaluate, finetune

X = torch.zeros(1, 1, 28, 28)
DENSE = 281_640


def test_target_macs_rounds_are_geometric_and_land_within_two_percent():
    seen = []
    result = iterative_prune(LeNet(), X, steps=3, target_macs=60_000,
                             finetune=lambda m: seen.append(count_flops(m, X).total))
    targets = [round(DENSE * (60_000 / DENSE) ** (i / 3)) for i in (1, 2, 3)]
    assert [s.macs for s in result.steps] == seen
    assert all(0.98 * t <= s.macs <= t for s, t in zip(result.steps, targets))
    assert count_flops(result.model, X).total == result.steps[-1].macs
    assert len(result.plans) == 3


def test_ratio_rounds_compound_to_about_the_final_ratio():
    model = LeNet()
    result = iterative_prune(model, X, steps=2, ratio=0.5, finetune=lambda m: None)
    kept = (result.model.conv1.out_channels, result.model.conv2.out_channels,
            result.model.fc1.out_features, result.model.fc2.out_features)
    assert kept == (4, 9, 61, 43)  # vs (3, 8, 60, 42) in one shot: floors round each round
    assert model.conv1.out_channels == 6  # the input model is untouched


def test_taylor_rounds_need_data():
    with pytest.raises(SurgeryError, match="needs data="):
        iterative_prune(LeNet(), X, steps=2, ratio=0.5, importance="taylor",
                        finetune=lambda m: None)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"steps": 0, "ratio": 0.5}, "steps must be"),
    ({"steps": 2}, "exactly one of"),
    ({"steps": 2, "target_macs": 10**9}, "not below"),
])
def test_bad_schedules_are_refused(kwargs, match):
    with pytest.raises(SurgeryError, match=match):
        iterative_prune(LeNet(), X, finetune=lambda m: None, **kwargs)


@pytest.mark.zoo  # real training: ~20 s on an idle 2-core machine
def test_iterative_taylor_with_real_finetuning_recovers_accuracy():
    splits = load_mnist()
    small = torch.utils.data.Subset(splits.train, range(0, 4000, 2))
    train_loader = torch.utils.data.DataLoader(
        small, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    _, test_loader = loaders(splits, batch_size=500)
    torch.manual_seed(0)
    model = finetune(LeNet(), train_loader, epochs=2, progress=False)
    dense = evaluate(model, test_loader)
    result = iterative_prune(
        model, X, steps=2, target_macs=DENSE // 4, importance="taylor", data=train_loader,
        global_ranking=True, evaluate=lambda m: evaluate(m, test_loader),
        finetune=lambda m: finetune(m, train_loader, epochs=1, seed=1, progress=False))
    last = result.steps[-1]
    assert 0.98 * (DENSE // 4) <= last.macs <= DENSE // 4
    assert dense >= 0.75 and last.tuned_accuracy > 0.85  # measured 0.800 and 0.861
    assert last.tuned_accuracy > last.pruned_accuracy

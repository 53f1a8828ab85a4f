"""Tests for surgery.recover.distill: the loss against its definition, training with a teacher,
the CLI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

from surgery.cli import main as cli_main
from surgery.errors import SurgeryError
from surgery.io.models import LeNet
from surgery.io.saving import load
from surgery.prune import prune
from surgery.recover.distill import distill_loss, distillation_loss, finetune_distilled
from surgery.recover.train import finetune

X = torch.zeros(1, 1, 28, 28)


def test_loss_is_its_definition():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    y = torch.tensor([0, 1, 2, 0])
    T, alpha = 3.0, 0.25
    p = [[math.exp(v / T) for v in row] for row in t.tolist()]
    q = [[math.exp(v / T) for v in row] for row in s.tolist()]
    kl = 0.0
    for pr, qr in zip(p, q):
        pr = [v / sum(pr) for v in pr]
        qr = [v / sum(qr) for v in qr]
        kl += sum(a * math.log(a / b) for a, b in zip(pr, qr)) / 4
    expected = alpha * T * T * kl + (1 - alpha) * float(F.cross_entropy(s, y))
    assert float(distillation_loss(s, t, y, temperature=T, alpha=alpha)) == \
        pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_cross_entropy_and_teacher_gets_no_gradient():
    s = torch.randn(2, 5, requires_grad=True)
    t = torch.randn(2, 5, requires_grad=True)
    y = torch.tensor([1, 3])
    assert torch.equal(distillation_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    distillation_loss(s, t, y, alpha=1.0).backward()
    assert t.grad is None and s.grad is not None


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,),
                                                                             generator=g)
    return DataLoader(TensorDataset(images, labels), batch_size=16)


def test_alpha_zero_trains_exactly_like_finetune():
    torch.manual_seed(0)
    teacher = LeNet()
    a, b = (prune(teacher, X, ratio=0.5).model for _ in range(2))
    finetune(a, data(), epochs=2, progress=False)
    finetune_distilled(b, teacher, data(), alpha=0.0, epochs=2, progress=False)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def kl_gap(student, teacher, x) -> float:
    with torch.no_grad():
        return float(F.kl_div(F.log_softmax(student(x), 1), F.log_softmax(teacher(x), 1),
                              log_target=True, reduction="batchmean"))


def test_teacher_is_untouched_and_student_moves_towards_it():
    torch.manual_seed(0)
    teacher = LeNet()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = prune(teacher, X, ratio=0.5).model
    x = next(iter(data()))[0]
    gap = kl_gap(student, teacher, x)
    finetune_distilled(student, teacher, data(), alpha=1.0, temperature=1.0, epochs=3,
                       optimizer="adam", progress=False)
    assert kl_gap(student, teacher, x) < gap / 2
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize(("kwargs", "match"), [({"temperature": 0.0}, "temperature"),
                                               ({"alpha": 1.5}, "alpha")])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(SurgeryError, match=match):
        distill_loss(LeNet(), **kwargs)


def test_finetune_cli_distill(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "dense.safetensors"
    save_file(LeNet().state_dict(), str(weights))
    pruned, out = tmp_path / "pruned", tmp_path / "kd"
    assert cli_main(["prune", "lenet", "--weights", str(weights), "--ratio", "0.5",
                     "--out", str(pruned)]) == 0
    argv = ["finetune", str(pruned), "--epochs", "1", "--max-images", "128", "--out", str(out),
            "--no-progress", "--distill", str(weights), "--temperature", "2", "--alpha", "0.7"]
    assert cli_main(argv) == 0
    assert "test accuracy" in capsys.readouterr().out
    before, after = load(pruned, LeNet()), load(out, LeNet())
    assert after.conv1.out_channels == 3
    assert not torch.equal(after.fc1.weight, before.fc1.weight)

"""ONNX (checker + onnxruntime vs PyTorch), torch.export .pt2 round trips, `surgery export`."""

import copy
import json

import numpy as np
import pytest
import torch
import torchvision

from surgery import SurgeryError, prune
from surgery.cli import main
from surgery.io.export import compare_onnx, export_onnx, export_program
from surgery.io.models import LeNet

SHAPES = {"lenet": (1, 28, 28), "resnet": (3, 32, 32)}


def _base(name):
    torch.manual_seed(0)
    if name == "lenet":
        return LeNet().eval()
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def pruned():
    """name -> pruned model (LeNet at 28x28, ResNet-18 at 32x32), each with a changed width."""
    models = {name: prune(_base(name), torch.zeros(1, *shape), ratio=0.5).model.eval()
              for name, shape in SHAPES.items()}
    assert models["lenet"].conv1.out_channels == 3 and models["resnet"].conv1.out_channels == 32
    return models


def _rel_err(got, want):
    return np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)


@pytest.mark.parametrize("name", SHAPES)
def test_onnx_checked_and_runs_in_onnxruntime_at_any_batch(tmp_path, pruned, name):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, shape = pruned[name], SHAPES[name]
    path = export_onnx(model, torch.zeros(1, *shape), tmp_path / "m.onnx")
    onnx.checker.check_model(str(path))
    batch_dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, *shape)
        got = session.run(None, {"input0": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == want.shape == (batch, 10)
        assert _rel_err(got, want) <= 1e-4
        assert compare_onnx(path, model, x) <= 1e-4


def test_compare_onnx_reports_a_different_model(tmp_path, pruned):
    path = export_onnx(pruned["lenet"], torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    assert compare_onnx(path, _base("lenet"), torch.randn(2, 1, 28, 28)) > 1e-2


@pytest.mark.parametrize("name", SHAPES)
def test_torch_export_program_saved_reloaded_at_other_batches(tmp_path, pruned, name):
    model, shape = pruned[name], SHAPES[name]
    path = export_program(model, torch.zeros(1, *shape), tmp_path / "m.pt2")
    assert path.suffix == ".pt2" and path.stat().st_size > 0
    reloaded = torch.export.load(str(path)).module()
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            torch.testing.assert_close(reloaded(x), model(x), rtol=1e-4, atol=1e-5)


def test_export_failure_is_a_surgery_error(tmp_path):
    class Untraceable(torch.nn.Module):
        def forward(self, x):
            return x.numpy()  # leaves torch: neither exporter can follow it

    with pytest.raises(SurgeryError, match="torch.export failed"):
        export_program(Untraceable(), torch.zeros(2, 3), tmp_path / "m.pt2")


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "pruned"
    assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torch-export", ".pt2")])
def test_cli_export_round_trip(tmp_path, capsys, cli_folder, fmt, suffix):
    out = tmp_path / f"exported{suffix}"
    assert main(["export", str(cli_folder), "--base", "lenet", "--format", fmt,
                 "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "bytes" in printed
    if fmt == "onnx":
        err = float(printed.split("max relative error ")[1].split()[0])
        assert err <= 1e-4


def test_cli_export_uses_the_recorded_base_and_shape(cli_folder, capsys):
    assert main(["export", str(cli_folder), "--format", "onnx"]) == 0
    assert (cli_folder / "model.onnx").is_file()
    assert "onnx, dynamic batch" in capsys.readouterr().out


def _cli_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_cli_export_bad_folder_exits_2(tmp_path, capsys):
    err = _cli_error(["export", str(tmp_path / "missing"), "--format", "onnx"], capsys)
    assert "plan.json not found" in err
    err = _cli_error(["export", str(tmp_path / "missing"), "--base", "lenet",
                      "--format", "onnx"], capsys)
    assert "not found" in err


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.pop("base"), "records no base model: pass --base"),
    (lambda d: d.update(input_shape="big"), "input_shape must be 1 to 8 positive integers"),
    (lambda d: d.update(input_shape=[10**9, 1, 28, 28]), "elements; at most 134,217,728"),
    (lambda d: d.update(base="evil.py:build"), "not a built-in model"),
    (lambda d: d.update(input_shape=[1, 3, 28, 28]), "does not fit the base model"),
    (lambda d: d.update(base="resnet18"), "does not fit the base model"),
    (lambda d: d.update(base="resnet18", input_shape=[1, 3, 32, 32]), "not in the base model"),
])
def test_cli_export_tampered_plan_exits_2(tmp_path, capsys, cli_folder, edit, message):
    folder = tmp_path / "copy"
    folder.mkdir()
    for f in ("model.safetensors", "plan.json"):
        (folder / f).write_bytes((cli_folder / f).read_bytes())
    data = json.loads((folder / "plan.json").read_text())
    edit(data)
    (folder / "plan.json").write_text(json.dumps(data))
    assert message in _cli_error(["export", str(folder), "--format", "onnx"], capsys)


class ConvBN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(torch.relu(self.bn(self.conv(x)))).mean((2, 3))


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_exporting_a_train_mode_model_changes_nothing_of_it(tmp_path, fmt):
    torch.manual_seed(0)
    model = ConvBN().train()
    model.drop.eval()  # mixed flags: each must come back as it was
    x = torch.randn(2, 3, 8, 8)
    flags = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if fmt == "onnx":
        pytest.importorskip("onnx")
        export_onnx(model, x, tmp_path / "m.onnx")
    else:
        path = export_program(model, x, tmp_path / "m.pt2")
        exported = torch.export.load(str(path)).module()
        with torch.no_grad():  # the export is the eval-mode model (BN on running stats)
            torch.testing.assert_close(exported(x), copy.deepcopy(model).eval()(x))
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert int(model.bn.num_batches_tracked) == 0

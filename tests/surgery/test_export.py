"""Save / load round trips, corrupt folders, ONNX and torch.export, and `surgery export`."""

import json

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from surgery import SurgeryError, prune
from surgery.cli import main
from surgery.export import export_onnx, export_program, load, plan_from_json, save
from surgery.zoo import LeNet


def _lenet():
    torch.manual_seed(0)
    return LeNet().eval()


def _resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def lenet_result():
    return prune(_lenet(), torch.zeros(1, 1, 28, 28), ratio=0.5)


@pytest.fixture(scope="module")
def resnet_result():
    return prune(_resnet18(), torch.zeros(1, 3, 32, 32), ratio=0.3)


@pytest.fixture
def saved(tmp_path, lenet_result):
    save(lenet_result, tmp_path)
    return tmp_path


@pytest.mark.parametrize("name,shape", [("lenet", (4, 1, 28, 28)), ("resnet", (1, 3, 32, 32))])
def test_round_trip_gives_identical_outputs(tmp_path, request, name, shape):
    result = request.getfixturevalue(f"{name}_result")
    base = _lenet() if name == "lenet" else _resnet18()
    save(result, tmp_path)
    model = load(tmp_path, base).eval()
    assert plan_from_json(result.plan.to_json()) == result.plan
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(model(x), result.model(x))
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in result.model.state_dict().items()}
    assert base.conv1.weight.shape[0] == (6 if name == "lenet" else 64)  # base untouched


def test_truncated_safetensors(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SurgeryError, match="corrupt or truncated"):
        load(saved, _lenet())


def test_missing_files(saved, tmp_path):
    with pytest.raises(SurgeryError, match="not a folder"):
        load(tmp_path / "nope", _lenet())
    (saved / "model.safetensors").unlink()
    with pytest.raises(SurgeryError, match="model.safetensors not found"):
        load(saved, _lenet())
    (saved / "plan.json").unlink()
    with pytest.raises(SurgeryError, match="plan.json not found"):
        load(saved, _lenet())


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"format_version": 99}', "format_version 99"),
    ('{"format_version": 1, "shapes": {}, "groups": [{}]}', "not a valid pruning plan"),
])
def test_garbage_json(saved, text, message):
    (saved / "plan.json").write_text(text)
    with pytest.raises(SurgeryError, match=message):
        load(saved, _lenet())


def _edit_plan(folder, edit):
    data = json.loads((folder / "plan.json").read_text())
    edit(data)
    (folder / "plan.json").write_text(json.dumps(data))


def _first_pruned_member(data):
    return next(m for g in data["groups"] for m in g["members"] if m["removed"])


@pytest.mark.parametrize("edit,message", [
    (lambda d: _first_pruned_member(d).update(module="conv9"), "'conv9', which is not in"),
    (lambda d: _first_pruned_member(d).update(removed=[0, 500]), r"indices \[500\]"),
    (lambda d: _first_pruned_member(d).update(dim=7), "no such weight dim"),
    (lambda d: _first_pruned_member(d).update(removed="x"), "not a valid pruning plan"),
    (lambda d: d["shapes"]["conv1"].update(weight=[4, 1, 5, 5]), "records shapes that differ"),
])
def test_bad_plan(saved, edit, message):
    _edit_plan(saved, edit)
    with pytest.raises(SurgeryError, match=message):
        load(saved, _lenet())


def test_tampered_weight_shape(saved):
    path = saved / "model.safetensors"
    state = load_file(str(path))
    state["fc1.weight"] = state["fc1.weight"][:, :-1].contiguous()
    save_file(state, str(path))
    with pytest.raises(SurgeryError, match=r"wrong shape.*fc1.weight"):
        load(saved, _lenet())
    del state["fc1.weight"]
    save_file(state, str(path))
    with pytest.raises(SurgeryError, match=r"missing \['fc1.weight'\]"):
        load(saved, _lenet())


def test_wrong_base_model(saved):
    with pytest.raises(SurgeryError, match="not in the base model"):
        load(saved, _resnet18())


@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_onnx_runs_in_onnxruntime_at_any_batch(tmp_path, request, name):
    ort = pytest.importorskip("onnxruntime")
    model = request.getfixturevalue(f"{name}_result").model
    shape = (1, 28, 28) if name == "lenet" else (3, 32, 32)
    path = export_onnx(model, torch.zeros(1, *shape), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        got = session.run(None, {"input0": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1e-6)


def test_torch_export_program_round_trip(tmp_path, lenet_result):
    model = lenet_result.model
    path = export_program(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.pt2")
    reloaded = torch.export.load(str(path)).module()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torch-export", ".pt2")])
def test_cli_export_round_trip(tmp_path, capsys, fmt, suffix):
    folder = tmp_path / "pruned"
    assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(folder)]) == 0
    out = tmp_path / f"exported{suffix}"
    assert main(["export", str(folder), "--base", "lenet", "--format", fmt,
                 "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "bytes" in printed


def test_cli_export_bad_dir_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--base", "lenet",
                 "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a folder" in err and "Traceback" not in err

"""save / load: round trips, no pickle, and corrupt, truncated or tampered folders."""

import json
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from surgery import SurgeryError, prune
from surgery.io.models import LeNet
from surgery.io.saving import load, plan_from_json, read_plan, save


def _lenet(num_classes=10):
    torch.manual_seed(0)
    return LeNet(num_classes).eval()


def _torchvision(name):
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def lenet_result():
    return prune(_lenet(), torch.zeros(1, 1, 28, 28), ratio=0.5)


@pytest.fixture
def saved(tmp_path, lenet_result):
    save(lenet_result, tmp_path, base="lenet", input_shape=(1, 1, 28, 28))
    return tmp_path


@pytest.mark.parametrize("name", ["lenet", "resnet18", "mobilenet_v2", "densenet121"])
def test_round_trip_gives_identical_outputs(tmp_path, name):
    base = _lenet() if name == "lenet" else _torchvision(name)
    shape = (1, 1, 28, 28) if name == "lenet" else (1, 3, 32, 32)
    result = prune(base, torch.zeros(shape), ratio=0.3)
    save(result, tmp_path)
    model = load(tmp_path, base, example_inputs=torch.zeros(shape)).eval()
    assert plan_from_json(result.plan.to_json()) == result.plan
    x = torch.randn(3, *shape[1:])
    with torch.no_grad():
        assert torch.equal(model(x), result.model(x))
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in result.model.state_dict().items()}
    first_conv = next(m for m in base.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.shape[0] in (6, 32, 64)  # the base model is untouched


def test_save_records_base_and_input_shape(saved):
    _, data = read_plan(saved)
    assert data["base"] == "lenet" and data["input_shape"] == [1, 1, 28, 28]
    assert data["format_version"] == 1 and data["shapes"]["conv1"]["weight"] == [3, 1, 5, 5]


def test_load_never_unpickles(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load() must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = load(saved, _lenet())
    assert model.conv1.out_channels == 3


class _Payload:
    def __reduce__(self):  # unpickling this would create a file
        return (open, (str(_Payload.marker), "w"))


def test_pickle_file_in_place_of_weights_runs_no_code(saved, tmp_path_factory):
    _Payload.marker = tmp_path_factory.mktemp("m") / "pwned"
    (saved / "model.safetensors").write_bytes(pickle.dumps({"conv1.weight": _Payload()}))
    with pytest.raises(SurgeryError, match="corrupt or truncated"):
        load(saved, _lenet())
    assert not _Payload.marker.exists()


@pytest.mark.parametrize("corrupt", [
    lambda b: b[:-100], lambda b: b[:7], lambda b: b"", lambda b: b"\xff" * 64,
    lambda b: b[:8] + b"{garbage" + b[16:],
], ids=["truncated", "header-only", "empty", "garbage", "bad-header"])
def test_corrupt_safetensors(saved, corrupt):
    path = saved / "model.safetensors"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(SurgeryError, match=r"model.safetensors is corrupt or truncated"):
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
    ('{"format_version": 1}', "no 'shapes' table"),
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


def _member(data, module="conv1", role=None):
    return next(m for g in data["groups"] for m in g["members"] if m["module"] == module)


def _remove_one_more(d):
    m = _member(d, "conv1")
    moved = m["kept"].pop()
    m["removed"] = sorted(m["removed"] + [moved])


@pytest.mark.parametrize("edit,message", [
    (lambda d: _member(d).update(module="conv9"), "'conv9', which is not in the base model"),
    (lambda d: _member(d).update(removed=[0, 500]), r"removes indices \[500\] of dim 0"),
    (lambda d: _member(d).update(removed=[-1]), r"removes indices \[-1\]"),
    (lambda d: _member(d).update(kept=[0, 0, 1]), "keeps an index of dim 0 of 'conv1' twice"),
    (lambda d: _member(d).update(kept=[0, 1, 2, 3]), r"both keeps and removes indices"),
    (lambda d: _member(d).update(dim=7), "no such weight dim"),
    (lambda d: _member(d).update(removed="x"), "not a valid pruning plan"),
    (lambda d: _member(d).update(removed=[0, 1, 2, 3, 4, 5], kept=[]), "removes all 6"),
    (lambda d: d["shapes"]["conv1"].update(weight=[4, 1, 5, 5]), "records shapes that differ"),
    (lambda d: d["shapes"].pop("conv1"), "records shapes that differ"),
    (_remove_one_more, "records shapes that differ"),
])
def test_tampered_plan(saved, edit, message):
    _edit_plan(saved, edit)
    with pytest.raises(SurgeryError, match=message):
        load(saved, _lenet())


def test_in_range_index_edit_keeps_the_saved_weights(saved, lenet_result):
    """Which indices go only shapes the architecture; the weights always come from the file."""
    def swap(d):
        m = _member(d, "conv1")
        m["kept"], m["removed"] = m["removed"], m["kept"]
    _edit_plan(saved, swap)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(load(saved, _lenet())(x), lenet_result.model(x))


def _edit_weights(folder, edit):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.update({"fc1.weight": s["fc1.weight"][:, :-1].contiguous()}),
     r"wrong shape or dtype \(tampered file\?\): fc1.weight: file"),
    (lambda s: s.update({"fc1.bias": s["fc1.bias"].double()}), r"fc1.bias.*torch.float64"),
    (lambda s: s.pop("fc1.weight"), r"missing \['fc1.weight'\]"),
    (lambda s: s.update(extra=torch.zeros(1)), r"unexpected \['extra'\]"),
])
def test_tampered_weights(saved, edit, message):
    _edit_weights(saved, edit)
    with pytest.raises(SurgeryError, match=message):
        load(saved, _lenet())


def test_wrong_base_model(saved):
    with pytest.raises(SurgeryError, match="not in the base model: is the base model the one"):
        load(saved, _torchvision("resnet18"))
    with pytest.raises(SurgeryError, match="records shapes that differ"):
        load(saved, _lenet(num_classes=5))  # same layer names, other shapes


def test_load_lints_with_example_inputs(saved):
    with pytest.raises(SurgeryError, match="rebuilds into inconsistent layers"):
        load(saved, _lenet(), example_inputs=torch.zeros(1, 3, 28, 28))


def test_inputs_that_do_not_fit_are_named_as_inputs_not_layers(saved):
    with pytest.raises(SurgeryError, match="does not run on the example inputs: example input "
                                           "does not fit the model LeNet"):
        load(saved, _lenet(), example_inputs=torch.zeros(1, 1, 5, 5))  # too small to convolve


def test_load_builds_the_recorded_base_or_a_named_one(saved, lenet_result):
    x = torch.randn(2, 1, 28, 28)
    for base in (None, "lenet"):
        model = load(saved, base)
        assert torch.equal(model(x), lenet_result.model(x))


def test_load_never_builds_a_recorded_file_base(tmp_path, lenet_result):
    (tmp_path / "evil.py").write_text("raise SystemExit('ran')\n")
    save(lenet_result, tmp_path / "f", base=f"{tmp_path / 'evil.py'}:build")
    with pytest.raises(SurgeryError, match="not a built-in model .a file: it would run."):
        load(tmp_path / "f")
    save(lenet_result, tmp_path / "none")
    with pytest.raises(SurgeryError, match="records no base model: pass the unpruned model"):
        load(tmp_path / "none")

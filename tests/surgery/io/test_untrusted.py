"""Folders from someone else: bounded plan.json, tampered but self-consistent folders, and
hypothesis fuzzing of plan.json (members with ``attr`` included) and safetensors headers.

Every malformed folder must raise SurgeryError (never another exception, never run code); a
folder that loads must give a model that runs."""

import json
import os
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

import surgery.io.bases
import surgery.io.safety
from surgery import SurgeryError, prune
from surgery.io.bases import resolve_builtin
from surgery.io.models import LeNet
from surgery.io.safety import read_bounded
from surgery.io.saving import load, read_plan, save

X = torch.zeros(1, 1, 12, 12)


class Scaled(nn.Module):
    """A bare parameter (``scale``) in a group: plan members with ``attr``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.conv2 = nn.Conv2d(8, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(self.conv1(x) * self.scale))
        return self.fc(x.mean((2, 3)))


def _scaled():
    torch.manual_seed(0)
    return Scaled().eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaled")
    save(prune(_scaled(), X, ratio=0.5), out, base="lenet", input_shape=list(X.shape))
    return out


def _copy(folder, tmp, plan=None, weights=None):
    tmp.mkdir(exist_ok=True)
    (tmp / "plan.json").write_text(plan if plan is not None else
                                   (folder / "plan.json").read_text())
    (tmp / "model.safetensors").write_bytes(weights if weights is not None else
                                            (folder / "model.safetensors").read_bytes())
    return tmp


def test_plan_members_with_attr_round_trip(folder):
    model = load(folder, _scaled())
    assert model.scale.shape == (4, 1, 1) and model(X).shape == (1, 10)
    _, data = read_plan(folder)
    assert {m["attr"] for g in data["groups"] for m in g["members"]} == {"", "scale"}


@pytest.mark.parametrize("text,message", [
    ("[" * 1000 + "]" * 1000, "nests deeper than 8 levels"),
    ("[" * 20 + "]" * 20, "nests deeper than 8 levels"),
    ('{"format_version": 1' + "0" * 5000 + "}", "digits"),
    ('{"format_version": NaN}', "not a JSON number"),
    ("\xff\xfe", "not valid JSON"),
])
def test_plan_json_bounds(tmp_path, folder, text, message):
    _copy(folder, tmp_path, plan=text)
    with pytest.raises(SurgeryError, match=message):
        read_plan(tmp_path)


def test_plan_json_size_bound(tmp_path, folder, monkeypatch):
    monkeypatch.setattr(surgery.io.safety, "MAX_JSON_BYTES", 1000)
    _copy(folder, tmp_path)
    with pytest.raises(SurgeryError, match="at most 1,000 are read"):
        read_plan(tmp_path)


def test_recorded_input_shape_is_bounded_before_allocating(tmp_path, folder):
    data = json.loads((folder / "plan.json").read_text())
    data["input_shape"] = [10**9, 1, 28, 28]
    _copy(folder, tmp_path, plan=json.dumps(data))
    with pytest.raises(SurgeryError, match="elements; at most 134,217,728"):
        load(tmp_path, _scaled())


def test_self_consistent_tampered_folder_fails_at_load_not_at_forward(tmp_path):
    """A plan that prunes conv2's outputs but not fc1's inputs, with matching shapes and
    weights: every index and shape agrees, the channel counts do not."""
    torch.manual_seed(0)
    base = LeNet().eval()
    x = torch.zeros(1, 1, 28, 28)
    save(prune(base, x, ratio={"conv2": 0.5}), tmp_path, input_shape=list(x.shape))
    data = json.loads((tmp_path / "plan.json").read_text())
    for g in data["groups"]:
        g["members"] = [m for m in g["members"] if m["module"] != "fc1"]
    del data["shapes"]["fc1"]
    (tmp_path / "plan.json").write_text(json.dumps(data))
    state = load_file(str(tmp_path / "model.safetensors"))
    state["fc1.weight"] = base.fc1.weight.detach().clone()
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(SurgeryError, match="inconsistent layers: fc1 .* expects 256"):
        load(tmp_path, LeNet())  # no example inputs: the recorded input shape is used


def test_old_style_weight_norm_base_is_one_error(tmp_path, folder):
    def base():
        model = _scaled()
        torch.nn.utils.weight_norm(model.conv2)
        return model
    with pytest.warns(FutureWarning):
        model = base()
    with pytest.raises(SurgeryError, match="cannot copy the base model"):
        load(folder, model)


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux /proc")
def test_plan_json_is_read_from_the_open_file_not_by_its_stat_size(tmp_path, folder):
    _copy(folder, tmp_path)
    (tmp_path / "plan.json").unlink()
    (tmp_path / "plan.json").symlink_to("/proc/self/mem")  # stat size 0, reading fails
    with pytest.raises(SurgeryError, match="cannot read .*plan.json"):
        read_plan(tmp_path)


def test_plan_json_fifo_is_refused_without_blocking(tmp_path, folder):
    _copy(folder, tmp_path)
    (tmp_path / "plan.json").unlink()
    os.mkfifo(tmp_path / "plan.json")  # reading it would wait for a writer forever
    with pytest.raises(SurgeryError, match="plan.json not found|not a plain file"):
        read_plan(tmp_path)


def test_read_bounded_reads_at_most_one_byte_past_the_limit(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"[" + b"1," * 500 + b"1]")
    with pytest.raises(SurgeryError, match="over 1,000 bytes"):
        read_bounded(path, 1000)
    assert read_bounded(path, 1003) == path.read_bytes()


@pytest.mark.parametrize("base", ["timm:no_such_net", "yolo:best.pt", "evil.py:build"])
def test_a_folder_names_only_built_in_bases(base, monkeypatch):
    monkeypatch.setattr(surgery.io.bases, "resolve_model", _never_built)
    with pytest.raises(SurgeryError, match="not a built-in model"):
        resolve_builtin(base, "plan.json")


def _never_built(*args, **kwargs):
    raise AssertionError("a refused base must not be built")


# --- hypothesis: plan.json -------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["size", "out", "in", "scale", "weight", "conv1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=8)


def _paths(value, prefix=()):
    """Every path (keys and indices) into a JSON value."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, prefix + (key,))


def _replace(value, path, new):
    if not path:
        return new
    value[path[0]] = _replace(value[path[0]], path[1:], new)
    return value


def _run_load(tmp, folder, plan=None, weights=None):
    _copy(folder, tmp, plan=plan, weights=weights)
    try:
        model = load(tmp, _scaled())
    except SurgeryError as exc:
        assert str(exc)
        return
    assert model(X).shape == (1, 10)  # a folder that loads gives a model that runs


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_fuzzed_plan_json_loads_or_raises_surgery_error(tmp_path, folder, data):
    plan = json.loads((folder / "plan.json").read_text())
    paths = sorted(_paths(plan), key=repr)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = sorted(_paths(plan), key=repr)
        path = data.draw(st.sampled_from(paths))
        plan = _replace(plan, path, data.draw(JSON))
    _run_load(tmp_path / "f", folder, plan=json.dumps(plan))


@FUZZ
@given(member=st.fixed_dictionaries({
    "module": st.sampled_from(["", "conv1", "conv2", "fc", "scale", "conv1.weight", "x" * 300]),
    "role": st.sampled_from(["out", "in", "size", ""]),
    "dim": st.integers(-3, 5),
    "attr": st.sampled_from(["", "scale", "weight", "bias", "in_channels", "training",
                             "__class__", "a.b", "T_destination", "_parameters"]),
}), kept=st.lists(st.integers(-2, 9), max_size=9))
def test_fuzzed_attr_members_load_or_raise_surgery_error(tmp_path, folder, member, kept):
    plan = json.loads((folder / "plan.json").read_text())
    plan["groups"][0]["members"].append({**member, "kept": kept, "removed": []})
    _run_load(tmp_path / "a", folder, plan=json.dumps(plan))


# --- hypothesis: safetensors headers ---------------------------------------------------------

def _split(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header, body):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


@FUZZ
@given(data=st.data())
def test_fuzzed_safetensors_header_loads_or_raises_surgery_error(tmp_path, folder, data):
    header, body = _split((folder / "model.safetensors").read_bytes())
    name = data.draw(st.sampled_from(sorted(header)))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
    if field is None:
        header[name] = data.draw(JSON)
    elif isinstance(header[name], dict):
        header[name][field] = data.draw(
            st.sampled_from(["F16", "F64", "I64", "BOOL", "F32", "??"]) if field == "dtype"
            else st.lists(st.integers(-5, 2**62), max_size=5) | JSON)
    raw = _join(header, body)
    cut = data.draw(st.sampled_from([len(raw), len(raw) - 1, 7, 0, 8 + len(raw)]))
    raw = raw[:cut] if cut <= len(raw) else raw + b"\0" * 8
    if data.draw(st.booleans()):
        raw = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1))) + raw[8:]
    _run_load(tmp_path / "s", folder, weights=raw)

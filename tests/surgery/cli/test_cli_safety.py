"""The command line with untrusted folders and careless calls: no code from plan.json, no
clobbered files, one-line errors with exit 2, arguments checked before expensive work."""

import json
import os
import sys

import pytest
import torch
from safetensors.torch import save_file

import surgery.recover.data
import surgery.recover.train
from surgery.cli import main
from surgery.io.models import LeNet

PAYLOAD = ("import pathlib, torch.nn as nn\n"
           "def build():\n"
           "    pathlib.Path({marker!r}).write_text('ran')\n"
           "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))\n")


def error_of(args, capsys):
    """Run the CLI; it must exit 2 with exactly one line on stderr and no traceback."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "lenet"
    assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("command", [["export", "--format", "onnx"],
                                     ["finetune", "--epochs", "1", "--out", "@/tuned"]])
def test_a_file_base_in_plan_json_never_runs(tmp_path, folder, capsys, command):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text(PAYLOAD.format(marker=str(marker)))
    data = json.loads((folder / "plan.json").read_text())
    data["base"] = f"{evil}:build"
    (folder / "plan.json").write_text(json.dumps(data))
    args = [a.replace("@", str(tmp_path)) for a in command]
    err = error_of([args[0], str(folder)] + args[1:], capsys)
    assert "not a built-in model" in err and "never runs code" in err
    assert not marker.exists() and not (tmp_path / "tuned").exists()


def test_out_folder_refused_unless_force_which_clears_only_our_files(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "report.json").write_text("{}")  # a stale report of another model
    err = error_of(["prune", "lenet", "--ratio", "0.5", "--out", str(out)], capsys)
    assert "is not empty: pass --force" in err and "report.json" in err
    assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "notes.txt",
                                                     "plan.json"]
    assert (out / "notes.txt").read_text() == "mine"


def test_out_never_written_through_a_symlink(tmp_path, capsys):
    out, victim = tmp_path / "out", tmp_path / "victim.json"
    out.mkdir()
    victim.write_text("precious")
    (out / "plan.json").symlink_to(victim)
    assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(out), "--force"]) == 0
    assert victim.read_text() == "precious" and not (out / "plan.json").is_symlink()


@pytest.mark.parametrize("out,message", [
    ("notes.txt", "exists: pass --force"),
    ("sub", "is a folder: pass a file name"),
    ("notes.txt/m.onnx", "is not a folder"),  # missing folders are made; a file is not
])
def test_export_out_checks(tmp_path, folder, capsys, out, message):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    for fmt in ("onnx", "torch-export"):
        err = error_of(["export", str(folder), "--format", fmt, "--out", str(tmp_path / out)],
                       capsys)
        assert message in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args,message", [
    (["--out", "@file"], "exists and it is a file"),
    (["--out", "@file/deeper"], "is not a folder"),
    (["--input-shape", "1," * 9 + "1"], "at most 8 integers"),
    (["--input-shape", "99999999999999999999,1"], "at most 9 digits"),
    (["--input-shape", "100000,100000,1,28"], "elements; at most"),
    (["--ratio", "conv2=0.5,conv2=0.2"], "names 'conv2' twice"),
])
def test_prune_arguments_one_line_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "file").write_text("x")
    args = [a.replace("@", str(tmp_path) + "/") for a in args]
    base = ["prune", "lenet", "--out", str(tmp_path / "o")]
    if "--ratio" not in args:
        base += ["--ratio", "0.5"]
    assert message in error_of(base + args, capsys)


def _weights(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda t: _weights(t, "r.pt", {"w": torch.zeros(1)} | {f"x{i}": torch.zeros(1)
                                                          for i in range(101)}),
     "0 of 10 keys match; first missing: conv1.weight"),
    (lambda t: _weights(t, "whole.pt", LeNet()), "holds pickled Python objects"),
    (lambda t: (t / "t.txt").write_text("hello\n" * 20) and t / "t.txt",
     "not a safetensors or torch.save state dict"),
])
def test_weights_that_do_not_fit_say_so_in_one_line(tmp_path, capsys, make, message):
    err = error_of(["prune", "lenet", "--ratio", "0.5", "--weights", str(make(tmp_path)),
                    "--out", str(tmp_path / "o")], capsys)
    assert message in err and "weights_only" not in err and len(err) < 400


def test_checkpoint_dicts_and_module_prefixes_are_unwrapped(tmp_path):
    torch.manual_seed(0)
    state = LeNet().state_dict()
    ckpt = _weights(tmp_path, "ckpt.pt", {"epoch": 3, "optimizer": {},
                                          "state_dict": {f"module.{k}": v for k, v in
                                                         state.items()}})
    save_file(state, str(tmp_path / "w.safetensors"))
    for path in (ckpt, tmp_path / "w.safetensors"):
        out = tmp_path / path.stem
        assert main(["prune", "lenet", "--ratio", "0", "--weights", str(path), "--out",
                     str(out)]) == 0


def test_factory_that_raises_or_needs_arguments(tmp_path, capsys):
    src = tmp_path / "net.py"
    src.write_text("def needs(n):\n    return n\ndef boom():\n    raise ValueError('nope')\n")
    err = error_of(["prune", f"{src}:needs", "--ratio", "0.5", "--out", str(tmp_path / "o")],
                   capsys)
    assert "missing 1 required positional argument" in err
    assert "ValueError: nope" in error_of(["prune", f"{src}:boom", "--ratio", "0.5", "--out",
                                           str(tmp_path / "o")], capsys)


def _must_not_train(*args, **kwargs):
    raise AssertionError("training started before the arguments were checked")


def test_sparsify_checks_recipe_model_and_out_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(surgery.recover.train, "train", _must_not_train)
    monkeypatch.setattr(surgery.recover.data, "load_mnist", _must_not_train)
    out = str(tmp_path / "s.safetensors")
    assert "'conv9'" in error_of(["sparsify", "lenet", "--sparsity", "conv9=0.5", "--out", out],
                                 capsys)
    assert "sparsify trains on MNIST" in error_of(["sparsify", "resnet18", "--out", out], capsys)
    (tmp_path / "s.safetensors").write_text("mine")
    assert "exists: pass --force" in error_of(["sparsify", "lenet", "--out", out], capsys)


def test_finetune_checks_out_and_numbers_before_training(tmp_path, folder, capsys, monkeypatch):
    monkeypatch.setattr(surgery.recover.data, "load_mnist", _must_not_train)
    assert "is not empty" in error_of(["finetune", str(folder), "--out", str(folder)], capsys)
    assert "--epochs: must be an integer from 1 to 10,000, got '0'" in error_of(
        ["finetune", str(folder), "--out", str(tmp_path / "t"), "--epochs", "0"], capsys)


def test_broken_pipe_into_head_is_quiet(monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head -1`) has gone
    stdout = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["graph", "lenet"]) == 0
    stdout.write("x" * 100_000)
    stdout.flush()  # the interpreter's last flush at exit: must not raise either
    stdout.close()

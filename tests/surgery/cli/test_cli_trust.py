"""Issue 25's inputs, one by one: each ends in one printable line ``error: ...`` and exit 2,
checked before the work it would spoil (pruning, training, exporting)."""

from __future__ import annotations

import importlib

import pytest
import torch

import graphs
import surgery.io.models
import surgery.io.saving
import surgery.recover.train
from surgery.cli import main
from tests.surgery.cli.hostile import Hostile

# The commands import their work when they run (``--help`` stays fast): patched at the source.
PRUNE = importlib.import_module("surgery.prune")  # ``surgery.prune`` is the function
TRAIN = surgery.recover.train


def error_of(args, capsys):
    """Run the CLI; it must exit 2 with one printable line on stderr and no traceback."""
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert err.rstrip("\n").isprintable() and "Traceback" not in err
    return err


def _never(*args, **kwargs):
    raise AssertionError("work started before the arguments were checked")


@pytest.mark.parametrize("args,message", [
    (["prune", "lenet", "--target-macs", "1e999", "--dry-run"], "at most 1e18), got '1e999'"),
    (["prune", "lenet", "--ratio", "0.5", "--dry-run", "--seed", str(2**64)],
     "--seed: must be an integer from 0 to 2,147,483,647"),
    (["report", "lenet", "--threads", "100000", "--no-latency", "--out", "@r"],
     "--threads: must be an integer from 0 to"),
    (["prune", "lenet", "--ratio", "0.5", "--max-ratio", "nan", "--dry-run"],
     "--max-ratio: must be a number > 0 and <= 1, got 'nan'"),
    (["prune", "lenet", "--ratio", "1e999", "--dry-run"], "ratio must be in [0, 1)"),
    (["prune", "lenet", "--ratio", "0.5", "--target-latency", "nan", "--dry-run"],
     "positive time"),
    (["sparsify", "lenet", "--lr", "inf", "--out", "@s.safetensors"],
     "--lr: must be a number > 0 and <= 100, got 'inf'"),
    (["sparsify", "lenet", "--lr", "nan", "--out", "@s.safetensors"], "got 'nan'"),
    (["sparsify", "lenet", "--finetune-epochs", "0", "--out", "@s.safetensors"],
     "--finetune-epochs: must be an integer from 1"),
    (["sparsify", "lenet", "--sparsity", "conv1=0.5,conv1=0.9", "--out", "@s.safetensors"],
     "names 'conv1' twice"),
    (["prune", "lenet", "--input-shape", "-1,1,28,28", "--dry-run"],
     "a value that starts with '-' is written --flag=VALUE"),
    (["prune", "lenet", "--ratio", "0.5", "--input-shape=-1,1,28,28", "--dry-run"],
     "1 to 8 positive integers"),
    (["nope"], "invalid choice: 'nope'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_numbers_and_usage_errors_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setattr(PRUNE, "prune", _never)
    monkeypatch.setattr(TRAIN, "train", _never)
    err = error_of([a.replace("@", f"{tmp_path}/") for a in args], capsys)
    assert message in err


def test_help_exits_0(capsys):
    assert main(["prune", "--help"]) == 0
    assert "--ratio" in capsys.readouterr().out


@pytest.mark.parametrize("factory,command", [
    ("str_out", ["prune", "--ratio", "0.5"]), ("int_out", ["prune", "--ratio", "0.5"]),
    ("none_out", ["report", "--no-latency"]), ("dict_out", ["report", "--no-latency"])])
def test_forward_returning_non_tensors_is_refused(hostile, tmp_path, capsys, monkeypatch,
                                                  factory, command):
    monkeypatch.setattr(PRUNE, "prune", _never)
    err = error_of([command[0], f"{hostile.nets}:{factory}", "--input-shape", "1,3,16,16",
                    *command[1:], "--out", tmp_path / "o"], capsys)
    assert "only models that return tensors can be measured" in err


def test_report_with_an_input_shape_the_model_does_not_take(tmp_path, capsys):
    err = error_of(["report", "lenet", "--input-shape", "1,3,32,32", "--no-latency", "--out",
                    tmp_path / "r"], capsys)
    assert "lenet fails on input shape [1, 3, 32, 32] (RuntimeError: " in err


def test_report_on_a_tampered_folder_without_input_shape(hostile, tmp_path, capsys):
    err = error_of(["report", "lenet", "--pruned", hostile.tampered["inconsistent"],
                    "--no-latency", "--out", tmp_path / "r"], capsys)
    assert "rebuilds into inconsistent layers: conv2 (Conv2d) expects 6 channels" in err


def test_a_meta_device_model_is_refused(hostile, capsys):
    for command in (["prune", "--ratio", "0.5", "--dry-run"], ["graph"]):
        err = error_of([command[0], f"{hostile.nets}:meta", "--input-shape", "1,3,16,16",
                        *command[1:]], capsys)
        assert "c1.weight is on the meta device" in err


def _unwritable(hostile):
    if hostile.readonly is None:
        pytest.skip("no folder here is read-only (root without chattr)")
    return hostile.readonly


@pytest.mark.parametrize("args", [
    ["prune", "lenet", "--ratio", "0.5", "--out", "@/out"],
    ["report", "lenet", "--no-latency", "--out", "@/out"],
    ["export", "#", "--format", "torch-export", "--out", "@/m.pt2"],
    ["export", "#", "--format", "onnx", "--out", "@/m.onnx"],
    ["finetune", "#", "--out", "@/tuned"],
    ["sparsify", "lenet", "--out", "@/s.safetensors"],
])
def test_an_unwritable_out_is_refused_before_any_work(hostile, capsys, monkeypatch, args):
    readonly = _unwritable(hostile)
    for module, name in ((PRUNE, "prune"), (surgery.io.saving, "load"),
                         (surgery.io.models, "resolve_model")):
        monkeypatch.setattr(module, name, _never)
    args = [a.replace("@", str(readonly)).replace("#", str(hostile.folder)) for a in args]
    assert f"cannot write in {readonly}" in error_of(args, capsys)


def test_report_into_an_unwritable_pruned_folder(hostile, capsys):
    readonly = _unwritable(hostile)
    err = error_of(["report", "lenet", "--pruned", readonly, "--no-latency"], capsys)
    assert f"cannot write in {readonly}" in err


@pytest.mark.parametrize("kind,message", [
    ("corrupt", "train/a/1.png cannot be decoded"),
    ("truncated", "train/b/1.png cannot be decoded"),
    ("huge", "val/b/1.png has over 67,108,864 pixels"),
])
def test_bad_images_are_refused_before_training(hostile, tmp_path, capsys, monkeypatch,
                                                kind, message):
    monkeypatch.setattr(TRAIN, "finetune", _never)
    err = error_of(["finetune", hostile.folder, "--images", hostile.images[kind], "--out",
                    tmp_path / "t"], capsys)
    assert message in err


def test_good_images_train(hostile, tmp_path, capsys):
    assert main(["finetune", str(hostile.folder), "--images", str(hostile.images["good"]),
                 "--quiet", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "model.safetensors").is_file()


def _diverge(model, *args, **kwargs):
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    return model


def test_a_diverged_training_writes_nothing(hostile, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(TRAIN, "finetune", _diverge)
    err = error_of(["finetune", hostile.folder, "--data", hostile.mnist, "--out",
                    tmp_path / "t"], capsys)
    assert "training diverged: conv1.weight holds NaN" in err
    err = error_of(["sparsify", "lenet", "--weights", hostile.weights, "--data", hostile.mnist,
                    "--out", tmp_path / "s.safetensors"], capsys)
    assert "training diverged" in err
    assert not (tmp_path / "t").exists() and not (tmp_path / "s.safetensors").exists()


@pytest.mark.parametrize("exc,message", [
    (MemoryError(), "error: out of memory (MemoryError): try a smaller input shape"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 9 bytes"), "error: out of memory ("),
    (torch.OutOfMemoryError("CUDA out of memory"), "error: out of memory (CUDA out of memory)"),
    (OSError(28, "No space left on device", "/out/x"), "error: /out/x: No space left on device"),
    (KeyError("\x1b[31m"), ("error: unexpected KeyError: '\\x1b[31m' (a bug: rerun with "
                           "--traceback")),
])
def test_any_failure_is_one_printable_line(capsys, monkeypatch, exc, message):
    def fail(*args, **kwargs):
        raise exc
    monkeypatch.setattr(graphs, "trace", fail)
    assert error_of(["graph", "lenet"], capsys).startswith(message)


def test_traceback_flag_shows_where(capsys, monkeypatch):
    monkeypatch.setattr(graphs, "trace", _never)
    assert main(["graph", "lenet", "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("error: unexpected ")


def test_ctrl_c_exits_130(capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(graphs, "trace", interrupt)
    assert main(["graph", "lenet"]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_escape_sequences_from_plan_json_never_reach_the_terminal(hostile: Hostile, capsys):
    err = error_of(["export", hostile.tampered["ansi"], "--format", "onnx"], capsys)
    assert "'\\x1b[31mconv1\\x1b[0m'" in err and "\x1b" not in err

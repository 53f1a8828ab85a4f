"""Issue 27: help without torch, every option explained, --quiet on every command hiding
progress but never results, and a line per epoch with the elapsed time off a terminal."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from surgery.cli import COMMANDS, build_parser, main

HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "timm", "transformers", "graphs")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          check=False, stdin=subprocess.DEVNULL)


def test_building_the_parser_and_every_help_imports_no_torch():
    code = ("import sys\n"
            "from surgery.cli import COMMANDS, build_parser\n"
            "parser = build_parser()\n"
            "sub = next(a for a in parser._actions if a.dest == 'command')\n"
            "texts = [parser.format_help()] + [p.format_help() for p in sub.choices.values()]\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), len(texts))\n")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", str(1 + len(COMMANDS))]


def test_help_runs_without_torch_and_exits_0():
    proc = _run("-X", "importtime", "-m", "surgery", "prune", "--help")
    assert proc.returncode == 0 and "--ratio" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if a.dest == "command").choices


def _option_help(text: str, flag: str) -> str:
    """The lines a --help text gives ``flag`` under "options:", joined."""
    options = text[text.index("\noptions:"):]
    block = options[options.index(f"\n  {flag}"):].split("\n  -")[1]
    return " ".join(block.split())


def test_every_option_has_help_and_shows_its_default():
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, [],
                                                                  argparse.SUPPRESS):
                block = _option_help(text, action.option_strings[-1])
                assert "default" in block, f"{name}: no default in {block!r}"


@pytest.mark.parametrize("command,flag", [("finetune", "--epochs"),
                                          ("sparsify", "--train-epochs"),
                                          ("sparsify", "--finetune-epochs")])
def test_epochs_options_say_what_they_do_and_their_default(command, flag):
    block = _option_help(_subparsers(build_parser())[command].format_help(), flag)
    assert re.search(r"epochs? .*\(default: \d\)", block), block


def test_top_level_help_is_written_for_users(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Make a PyTorch model smaller" in out and "a first session:" in out
    assert "dispatched" not in out and "``" not in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_quiet(command):
    sub = _subparsers(build_parser())[command]
    assert any("--quiet" in a.option_strings for a in sub._actions)


def test_lazy_package_keeps_its_exports():
    import importlib

    import surgery
    from surgery import prune, save
    importlib.import_module("surgery.prune")  # the submodule: the name stays the function
    assert surgery.prune is prune and callable(prune) and callable(save)
    assert all(callable(getattr(surgery, name)) for name in surgery.__all__)
    assert set(surgery.__all__) <= set(dir(surgery))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        surgery.nope  # noqa: B018


@pytest.fixture(scope="module")
def lenet_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("help") / "lenet"
    assert main(["prune", "lenet", "--ratio", "0.5", "--quiet", "--out", str(out)]) == 0
    return out


def test_finetune_off_a_terminal_logs_one_line_per_epoch_with_elapsed_time(lenet_folder,
                                                                            tmp_path, capsys):
    assert not sys.stderr.isatty()  # captured: as in a log or CI
    assert main(["finetune", str(lenet_folder), "--epochs", "2", "--max-images", "256",
                 "--out", str(tmp_path / "tuned")]) == 0
    out, err = capsys.readouterr()
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2, err
    for i, line in enumerate(epochs, 1):
        assert re.fullmatch(rf"epoch {i}/2: 4 batches, mean loss \d+\.\d{{4}} "
                            rf"\(elapsed \d+\.\d s\)", line), line
    assert "test accuracy" in out and "\r" not in err  # no bar


def test_quiet_hides_progress_never_results(lenet_folder, tmp_path, capsys):
    assert main(["finetune", str(lenet_folder), "--epochs", "1", "--quiet", "--max-images",
                 "128", "--out", str(tmp_path / "tuned")]) == 0
    out, err = capsys.readouterr()
    assert "epoch" not in err and "test accuracy" in out


def test_report_quiet_prints_the_table(lenet_folder, tmp_path, capsys):
    assert main(["report", "lenet", "--pruned", str(lenet_folder), "--no-latency", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "| params | 44,426 | 11,418 | 0.257 |" in out and "wrote " in out


def test_graph_and_export_take_quiet(lenet_folder, tmp_path, capsys):
    assert main(["graph", "lenet", "--quiet"]) == 0
    assert "6 groups, 4 prunable" in capsys.readouterr().out
    assert main(["export", str(lenet_folder), "--format", "torch-export", "--quiet", "--out",
                 str(tmp_path / "m.pt2")]) == 0
    assert "wrote " in capsys.readouterr().out


def test_backend_choices_agree_with_the_latency_backends():
    from surgery.cli.common import BACKENDS
    from surgery.measure.latency import BACKENDS as MEASURED

    assert BACKENDS == MEASURED

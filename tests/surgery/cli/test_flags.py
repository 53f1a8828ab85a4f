"""Command-line journeys: --dry-run, --seed, --device, --quiet, --target-macs 1G, timm:NAME,
--num-classes, and help texts with examples and defaults."""

import argparse
import json

import pytest
import torch

from surgery.cli import build_parser, main
from surgery.cli.common import model_and_input, parse_count, progress_bars


def test_dry_run_prints_groups_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["prune", "lenet", "--ratio", "0.5", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "group 1 (conv1, conv2): 6 -> 3 channels" in text
    assert "group 3 (fc1, fc2): 120 -> 60 channels" in text
    assert "params 44,426 -> 11,418 (25.7% kept)" in text
    assert "MACs   281,640 -> 92,220 (32.7% kept)" in text
    assert "dry run: nothing written" in text and not out.exists()


def test_out_required_without_dry_run(capsys):
    assert main(["prune", "lenet", "--ratio", "0.5"]) == 2
    assert "--out DIR is required (or --dry-run" in capsys.readouterr().err


@pytest.mark.parametrize("text,value", [("1.5G", 1_500_000_000), ("800M", 800_000_000),
                                        ("100k", 100_000), ("8000000000", 8_000_000_000),
                                        ("2GMACs", 2_000_000_000)])
def test_counts_with_si_prefixes(text, value):
    assert parse_count(text) == value


def test_target_macs_with_a_prefix(capsys):
    assert main(["prune", "lenet", "--target-macs", "0.1M", "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("MACs"))
    assert 98_000 <= int(line.split()[3].replace(",", "")) <= 100_000


def test_max_ratio_caps_each_group(capsys):
    assert main(["prune", "lenet", "--ratio", "0.9", "--max-ratio", "0.5", "--dry-run"]) == 0
    assert "group 3 (fc1, fc2): 120 -> 60 channels" in capsys.readouterr().out
    assert main(["prune", "lenet", "--ratio", "0.5", "--max-ratio", "0", "--dry-run"]) == 2
    assert "--max-ratio: must be a number > 0 and <= 1, got '0'" in capsys.readouterr().err


def test_bad_count_is_refused(capsys):
    assert main(["prune", "lenet", "--target-macs", "lots", "--dry-run"]) == 2
    assert "expected a positive count like 1.5G, 800M" in capsys.readouterr().err


def test_seed_draws_the_same_example_input():
    def example(seed):
        args = build_parser().parse_args(["graph", "lenet", "--seed", str(seed)])
        return model_and_input(args)[1]

    assert torch.equal(example(1), example(1)) and not torch.equal(example(1), example(2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_device_cuda_without_cuda_is_one_line(capsys):
    assert main(["prune", "lenet", "--ratio", "0.5", "--dry-run", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_progress_bars_only_on_a_terminal():
    args = argparse.Namespace(quiet=False, no_progress=False)
    assert progress_bars(args) is False  # pytest captures stderr: not a terminal
    assert progress_bars(argparse.Namespace(quiet=True)) is False


def test_torchvision_model_with_num_classes_round_trip(tmp_path, capsys):
    out = tmp_path / "r18"
    assert main(["prune", "resnet18", "--num-classes", "10", "--ratio", "0.3",
                 "--input-shape", "1,3,32,32", "--out", str(out)]) == 0
    assert json.loads((out / "plan.json").read_text())["num_classes"] == 10
    capsys.readouterr()
    assert main(["report", "resnet18", "--pruned", str(out), "--no-latency", "--no-plot"]) == 0
    assert "| fc | Linear | 10 | 10 | 1.000 |" in capsys.readouterr().out


def test_timm_model_by_name(capsys):
    assert main(["prune", "timm:convnext_atto", "--num-classes", "10", "--ratio", "0.25",
                 "--input-shape", "1,3,32,32", "--dry-run"]) == 0
    assert "dry run: nothing written" in capsys.readouterr().out
    assert main(["graph", "timm:no_such_net"]) == 2
    assert "unknown timm model 'no_such_net'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["prune", "graph", "export", "report", "finetune",
                                     "sparsify"])
def test_every_command_has_examples_and_defaults_in_help(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    text = sub.format_help()
    assert "examples" in text and f"surgery {command}" in text.split("examples")[1]
    assert "(default:" in text


def test_report_help_says_one_thread():
    sub = build_parser()._subparsers._group_actions[0].choices["report"]
    assert "--threads THREADS" in sub.format_help() and "(default: 1)" in sub.format_help()

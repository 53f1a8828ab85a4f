"""The command line: writes weights and plan; bad input exits 2 with one readable line."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from surgery.cli import main


def test_prune_lenet_writes_weights_and_plan(tmp_path, capsys):
    assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "params 44,426 -> 11,418 (25.7% kept)" in out.splitlines()
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights["conv1.weight"].shape == (3, 1, 5, 5)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["ratio"] == 0.5 and len(plan["groups"]) == 4


def test_user_file_factory(tmp_path, capsys):
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\n"
                   "def build():\n"
                   "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 3))\n")
    code = main(["prune", f"{src}:build", "--ratio", "0.5", "--input-shape", "1,3,16,16",
                 "--out", str(tmp_path / "o")])
    assert code == 0 and "params " in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["prune", "lenet", "--ratio", "1.5"], "ratio must be in [0, 1)"),
    (["prune", "lenet", "--ratio", "0.5", "--importance", "l7"], "unknown importance 'l7'"),
    (["prune", "lenet", "--ratio", "0.5", "--input-shape", "1,3,28,28"], "does not fit the model"),
    (["prune", "lenet", "--ratio", "0.5", "--input-shape", "1,x"], "comma-separated integers"),
    (["prune", "lenet", "--ratio", "0.5", "--ignore", "conv9"], "not in the model: conv9"),
    (["prune", "nosuchnet", "--ratio", "0.5"], "unknown model 'nosuchnet'"),
    (["prune", "lenet", "--ratio", "0.5", "--weights", "missing.pt"], "weights file not found"),
])
def test_bad_input_exits_2_without_traceback(tmp_path, capsys, args, message):
    assert main(args + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_corrupt_weights_and_untraceable_file(tmp_path, capsys):
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["prune", "lenet", "--ratio", "0.5", "--weights", str(bad), "--out",
                 str(tmp_path / "o")]) == 2
    src = tmp_path / "m.py"
    src.write_text("import torch.nn as nn\nclass M(nn.Module):\n"
                   "    def forward(self, x):\n        return x.view(5, 7)\n"
                   "def build():\n    return M()\n")
    assert main(["prune", f"{src}:build", "--ratio", "0.5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot read weights" in err and "m.py:4: return x.view(5, 7)" in err


def test_console_script_runs_as_a_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "surgery", "graph", "lenet"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "6 groups, 4 prunable" in proc.stdout


def test_prune_to_a_mac_target_with_global_ranking(tmp_path, capsys):
    assert main(["prune", "lenet", "--target-macs", "100000", "--global",
                 "--out", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("MACs"))
    before, after = (int(n.replace(",", "")) for n in line.split()[1:4:2])
    assert 98_000 <= after <= 100_000  # within 2% below the target
    assert before == 281_640


def test_prune_per_layer_ratios(tmp_path):
    assert main(["prune", "lenet", "--ratio", "conv2=0.5,fc1=0.25", "--out", str(tmp_path)]) == 0
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights["conv2.weight"].shape[0] == 8 and weights["fc1.weight"].shape[0] == 90
    assert weights["conv1.weight"].shape[0] == 6


@pytest.mark.parametrize("args,message", [
    (["prune", "lenet", "--out", "o"], "pass --ratio R or --target-macs N"),
    (["prune", "lenet", "--ratio", "conv2=half", "--out", "o"], "per-layer ratios"),
])
def test_prune_budget_errors(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err

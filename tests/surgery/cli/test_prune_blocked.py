"""`surgery prune` says what blocks a mostly unprunable model and where to see all; prune and
--dry-run count and list the groups they prune inexactly and the blocked fraction; params and
MACs are printed on one line each."""

import pytest

from surgery.cli import main

NET = """\
from torch import nn


class Shuffled(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        b, _, h, w = x.shape
        x = self.c1(x).view(b, 8, 8, h, w).transpose(1, 2).reshape(b, 64, h, w)
        x = self.c2(x).view(b, 8, 8, h, w).transpose(1, 2).reshape(b, 64, h, w)
        return self.fc(x.mean((2, 3)))


def mlp(num_classes=4):
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, num_classes))
"""


def run(tmp_path, capsys, factory, shape, *extra):
    src = tmp_path / "net.py"
    src.write_text(NET)
    code = main(["prune", f"{src}:{factory}", "--input-shape", shape, "--ratio", "0.5", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return src, out, err


def test_dry_run_of_a_blocked_model_lists_reasons_and_the_graph_command(tmp_path, capsys):
    src, out, err = run(tmp_path, capsys, "Shuffled", "1,3,8,8", "--dry-run")
    lines = out.splitlines()
    assert "blocked: 0.0% of the channels are prunable (0 of 128 inside the model)" in lines
    reason = next(line for line in lines if "literal channel size" in line)
    assert reason.startswith("  128 channels in 2 groups: view has a literal channel size 8 (at ")
    assert f"{src}:12: x = self.c1(x).view(b, 8, 8, h, w)" in reason
    assert f"see all: surgery graph {src}:Shuffled --input-shape 1,3,8,8" in lines
    assert "BlockedWarning" not in err  # printed once, on stdout
    assert lines[-1] == "dry run: nothing written"


def test_prune_of_a_blocked_model_lists_reasons_too(tmp_path, capsys):
    _, out, _ = run(tmp_path, capsys, "Shuffled", "1,3,8,8", "--out", str(tmp_path / "o"))
    assert "view has a literal channel size 8" in out and "see all: surgery graph" in out
    assert (tmp_path / "o" / "plan.json").exists()


@pytest.mark.parametrize("extra", [["--dry-run"], ["--out", "@o"]])
def test_prune_and_dry_run_list_inexact_groups_and_params_once(tmp_path, capsys, extra):
    _, out, _ = run(tmp_path, capsys, "mlp", "2,8",
                    *[e.replace("@", f"{tmp_path}/") for e in extra])
    lines = out.splitlines()
    at = lines.index("not exact: 1 of the 1 pruned groups (the output changes even where the "
                     "removed channels were dead):")
    assert lines[at + 1] == "  group 1 (0, 1, 2): layer_norm over the channels at node layer_norm"
    assert [line for line in lines if "params" in line] == ["params 244 -> 124 (50.8% kept)"]
    assert ("pruned 1 of 3 channel groups (2 not prunable); channels inside the model: 100.0% "
            "prunable, 0.0% blocked") in lines and "blocked:" not in out


def test_lenet_prints_no_blocked_listing(capsys):
    assert main(["prune", "lenet", "--ratio", "0.5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "blocked:" not in out and "see all" not in out and "not exact" not in out
    assert out.count("params") == 1 and out.count("44,426") == 1

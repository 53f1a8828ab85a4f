"""``surgery prune --remove-blocks K`` and ``--depth``: blocks named in plan.json, reloadable."""

import json

import torch
from torchvision.models import resnet18

from surgery import load
from surgery.cli import main


def test_remove_blocks_writes_and_reloads(tmp_path, capsys):
    out = tmp_path / "r18"
    assert main(["prune", "resnet18", "--input-shape", "1,3,32,32", "--remove-blocks", "2",
                 "--block-importance", "cosine", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    plan = json.loads((out / "plan.json").read_text())
    assert len(plan["removed_blocks"]) == 2
    assert f"removed blocks (2): {', '.join(plan['removed_blocks'])}" in printed.splitlines()
    small = load(out, resnet18())
    assert [type(small.get_submodule(n)).__name__ for n in plan["removed_blocks"]] == \
        ["Skip", "Skip"]
    assert small.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)


def test_depth_needs_a_target(capsys):
    assert main(["prune", "resnet18", "--input-shape", "1,3,32,32", "--ratio", "0.5",
                 "--depth", "--dry-run"]) == 2
    assert "depth=True" in capsys.readouterr().err

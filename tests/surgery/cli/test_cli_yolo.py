"""``surgery prune yolo:FILE`` and ``surgery export DIR --format ultralytics``: the folder
records its yaml base, so the export needs no flag; a checkpoint base (a pickle) is never read
from a folder, only from ``--base``."""

from __future__ import annotations

import json

import pytest

from surgery.cli import main

ultralytics = pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("yolo") / "pruned"
    assert main(["prune", "yolo:yolov8n.yaml", "--ratio", "0.5", "--input-shape", "1,3,64,64",
                 "--out", str(out)]) == 0
    return out


def test_prune_then_export_to_ultralytics_without_flags(folder, tmp_path, capsys):
    assert json.loads((folder / "plan.json").read_text())["base"] == "yolo:yolov8n.yaml"
    out = tmp_path / "small.pt"
    capsys.readouterr()
    assert main(["export", str(folder), "--format", "ultralytics", "--out", str(out)]) == 0
    assert "YOLO(path) loads it" in capsys.readouterr().out
    model = ultralytics.YOLO(str(out)).model
    assert 0 < sum(p.numel() for p in model.parameters()) < 3_157_200 // 3


def test_a_checkpoint_base_is_read_only_from_the_command_line(folder, tmp_path, capsys):
    checkpoint = tmp_path / "base.pt"
    checkpoint.write_bytes(b"never read")  # refused by its name before it is opened
    plan = json.loads((folder / "plan.json").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (moved / "plan.json").write_text(json.dumps({**plan, "base": f"yolo:{checkpoint}"}))
    capsys.readouterr()
    assert main(["export", str(moved), "--format", "ultralytics", "--out",
                 str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "not a built-in model" in err and "pickle" in err and "--base" in err
    assert not (tmp_path / "x.pt").exists()


def test_a_missing_yolo_file_exits_2(tmp_path, capsys):
    assert main(["prune", f"yolo:{tmp_path}/none.pt", "--ratio", "0.5", "--dry-run"]) == 2
    assert "file not found (nothing is downloaded)" in capsys.readouterr().err

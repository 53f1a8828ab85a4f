"""examples/demo.py (`make demo`): checked ONNX files and the size table; the whole demo (zoo)."""

import runpy
from pathlib import Path

import pytest
import torch

from surgery import load, prune
from surgery.io.models import LeNet

DEMO_FILE = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


demo = runpy.run_path(str(DEMO_FILE), run_name="demo")  # a script, not part of the package
SizeRow, export_pair, human, size_table = (demo[n] for n in ("SizeRow", "export_pair", "human",
                                                             "size_table"))


def test_export_pair_writes_smaller_checked_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    dense, x = LeNet().eval(), torch.zeros(1, 1, 28, 28)
    row = export_pair("lenet", dense, prune(dense, x, ratio=0.5).model, x, tmp_path)
    assert row.dense_bytes == (tmp_path / "lenet-dense.onnx").stat().st_size
    assert row.pruned_bytes == (tmp_path / "lenet-pruned.onnx").stat().st_size
    assert row.pruned_bytes < row.dense_bytes and row.max_rel_err <= 1e-4


def test_size_table():
    assert [human(n) for n in (999, 1000, 46_733_677)] == ["999 B", "1.0 KB", "46.7 MB"]
    table = size_table([SizeRow("resnet18", 4_000_000, 1_000_000, 1.5e-6)]).splitlines()
    assert table[1].split() == ["resnet18", "4,000,000", "B", "(4.0", "MB)", "1,000,000", "B",
                                "(1.0", "MB)", "25.0%", "1.5e-06"]


@pytest.mark.zoo
def test_demo_end_to_end(tmp_path, capsys):
    assert demo["main"](["--epochs", "1", "--finetune-epochs", "1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("demo: train LeNet") and "ratio 0.5" in printed.splitlines()[0]
    assert "lenet      ratio 0.5: pruned 4 of 6 channel groups" in printed  # no graph dump
    for name in ("lenet", "resnet18"):
        assert (tmp_path / f"{name}-dense.onnx").is_file()
        assert (tmp_path / f"{name}-pruned.onnx").is_file()
        assert (tmp_path / name / "model.safetensors").is_file()
        assert any(line.startswith(name) and "%" in line for line in printed.splitlines())
    model = load(tmp_path / "lenet", LeNet(), example_inputs=torch.zeros(1, 1, 28, 28))
    assert model.conv1.out_channels == 3

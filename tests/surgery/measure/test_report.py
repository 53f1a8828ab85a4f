"""report: exact params/MACs and widths before/after, files written, CLI. No timed assertions."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from surgery import Budget, prune
from surgery.cli import main
from surgery.io.models import LeNet
from surgery.measure.latency import Latency
from surgery.measure.report import Report, Stats, Timing, build_report
from surgery.measure.widths import LayerWidth, layer_widths

X = torch.zeros(1, 1, 28, 28)
FEW_RUNS = Timing(runs=3, warmup=1, threads=1)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Hand-computed (see tests/surgery/test_flops.py for the formulas). LeNet at ratio 0.5 keeps
# conv1 3, conv2 8, fc1 60, fc2 42 channels/features (fc3 keeps its 10 outputs).
# params: conv1 3*25+3, conv2 8*3*25+8, fc1 8*16*60+60, fc2 60*42+42, fc3 42*10+10.
PARAMS_AFTER = (75 + 3) + (600 + 8) + (7680 + 60) + (2520 + 42) + (420 + 10)
# MACs: conv1 3*24*24*25, conv2 8*8*8*(3*25), fc1 128*60, fc2 60*42, fc3 42*10.
MACS_AFTER = 43_200 + 38_400 + 7_680 + 2_520 + 420
LENET_WIDTHS = [("conv1", "Conv2d", 6, 3), ("conv2", "Conv2d", 16, 8), ("fc1", "Linear", 120, 60),
                ("fc2", "Linear", 84, 42), ("fc3", "Linear", 10, 10)]


@pytest.fixture(scope="module")
def lenet_pair() -> tuple[nn.Module, nn.Module]:
    model = LeNet().eval()
    return model, prune(model, X, ratio=0.5).model


def test_lenet_before_after_exact(lenet_pair: tuple[nn.Module, nn.Module]) -> None:
    model, pruned = lenet_pair
    report = build_report(model, X, pruned, name="lenet", timing=FEW_RUNS)
    assert (report.before.params, report.after.params) == (44_426, PARAMS_AFTER) == (44_426,
                                                                                       11_418)
    assert (report.before.macs, report.after.macs) == (281_640, MACS_AFTER) == (281_640, 92_220)
    ratios = report.ratios()
    assert ratios["params"] == 11_418 / 44_426 and ratios["macs"] == 92_220 / 281_640
    assert ratios["latency"] == report.after.latency.median_ms / report.before.latency.median_ms
    assert report.before.latency.runs == report.after.latency.runs == 3
    assert report.before.latency.threads == 1
    assert report.before.uncounted == {"aten::max_pool2d": 2}
    assert [(x.name, x.kind, x.before, x.after) for x in report.layers] == LENET_WIDTHS
    assert report.input_shapes == ((1, 1, 28, 28),)


def test_write_json_markdown_png(lenet_pair: tuple[nn.Module, nn.Module], tmp_path) -> None:
    model, pruned = lenet_pair
    paths = build_report(model, X, pruned, name="lenet", timing=FEW_RUNS).write(tmp_path / "r")
    assert {p.name for p in paths.values()} == {"report.json", "report.md", "report.png"}
    data = json.loads(paths["json"].read_text())
    assert set(data) == {"model", "input_shapes", "timing", "before", "after", "ratios", "layers"}
    assert set(data["before"]) == {"params", "macs", "flops", "uncounted_ops", "latency"}
    assert data["before"]["macs"] == 281_640 and data["after"]["flops"] == 2 * 92_220
    assert data["after"]["params"] == 11_418 and data["input_shapes"] == [[1, 1, 28, 28]]
    assert data["after"]["latency"]["runs"] == 3 and data["timing"]["warmup"] == 1
    assert data["layers"][0] == {"name": "conv1", "kind": "Conv2d", "before": 6, "after": 3}
    assert data["ratios"]["macs"] == 92_220 / 281_640
    text = paths["md"].read_text()
    assert "| params | 44,426 | 11,418 | 0.257 |" in text
    assert "| MACs | 281,640 | 92,220 | 0.327 |" in text
    assert "| FLOPs (2 x MACs) | 563,280 | 184,440 | 0.327 |" in text
    assert "| conv2 | Conv2d | 16 | 8 | 0.500 |" in text
    assert "aten::max_pool2d (2)" in text  # uncounted ops are listed, not hidden
    assert paths["png"].read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(paths["png"]) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


def test_single_model_has_no_after_column(tmp_path) -> None:
    report = build_report(LeNet(), X, name="lenet", timing=None)
    assert report.after is None and report.ratios() == {}
    assert report.before.latency is None
    assert report.layers[0] == LayerWidth("conv1", "Conv2d", 6, None)
    text = report.to_markdown()
    assert "| params | 44,426 |" in text and "after" not in text
    assert "| latency ms, median (p10-p90) | - |" in text
    data = json.loads(report.write(tmp_path, plot=False)["json"].read_text())
    assert data["after"] is None and data["ratios"] is None and data["timing"] is None
    assert not (tmp_path / "report.png").exists()


def test_prune_result_report_with_and_without_original(tmp_path) -> None:
    model = LeNet()
    result = prune(model, X, ratio=0.5)
    full = result.report(X, tmp_path, original=model, name="lenet", timing=None)
    assert (full.before.macs, full.after.macs) == (281_640, 92_220)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.png").is_file()
    from_plan = result.report(X, timing=None)
    assert from_plan.layers == full.layers  # widths before, rebuilt from the plan, agree
    assert from_plan.before.params == 44_426 and from_plan.before.macs is None
    assert from_plan.ratios() == {"params": 11_418 / 44_426, "macs": None, "latency": None}
    assert "| MACs | - | 92,220 | - |" in from_plan.to_markdown()


def test_plan_widths_match_models_with_norms_and_round_to() -> None:
    model = nn.Sequential(nn.Conv2d(3, 20, 3), nn.BatchNorm2d(20), nn.ReLU(),
                          nn.Conv2d(20, 12, 3), nn.GroupNorm(1, 12), nn.Flatten(),
                          nn.Linear(12 * 4 * 4, 5))
    x = torch.randn(1, 3, 8, 8)
    result = prune(model, x, budget=Budget(ratio=0.5, round_to=8))
    compared = build_report(model, x, result.model, timing=None).layers
    assert result.report(x, timing=None).layers == compared
    # 20 channels at ratio 0.5 keep 10, rounded up to 16; 12 keep 6, rounded up to 8.
    assert [(w.name, w.before, w.after) for w in compared][:4] == [
        ("0", 20, 16), ("1", 20, 16), ("3", 12, 8), ("4", 12, 8)]


def test_layer_widths_table() -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 1), nn.ConvTranspose2d(4, 7, 2), nn.BatchNorm1d(9),
                          nn.LayerNorm(11), nn.GroupNorm(2, 6), nn.Linear(3, 5), nn.ReLU())
    assert layer_widths(model) == {"0": ("Conv1d", 4, 0), "1": ("ConvTranspose2d", 7, 1),
                                   "2": ("BatchNorm1d", 9, 0), "3": ("LayerNorm", 11, 0),
                                   "4": ("GroupNorm", 6, 0), "5": ("Linear", 5, 0)}


def test_plot_single_model_and_norm_only(tmp_path) -> None:
    from surgery.measure.plot import plot_layer_widths

    only_norms = [LayerWidth("bn", "BatchNorm2d", 8, None)]
    path = plot_layer_widths(only_norms, tmp_path / "a.png", "norms")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_cli_report_pruned_folder(tmp_path, capsys) -> None:
    folder = tmp_path / "lenet"
    assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(folder)]) == 0
    capsys.readouterr()
    assert main(["report", "lenet", "--pruned", str(folder), "--runs", "2", "--warmup", "0",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| params | 44,426 | 11,418 | 0.257 |" in out and "| MACs | 281,640 | 92,220" in out
    data = json.loads((folder / "report.json").read_text())
    assert data["after"]["macs"] == 92_220 and data["after"]["latency"]["runs"] == 2
    assert (folder / "report.png").read_bytes()[:8] == PNG_SIGNATURE


def test_cli_report_single_model(tmp_path, capsys) -> None:
    out = tmp_path / "single"
    assert main(["report", "lenet", "--out", str(out), "--no-latency", "--no-plot"]) == 0
    assert "| MACs | 281,640 |" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["after"] is None


@pytest.mark.parametrize("setup,extra,message", [
    ("missing", [], "is not a folder"),
    ("empty", [], "plan.json not found"),
    ("bad_json", [], "not valid JSON"),
    ("ok", ["--runs", "0"], "--runs: must be an integer"),
    ("ok", ["--device", "tpu"], "device"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, setup, extra, message) -> None:
    folder = tmp_path / "p"
    if setup == "ok":
        assert main(["prune", "lenet", "--ratio", "0.5", "--out", str(folder)]) == 0
    elif setup != "missing":
        folder.mkdir()
    if setup == "bad_json":
        (folder / "plan.json").write_text("{not json")
    capsys.readouterr()
    assert main(["report", "lenet", "--pruned", str(folder), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cli_out_is_a_file_exits_2(tmp_path, capsys) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["report", "lenet", "--out", str(target), "--no-latency"]) == 2
    assert "it is a file" in capsys.readouterr().err


def test_cli_report_uses_the_input_shape_recorded_by_prune(tmp_path, capsys):
    folder = tmp_path / "r18"
    assert main(["prune", "resnet18", "--ratio", "0.5", "--input-shape", "1,3,32,32",
                 "--out", str(folder)]) == 0
    assert main(["report", "resnet18", "--pruned", str(folder), "--no-latency",
                 "--no-plot"]) == 0
    assert "Input 1x3x32x32." in capsys.readouterr().out


def test_report_names_the_model_and_formats_widths_alike() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 1000))
    x = torch.randn(1, 3, 8, 8)
    text = build_report(model, x, timing=None).to_markdown()
    assert text.startswith("# Report: Sequential")  # not "Report: model"
    assert "| 2 | Linear | 1,000 |" in text
    pruned = prune(model, x, ratio=0.5).model
    assert "| 2 | Linear | 1,000 | 1,000 | 1.000 |" in build_report(
        model, x, pruned, timing=None).to_markdown()


def test_report_times_with_one_thread_by_default() -> None:
    assert Timing().threads == 1


def test_unsteady_latency_is_flagged_in_the_report() -> None:
    steady = Latency(1.0, 0.9, 1.2, runs=5, threads=1, device="cpu", backend="eager")
    busy = Latency(56.0, 0.31, 60.0, runs=5, threads=2, device="cpu", backend="eager")
    assert not steady.noisy and busy.noisy and busy.spread == pytest.approx(60 / 0.31)
    stats = [Stats(10, 10, {}, lat) for lat in (busy, steady)]
    report = Report("lenet", ((1, 1, 28, 28),), stats[0], stats[1], (), Timing())
    (warning,) = report.warnings()
    assert "before p90/p10 = 193.5" in warning and "not reliable" in warning
    assert warning in report.to_markdown()
    calm = Report("lenet", ((1, 1, 28, 28),), stats[1], stats[1], (), Timing())
    assert calm.warnings() == []


def test_plot_is_log_scale_with_kept_fractions_and_unclipped_names(tmp_path) -> None:
    from surgery.measure.plot import plot_layer_widths

    layers = [LayerWidth(f"features.{i}.block.0.conv_with_a_long_name", "Conv2d", 64, 32)
              for i in range(3)] + [LayerWidth("fc", "Linear", 1000, 1000)]
    path = plot_layer_widths(layers, tmp_path / "w.png", "resnet18")
    with Image.open(path) as image:  # two panels; "tight" saving grows the figure for names
        width, height = image.size
    assert height > 700 and width > 500  # 7 x 6 inches at 110 dpi, whitespace trimmed

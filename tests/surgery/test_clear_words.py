"""Issue 27: long work logs a line per step off a terminal, and work that is skipped or
swapped says so (a latency target the dense model already meets, bn_scale without norms,
save() into a non-empty folder, the unsteady-latency advice)."""

from __future__ import annotations

import dataclasses
import io
import re
import warnings

import pytest
import torch
from torch import nn

from graphs import trace
from surgery import prune, save
from surgery.cli.prune import latency_lines
from surgery.errors import SurgeryError
from surgery.io.models import LeNet
from surgery.io.saving import load
from surgery.measure.latency import Latency
from surgery.measure.report import Report, Stats, Timing
from surgery.plan.importance import BN_SCALE_FALLBACK
from surgery.plan.latency_model import build_tables, input_shapes
from surgery.plan.latency_target import LatencySearch
from surgery.progress import Progress, resolve
from surgery.recover.train import train

X = torch.zeros(1, 1, 28, 28)
ELAPSED = r" \(elapsed \d+\.\d s\)"


def test_progress_shows_a_bar_lines_or_nothing():
    for show, expected in (("lines", 1), ("off", 0), ("bar", 0)):
        log = io.StringIO()
        progress = Progress(show, stream=log)
        assert list(progress.bar(range(3), "x")) == [0, 1, 2]
        progress.line("step 1/1")
        assert len(re.findall(r"^step 1/1" + ELAPSED + "$", log.getvalue(), re.MULTILINE)) == expected
    assert resolve(None, stream=io.StringIO()) == "lines"  # not a terminal
    with pytest.raises(ValueError, match="progress must be"):
        resolve("loud")


def test_training_logs_one_line_per_epoch(capsys):
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    train(LeNet(), loader, epochs=2)  # progress=None, stderr captured: not a terminal
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    for i, line in enumerate(err, 1):
        assert re.fullmatch(rf"epoch {i}/2: 2 batches, mean loss \d+\.\d{{4}}" + ELAPSED, line)
    train(LeNet(), loader, epochs=1, progress=False)
    assert capsys.readouterr().err == ""


def test_latency_tables_log_one_line_per_group_timed(tmp_path, capsys):
    model = LeNet().eval()
    graph = trace(model, X)
    shapes = input_shapes(model, X, lambda: model(X))
    cache = tmp_path / "tables.json"
    tables = build_tables(model, graph.prunable, shapes, lambda block, inputs: 1.0, cache)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(tables) == 4
    assert re.fullmatch(r"latency table 1/4: group 1, \d+ widths timed" + ELAPSED, lines[0])
    build_tables(model, graph.prunable, shapes, lambda block, inputs: 1.0, cache)
    assert capsys.readouterr().err == ""  # read from the cache: nothing timed


def test_a_latency_target_the_dense_model_meets_prunes_nothing_and_says_so():
    result = prune(LeNet(), X, ratio=0.0)
    met = LatencySearch({}, target_ms=10.0, measured_ms=5.0, dense_ms=5.01, measurements=1)
    assert latency_lines(dataclasses.replace(result, latency=met)) == [
        "latency: the dense model already meets the target (5.01 ms <= 10.00 ms): nothing pruned"]
    cut = prune(LeNet(), X, ratio=0.5)
    landed = LatencySearch({}, target_ms=4.0, measured_ms=3.9, dense_ms=5.0, measurements=3)
    assert latency_lines(dataclasses.replace(cut, latency=landed)) == [str(landed)]
    assert latency_lines(cut) == []


def test_bn_scale_without_batchnorm_warns_that_it_ranks_by_l1():
    lenet = LeNet()
    with pytest.warns(UserWarning, match=re.escape(BN_SCALE_FALLBACK[:40])):
        by_bn = prune(lenet, X, ratio=0.5, importance="bn_scale").plan
    assert [g.removed_channels for g in by_bn.groups] == [
        g.removed_channels for g in prune(lenet, X, ratio=0.5).plan.groups]
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every group has a BatchNorm: no warning
        prune(net, torch.zeros(1, 3, 8, 8), ratio=0.5, importance="bn_scale")


def test_save_into_a_non_empty_folder_needs_overwrite(tmp_path):
    result = prune(LeNet(), X, ratio=0.5)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SurgeryError, match="is not empty: pass overwrite=True"):
        save(result, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    save(result, tmp_path, overwrite=True)
    save(result, tmp_path, overwrite=True)  # ours replaced, the user's file kept
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert torch.equal(load(tmp_path, LeNet())(X), result.model(X))
    save(result, tmp_path / "new" / "deeper")  # a missing folder is made


def _report(threads: int) -> Report:
    busy = Latency(5.0, 1.0, 9.0, runs=5, threads=threads, device="cpu", backend="eager")
    stats = Stats(10, 10, {}, busy)
    return Report("lenet", ((1, 1, 28, 28),), stats, stats, (), Timing(threads=threads))


def test_unsteady_latency_advice_fits_the_thread_count():
    (one,) = _report(1).warnings()
    (two,) = _report(2).warnings()
    assert "--threads 1" not in one and "more --runs" in one
    assert "with --threads 1" in two
    assert one in _report(1).to_markdown() and one not in _report(1).to_markdown(warnings=False)

"""Paired timing: models timed in turn; functional checks and scripted clocks, no real timing."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from surgery.errors import SurgeryError
from surgery.io.models import LeNet
from surgery.measure import latency
from surgery.measure.latency import interleaved
from surgery.measure.paired import PairedTimer, compare_latency

X = torch.zeros(1, 1, 28, 28)
HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


class Clock:
    """A machine whose speed changes: each run returns ``cost * slowdown`` (the scripted ms)."""

    def __init__(self) -> None:
        self.slowdown = 1.0
        self.calls: list[str] = []

    def __deepcopy__(self, memo: dict) -> Clock:
        return self  # one machine: the timer's copy of the reference shares it


class Costly(nn.Module):
    """Forward returns its scripted time as a tensor; the fake timer reads it."""

    def __init__(self, name: str, cost: float, clock: Clock) -> None:
        super().__init__()
        self.name, self.cost, self.clock = name, cost, clock
        self.layer = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.calls.append(self.name)
        return torch.tensor(self.cost * self.clock.slowdown)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Clock:
    monkeypatch.setattr(latency, "_cpu_time_ms", lambda runner: float(runner()))
    return Clock()


def test_interleaved_calls_in_turn_after_warmup() -> None:
    calls: list[str] = []
    times = interleaved([lambda: calls.append("a"), lambda: calls.append("b")],
                        torch.device("cpu"), runs=3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert [len(t) for t in times] == [3, 3]


def test_compare_latency_in_turn_and_models_left_as_given(scripted: Clock) -> None:
    a, b = Costly("a", 2.0, scripted).train(), Costly("b", 1.0, scripted).train()
    before = torch.get_num_threads()
    lat_a, lat_b = compare_latency([a, b], torch.zeros(2), runs=4, warmup=1, threads=1)
    assert scripted.calls == ["a", "b"] * 5
    assert (lat_a.median_ms, lat_b.median_ms, lat_a.runs, lat_a.threads) == (2.0, 1.0, 4, 1)
    assert a.training and b.training and torch.get_num_threads() == before


def test_compare_latency_real_lenet() -> None:
    model = LeNet().train()
    lats = compare_latency([model, LeNet()], X, runs=3, warmup=1)
    assert [lat.runs for lat in lats] == [3, 3]
    assert all(0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms for lat in lats)
    assert model.training


def test_paired_estimate_cancels_a_slowdown(scripted: Clock) -> None:
    # dense costs 10 ms; the machine then slows by half while a 6 ms model is timed: alone
    # it would read 9 ms, paired it reads its ratio 0.6 x the dense median pooled so far
    timer = PairedTimer(Costly("dense", 10.0, scripted), torch.zeros(2), runs=4, warmup=1)
    assert timer.calibrate() == 10.0
    scripted.slowdown = 1.5
    estimate = timer.measure(Costly("small", 6.0, scripted))
    assert estimate == pytest.approx(0.6 * 12.5)  # pool: four 10s and four 15s
    assert timer.reference_ms == 12.5
    scripted.slowdown = 1.0
    assert timer.measure(Costly("small", 6.0, scripted)) == pytest.approx(0.6 * 10.0)


def test_paired_timer_copies_models(scripted: Clock) -> None:
    dense = Costly("dense", 4.0, scripted).train()
    small = Costly("small", 2.0, scripted).train()
    weights = dense.layer.weight.clone()
    timer = PairedTimer(dense, torch.zeros(2), runs=2, warmup=0)
    assert timer.measure(small) == pytest.approx(0.5 * 4.0)  # the pool starts from measure
    assert dense.training and small.training
    assert torch.equal(dense.layer.weight, weights)


def test_paired_timer_bad_arguments() -> None:
    with pytest.raises(SurgeryError, match="runs"):
        PairedTimer(LeNet(), X, runs=0)
    with pytest.raises(SurgeryError, match="backend"):
        PairedTimer(LeNet(), X, backend="tvm")


@pytest.mark.skipif(not HAS_ORT, reason="onnx / onnxruntime not installed")
def test_paired_timer_onnxruntime() -> None:
    timer = PairedTimer(LeNet(), X, runs=3, warmup=1, threads=1, backend="onnxruntime")
    assert timer.measure(LeNet()) > 0 and timer.reference_ms > 0

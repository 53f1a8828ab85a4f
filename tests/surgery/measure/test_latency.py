"""measure_latency: functional checks only; no assertion on how fast anything runs."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from surgery.errors import SurgeryError
from surgery.io.models import LeNet
from surgery.measure import latency
from surgery.measure.latency import Latency, measure_latency, summarize_ms

X = torch.zeros(1, 1, 28, 28)
HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def check_summary(lat: Latency, runs: int, backend: str) -> None:
    assert isinstance(lat, Latency)
    assert 0 <= lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.runs == runs and lat.backend == backend
    assert "ms" in str(lat) and backend in str(lat)


def test_eager_cpu_summary() -> None:
    lat = measure_latency(LeNet(), X, runs=7, warmup=1)
    check_summary(lat, 7, "eager")
    assert lat.device == "cpu"
    assert lat.threads == torch.get_num_threads()


def test_tuple_inputs_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    lat = measure_latency(LeNet(), (X,), runs=3, warmup=0, progress=True)
    check_summary(lat, 3, "eager")
    assert "latency" in capsys.readouterr().err


def test_threads_set_then_restored() -> None:
    before = torch.get_num_threads()
    lat = measure_latency(LeNet(), X, runs=2, warmup=0, threads=1)
    assert lat.threads == 1
    assert torch.get_num_threads() == before


def test_model_left_as_given() -> None:
    model = LeNet().train()
    model.fc3.eval()
    measure_latency(model, X, runs=2, warmup=0)
    assert model.training and model.conv1.training and not model.fc3.training
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_compile_backend_wraps_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real torch.compile takes minutes on a small CPU box: check the wiring only.
    compiled = []

    def fake_compile(model: torch.nn.Module) -> torch.nn.Module:
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = LeNet()
    check_summary(measure_latency(model, X, runs=2, warmup=1, backend="compile"), 2, "compile")
    assert compiled == [model]


@pytest.mark.parametrize("device", ["tpu", "not a device", "mps", 3.5])
def test_bad_device(device: object) -> None:
    with pytest.raises(SurgeryError, match="device"):
        measure_latency(LeNet(), X, device=device, runs=1, warmup=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["tensorrt", "", "EAGER"])
def test_bad_backend(backend: str) -> None:
    with pytest.raises(SurgeryError, match="backend"):
        measure_latency(LeNet(), X, runs=1, warmup=0, backend=backend)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"runs": 0}, "runs"), ({"runs": 2.5}, "runs"), ({"warmup": -1}, "warmup"),
     ({"threads": 0}, "threads")],
)
def test_bad_counts(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(SurgeryError, match=word):
        measure_latency(LeNet(), X, **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_raises() -> None:
    with pytest.raises(SurgeryError, match="CUDA is not available"):
        measure_latency(LeNet(), X, device="cuda", runs=1, warmup=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copies_model_and_restores() -> None:
    model = LeNet().train()
    lat = measure_latency(model, X, device="cuda", runs=5, warmup=2)
    check_summary(lat, 5, "eager")
    assert lat.device == "cuda"
    assert model.training and all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed")
def test_onnxruntime_lenet() -> None:
    model = LeNet().train()
    lat = measure_latency(model, X, runs=5, warmup=1, threads=1, backend="onnxruntime")
    check_summary(lat, 5, "onnxruntime")
    assert lat.threads == 1
    assert model.training


def test_onnxruntime_missing_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latency, "onnxruntime", None)  # as if the import had failed
    with pytest.raises(SurgeryError, match="pip install onnx onnxruntime"):
        measure_latency(LeNet(), X, runs=1, warmup=0, backend="onnxruntime")


def test_summarize_ms() -> None:
    assert summarize_ms([2.0]) == (2.0, 2.0, 2.0)
    assert summarize_ms([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((3.0, 1.4, 4.6))
    with pytest.raises(SurgeryError):
        summarize_ms([])

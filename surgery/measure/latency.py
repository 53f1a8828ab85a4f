"""Time a model's forward pass on CPU or GPU: eager, ``torch.compile`` or ONNX Runtime.

Warm-up runs come first (they also cover compilation); the timed runs are summarised by
their median and 10th/90th percentiles. Comparisons should time with one thread (the
report's default): with all threads, other processes on the machine make timings swing by
10x or more. ``Latency.noisy`` flags runs whose p90 is over ``NOISY_SPREAD`` x p10, a sign of
contention; a ratio of two such timings is not to be trusted. The caller's model, thread count and training flags
are left as they were; a model that has to change device is copied first.

Example:
    >>> from surgery.io.models import LeNet
    >>> lat = measure_latency(LeNet(), torch.zeros(1, 1, 28, 28), runs=5, warmup=1, threads=1)
    >>> lat.runs, lat.threads, lat.device, lat.backend
    (5, 1, 'cpu', 'eager')
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from graphs.inputs import input_leaves, replace_leaves, split_inputs
from graphs.modes import eval_mode
from surgery.errors import SurgeryError
from surgery.io.export import export_onnx, onnx, onnx_feed, onnxruntime

BACKENDS = ("eager", "compile", "onnxruntime")
NOISY_SPREAD = 1.5  # p90 / p10 above this: the runs were disturbed (contention, throttling)


@dataclass(frozen=True)
class Latency:
    """Summary of timed forward passes (milliseconds).

    Example:
        >>> print(Latency(1.5, 1.25, 1.75, runs=50, threads=1, device="cpu", backend="eager"))
        median 1.500 ms (p10 1.250, p90 1.750) over 50 runs; cpu, eager, 1 threads
        >>> print(Latency(1.5, 1.25, 2.0, runs=50, threads=4, device="cpu", backend="eager"))
        median 1.500 ms (p10 1.250, p90 2.000) over 50 runs; cpu, eager, 4 threads; NOISY (p90/p10 1.6)
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    threads: int
    device: str
    backend: str

    @property
    def spread(self) -> float:
        """p90 / p10 of the timed runs (1.0 when perfectly steady).

        Example:
            >>> Latency(1.5, 1.25, 2.0, runs=50, threads=4, device="cpu", backend="eager").spread
            1.6
        """
        return self.p90_ms / self.p10_ms if self.p10_ms > 0 else 1.0

    @property
    def noisy(self) -> bool:
        """True when the spread shows contention (over ``NOISY_SPREAD``)."""
        return self.spread > NOISY_SPREAD

    def __str__(self) -> str:
        text = (f"median {self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}) "
                f"over {self.runs} runs; {self.device}, {self.backend}, {self.threads} threads")
        return text + (f"; NOISY (p90/p10 {self.spread:.1f})" if self.noisy else "")


def summarize_ms(times_ms: Sequence[float]) -> tuple[float, float, float]:
    """Median, 10th and 90th percentile (linear interpolation) of a list of times.

    Example:
        >>> summarize_ms([1.0, 2.0, 3.0, 4.0, 5.0])
        (3.0, 1.4, 4.6)
    """
    if not times_ms:
        raise SurgeryError("no timings to summarise: runs must be at least 1")
    p10, median, p90 = np.percentile(np.asarray(times_ms, dtype=float), [10, 50, 90])
    return float(median), float(p10), float(p90)


def measure_latency(
    model: nn.Module,
    example_inputs: object,
    device: str | torch.device = "cpu",
    *,
    runs: int = 50,
    warmup: int = 10,
    threads: int | None = None,
    backend: str = "eager",
    progress: bool = False,
) -> Latency:
    """Time ``model`` called on ``example_inputs`` in inference mode and summarise the runs.

    The inputs are read as ``prune`` reads them: a tensor, a tuple/list of positional inputs,
    a dict of keyword inputs (``{"input_ids": ids, "use_cache": False}``), any pytree below.

    ``threads`` sets ``torch.set_num_threads`` (and ONNX Runtime's intra-op threads) for the
    measurement only. ``backend`` is "eager", "compile" (``torch.compile``; warm-up covers
    compilation) or "onnxruntime" (exported to ONNX in a temporary directory). Bad arguments,
    or ``device="cuda"`` without CUDA, raise SurgeryError.

    Example:
        >>> from surgery.io.models import LeNet
        >>> lat = measure_latency(LeNet(), torch.zeros(1, 1, 28, 28), runs=3, warmup=1)
        >>> lat.p10_ms <= lat.median_ms <= lat.p90_ms
        True
    """
    dev = check_args(device, runs, warmup, threads, backend)
    with num_threads(threads) as used_threads, eval_mode(model):
        runner = make_runner(model, example_inputs, dev, backend, used_threads)
        times = interleaved([runner], dev, runs, warmup, progress)[0]
    median, p10, p90 = summarize_ms(times)
    return Latency(median, p10, p90, runs, used_threads, str(dev), backend)


def check_args(
    device: str | torch.device, runs: int, warmup: int, threads: int | None, backend: str
) -> torch.device:
    """The device to time on, after refusing bad timing settings in one line.

    Example:
        >>> check_args("cpu", 10, 2, 1, "eager")
        device(type='cpu')
    """
    if backend not in BACKENDS:
        raise SurgeryError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if not isinstance(runs, int) or runs < 1:
        raise SurgeryError(f"runs must be an integer >= 1, got {runs!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise SurgeryError(f"warmup must be an integer >= 0, got {warmup!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise SurgeryError(f"threads must be None or an integer >= 1, got {threads!r}")
    return check_device(device)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that exists here; SurgeryError otherwise.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SurgeryError(f"unknown device {device!r}: use 'cpu' or 'cuda'") from exc
    if dev.type not in ("cpu", "cuda"):
        raise SurgeryError(f"unsupported device {device!r}: use 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SurgeryError(
            f"device {device!r} asked for but CUDA is not available here "
            "(no GPU, or a CPU-only PyTorch build): use device='cpu'"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SurgeryError(
            f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


@contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block; yield the count in effect."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _on_device(model: nn.Module, dev: torch.device) -> nn.Module:
    """The model itself if all its tensors are already on ``dev``, else a moved deep copy."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(_same_device(t.device, dev) for t in tensors):
        return model
    return copy.deepcopy(model).to(dev)


def _same_device(actual: torch.device, wanted: torch.device) -> bool:
    if actual.type != wanted.type:
        return False
    if wanted.type != "cuda":
        return True
    index = wanted.index if wanted.index is not None else torch.cuda.current_device()
    return actual.index == index


def make_runner(
    model: nn.Module,
    example_inputs: object,
    dev: torch.device,
    backend: str,
    threads: int,
    spin: bool = True,
) -> Callable[[], object]:
    """A no-argument callable doing one forward pass with the chosen backend (``spin``: see
    ``_onnxruntime_runner``)."""
    if backend == "onnxruntime":
        return _onnxruntime_runner(model, example_inputs, dev, threads, spin)
    net = _on_device(model, dev)
    args, kwargs = split_inputs(_to(example_inputs, dev))
    if backend == "compile":
        net = torch.compile(net)
    return lambda: net(*args, **kwargs)


def _to(example_inputs: object, dev: torch.device) -> object:
    """The example inputs with every tensor in them (any pytree) on ``dev``."""
    moved = [t.to(dev) for _, t in input_leaves(example_inputs)]
    return replace_leaves(example_inputs, iter(moved))


def interleaved(
    runners: Sequence[Callable[[], object]], dev: torch.device, runs: int, warmup: int,
    progress: bool = False,
) -> list[list[float]]:
    """Milliseconds per runner: ``warmup`` untimed cycles, then ``runs`` timed cycles, each
    calling every runner once in turn (one runner: plain warm-up then timed runs)."""
    timer = _cuda_time_ms if dev.type == "cuda" else _cpu_time_ms
    times: list[list[float]] = [[] for _ in runners]
    on_device = torch.cuda.device(dev) if dev.type == "cuda" else nullcontext()
    with on_device, torch.inference_mode(), tqdm(
        total=warmup + runs, desc="latency", unit="cycle", disable=not progress
    ) as bar:
        for cycle in range(warmup + runs):
            if cycle == warmup and dev.type == "cuda":
                torch.cuda.synchronize(dev)
            for runner, mine in zip(runners, times):
                if cycle < warmup:
                    runner()
                else:
                    mine.append(timer(runner))
            bar.update()
    return times


def _cpu_time_ms(runner: Callable[[], object]) -> float:
    start = time.perf_counter()
    runner()
    return (time.perf_counter() - start) * 1000.0


def _cuda_time_ms(runner: Callable[[], object]) -> float:
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    runner()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _onnxruntime_runner(
    model: nn.Module, example_inputs: object, dev: torch.device, threads: int,
    spin: bool = True,
) -> Callable[[], object]:
    """Export to ONNX in a temporary directory and wrap an InferenceSession run. ``spin=False``
    turns off ONNX Runtime's spin-waiting of idle intra-op threads: needed when several
    sessions run in turn (an idle session's workers otherwise spin through the others' runs:
    MobileNetV2 with 2 threads on 2 cores read 23 ms instead of 11 ms)."""
    ort = _onnxruntime()
    providers = ["CUDAExecutionProvider"] if dev.type == "cuda" else ["CPUExecutionProvider"]
    if providers[0] not in ort.get_available_providers():
        raise SurgeryError(
            f"onnxruntime has no {providers[0]} here: install onnxruntime-gpu, "
            "or use device='cpu' or another backend"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    cpu_inputs = _to(example_inputs, torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="surgery-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(_on_device(model, torch.device("cpu")), cpu_inputs, path)
        session = ort.InferenceSession(str(path), options, providers=providers)
    feed = onnx_feed(session, cpu_inputs)
    return lambda: session.run(None, feed)


def _onnxruntime():
    missing = [name for name, module in (("onnx", onnx), ("onnxruntime", onnxruntime))
               if module is None]
    if missing:
        raise SurgeryError(
            f"backend 'onnxruntime' needs {' and '.join(missing)}: "
            "pip install onnx onnxruntime (or use backend='eager')"
        )
    return onnxruntime

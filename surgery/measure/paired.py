"""Time models side by side, run by run in turn, so a machine whose speed drifts slows them alike.

On a shared or virtual machine the speed of the whole machine moves by several percent over
seconds (another tenant, frequency scaling): two models timed one after the other differ by
that drift as well as by their own cost. Timed in turn (A, B, A, B, ...) their ratio holds
steady: on a 2-core VM, MobileNetV2 against its 40%-pruned copy, the ratio of 20-run medians
varied by 1-1.5% (coefficient of variation) while each model's own median varied by 3.5-4%.

``compare_latency`` times several models in turn. ``PairedTimer`` times models against one
reference (the dense model) and pools every reference run it makes: a model's estimate is
its ratio to the reference in the same runs times the reference's median over all its runs,
the machine's typical speed rather than its speed of the moment.

ONNX Runtime sessions are made with spin-waiting off: with it on, an idle session's worker
threads spin through the other sessions' runs (2 threads on 2 cores: MobileNetV2 read 23 ms
in turn instead of 11 ms alone). Alone, a spinning session was about 4% faster than one that
does not spin.

Example:
    >>> import torch
    >>> from surgery.io.models import LeNet
    >>> a, b = compare_latency([LeNet(), LeNet()], torch.zeros(1, 1, 28, 28), runs=5, warmup=1)
    >>> a.runs, b.backend
    (5, 'eager')
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import nn

from graphs.modes import eval_mode
from surgery.measure.latency import (
    Latency,
    check_args,
    interleaved,
    make_runner,
    num_threads,
    summarize_ms,
)


def compare_latency(models: Sequence[nn.Module], example_inputs: object,
                    device: str | torch.device = "cpu", *, runs: int = 30, warmup: int = 5,
                    threads: int | None = None, backend: str = "eager", progress: bool = False
                    ) -> list[Latency]:
    """One ``Latency`` per model, timed run by run in turn (each model once per cycle).

    Arguments as in ``surgery.measure.latency.measure_latency``; ``runs`` cycles are timed
    after ``warmup`` untimed ones. The models are left as they were (modes, threads).

    Example:
        >>> from surgery.io.models import LeNet
        >>> lats = compare_latency([LeNet(), LeNet()], torch.zeros(1, 1, 28, 28), runs=3)
        >>> [lat.runs for lat in lats]
        [3, 3]
    """
    dev = check_args(device, runs, warmup, threads, backend)
    with num_threads(threads) as used, ExitStack() as stack:
        for model in models:  # eager runners call the model itself: eval until timed
            stack.enter_context(eval_mode(model))
        runners = [make_runner(m, example_inputs, dev, backend, used, spin=False)
                   for m in models]
        times = interleaved(runners, dev, runs, warmup, progress)
    return [Latency(*summarize_ms(t), runs, used, str(dev), backend) for t in times]


class PairedTimer:
    """Estimates models' latency against a reference timed alongside them.

    ``measure(model)`` times ``model`` and the reference in turn for ``runs`` cycles and
    returns (model median / reference median in those runs) x ``reference_ms``, the median
    of every reference run so far (``calibrate`` adds reference-only runs). The reference is
    copied once (its runner, an ONNX export for "onnxruntime", is built once); a measured
    model is timed in eval mode and its flags restored, so the caller's modules are never
    changed.

    Example:
        >>> from surgery.io.models import LeNet
        >>> timer = PairedTimer(LeNet(), torch.zeros(1, 1, 28, 28), runs=5, warmup=1)
        >>> timer.calibrate() > 0, timer.measure(LeNet()) > 0
        (True, True)
    """

    def __init__(self, reference: nn.Module, example_inputs: object,
                 device: str | torch.device = "cpu", *, runs: int = 20, warmup: int = 3,
                 threads: int | None = None, backend: str = "eager") -> None:
        self._dev = check_args(device, runs, warmup, threads, backend)
        self._inputs, self._runs, self._warmup = example_inputs, runs, warmup
        self._threads, self._backend = threads, backend
        self._pool: list[float] = []
        net = copy.deepcopy(reference).eval()  # its runner outlives this call: a copy
        with num_threads(threads) as used:
            self._reference = make_runner(net, example_inputs, self._dev, backend, used,
                                           spin=False)

    @property
    def reference_ms(self) -> float:
        """Median of every reference run so far (``calibrate`` first if there are none)."""
        return summarize_ms(self._pool)[0] if self._pool else self.calibrate()

    def calibrate(self) -> float:
        """Time the reference alone for ``runs`` runs, add them to the pool; the pooled median."""
        with num_threads(self._threads):
            self._pool += interleaved([self._reference], self._dev, self._runs, self._warmup)[0]
        return summarize_ms(self._pool)[0]

    def measure(self, model: nn.Module) -> float:
        """``model``'s estimated median ms (its ratio to the reference in shared cycles)."""
        with num_threads(self._threads) as used, eval_mode(model):
            runner = make_runner(model, self._inputs, self._dev, self._backend, used,
                                  spin=False)
            mine, ref = interleaved([runner, self._reference], self._dev, self._runs,
                                    self._warmup)
        self._pool += ref
        return summarize_ms(mine)[0] / summarize_ms(ref)[0] * summarize_ms(self._pool)[0]

"""Latency of a model as a function of its groups' widths: measured lookup tables, or a fake.

A ``LatencyModel`` answers ``predict(widths) -> ms`` (group id -> channels kept) and
``widths(gid)``, the channel counts a group may take (descending, the full count first).
``TableLatency`` is the measured one: per group, the layers the group touches (conv and linear
layers, at their real input shapes, the group's dim at each candidate width, the other dims
full) are timed together as one block on the deployment backend; the whole model's measured
latency minus the savings is the prediction: each group's block saving added up, or, with
``surgery.plan.latency_layers``, each conv's share of its blocks scaled by the product of its
two groups' speed-ups (a conv cut on both dims saves less than two full savings), plus the
time between the layers that shrinks with the channels. Only the widths that are faster than
every larger width measured are offered (the backend's fast channel counts), so the search
never picks a width that is slower than a wider one. Timing goes through a ``timer(module,
inputs) -> ms`` the caller passes (``surgery.measure.latency`` lives above this package);
tables are cached as JSON keyed by machine, backend, device, threads and the blocks' shapes.

Example:
    >>> fake = FakeLatency(base_ms=10.0, ms_per_channel={1: 0.1, 2: 0.01}, channels={1: 8, 2: 8})
    >>> fake.predict({1: 4, 2: 8}), fake.widths(1)
    (9.6, (8, 6, 4, 2))
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from graphs.datamodel import Group
from graphs.kinds import layer_kind
from surgery.atomic import write_text
from surgery.progress import Progress, resolve

Timer = Callable[[nn.Module, tuple[torch.Tensor, ...]], float]  # (block, inputs) -> ms
FRACTIONS = (7 / 8, 3 / 4, 5 / 8, 1 / 2, 3 / 8, 1 / 4)  # the widths timed, as kept fractions
PROBED = (3 / 4, 1 / 2)  # fractions also timed one channel below the multiple
DEFAULT_CACHE = Path.home() / ".cache" / "model-surgery"
Layers = Mapping[str, tuple[float, tuple[int, ...]]]  # module -> (its ms, groups cutting it)


class LatencyModel(Protocol):
    """Predicted milliseconds for group widths, and the widths each group may take."""

    def predict(self, widths: Mapping[int, int]) -> float: ...

    def widths(self, gid: int) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class FakeLatency:
    """A linear latency model for tests: ``base_ms`` minus ``ms_per_channel[g]`` per removed
    channel; widths in steps of a quarter of each group, down to a quarter."""

    base_ms: float
    ms_per_channel: Mapping[int, float]
    channels: Mapping[int, int]

    def predict(self, widths: Mapping[int, int]) -> float:
        return round(self.base_ms - sum(rate * (self.channels[g] - widths.get(g, self.channels[g]))
                                        for g, rate in self.ms_per_channel.items()), 9)

    def widths(self, gid: int) -> tuple[int, ...]:
        c = self.channels[gid]
        return tuple(sorted({max(1, round(c * k / 4)) for k in range(1, 5)}, reverse=True))


@dataclass(frozen=True)
class TableLatency:
    """Measured: ``base_ms`` (the whole dense model) minus the time saved.

    ``tables[g]`` maps a width to the measured time of group ``g``'s block at that width.
    Without ``layers`` the saving is additive: each group's block time saved. A conv is in the
    blocks of both groups that cut it (outputs and inputs), each timed with the other dim
    full, so cutting both counts two full savings. With ``layers`` (module -> (its ms, the
    groups cutting it), ``layer_shares``) each layer keeps the product of its groups' block
    speed-ups (block ms at the width / at full width): halving both dims keeps a quarter.
    ``rest`` (group id -> ms, ``surgery.plan.latency_layers.rest_shares``) is time outside the
    layers that shrinks in proportion to the group's width (norms, activations between them).

    Example:
        >>> t = TableLatency(5.0, {1: {8: 2.0, 6: 2.1, 4: 1.0, 2: 0.6}})  # 6 is slower than 8
        >>> t.predict({1: 4}), t.widths(1)
        (4.0, (8, 4, 2))
        >>> tables = {1: {8: 2.0, 4: 1.0}, 2: {8: 2.0, 4: 1.0}}
        >>> TableLatency(5.0, tables).predict({1: 4, 2: 4})  # additive: 5 - 1 - 1
        3.0
        >>> TableLatency(5.0, tables, {"conv": (2.0, (1, 2))}).predict({1: 4, 2: 4})
        3.5
        >>> TableLatency(5.0, tables, {"conv": (2.0, (1, 2))}, {1: 1.0}).predict({1: 4, 2: 4})
        3.0
    """

    base_ms: float
    tables: Mapping[int, Mapping[int, float]]
    layers: Layers | None = None
    rest: Mapping[int, float] | None = None

    def predict(self, widths: Mapping[int, int]) -> float:
        if self.layers is not None:
            saved = sum(ms * (1 - float(np.prod([self._speed(g, widths) for g in gids])))
                        for ms, gids in self.layers.values())
        else:
            saved = sum(table[max(table)] * (1 - self._speed(gid, widths))
                        for gid, table in self.tables.items())
        for gid, ms in (self.rest or {}).items():
            full = max(self.tables[gid])
            saved += ms * (1 - widths.get(gid, full) / full)
        return round(self.base_ms - saved, 9)

    def _speed(self, gid: int, widths: Mapping[int, int]) -> float:
        """Group ``gid``'s block time at its width in ``widths`` / at full width (1: full)."""
        table = self.tables.get(gid)
        full = max(table) if table else None
        if full is None or widths.get(gid, full) == full or table[full] <= 0:
            return 1.0
        xs = sorted(table)
        return float(np.interp(widths[gid], xs, [table[x] for x in xs])) / table[full]

    def widths(self, gid: int) -> tuple[int, ...]:
        """The fast widths: each strictly faster than every larger width measured."""
        table = self.tables.get(gid)
        if not table:
            return ()
        fast, best = [], float("inf")
        for w in sorted(table, reverse=True):
            if table[w] < best:
                fast.append(w)
                best = table[w]
        return tuple(fast)


def candidate_widths(channels: int, fractions: Sequence[float] = FRACTIONS) -> tuple[int, ...]:
    """The widths timed for a group: full, then each fraction as a multiple of 8 (of 4, 2 or 1
    for small groups), and at 3/4 and 1/2 the count one below too, to see whether the multiple
    is faster.

    Example:
        >>> candidate_widths(64), candidate_widths(6)
        ((64, 56, 48, 47, 40, 32, 31, 24, 16), (6, 5, 4, 3, 2, 1))
    """
    step = next((s for s in (8, 4, 2) if channels >= 4 * s), 1)
    found = {channels}
    for f in fractions:
        w = max(step, int(channels * f) // step * step)
        found |= {w, w - 1} if f in PROBED and w > 1 else {w}
    return tuple(sorted((w for w in found if 0 < w <= channels), reverse=True))


@dataclass(frozen=True)
class LayerCut:
    """A conv or linear layer of one group: its module name, the dims the group cuts (dim ->
    positions per channel) and its input shape in the real forward."""

    module: str
    cut: tuple[tuple[int, int], ...]
    shape: tuple[int, ...]


def group_layers(model: nn.Module, group: Group, shapes: Mapping[str, tuple[int, ...]]
                 ) -> list[LayerCut]:
    """The conv and linear layers a group cuts, with the dims it cuts and their input shapes."""
    cuts: dict[str, dict[int, int]] = {}
    for m in group.members:
        module = model.get_submodule(m.module)
        if not m.attr and m.module in shapes and _resized(module, {}) is not None:
            cuts.setdefault(m.module, {})[m.dim] = len(m.indices[0])
    return [LayerCut(name, tuple(sorted(cut.items())), shapes[name]) for name, cut in cuts.items()]


def _resized(module: nn.Module, sizes: Mapping[int, int]) -> nn.Module | None:
    """A fresh layer like ``module`` with weight dim d of size ``sizes[d]`` (its kind's
    ``resize``); None when its kind cannot be timed alone (``graphs.kinds``)."""
    kind = layer_kind(module)
    return kind.resize(module, sizes) if kind is not None and kind.resize is not None else None


def timed_layer(module: nn.Module) -> bool:
    """Whether ``module``'s kind has a plain copy to time at other widths (conv, linear).

    Example:
        >>> timed_layer(nn.Conv2d(3, 8, 3)), timed_layer(nn.BatchNorm2d(8))
        (True, False)
    """
    kind = layer_kind(module)
    return kind is not None and kind.resize is not None


class _Block(nn.Module):
    """Runs each layer on its own input: a group's layers timed together."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(layer(x) for layer, x in zip(self.layers, inputs))


def _block(model: nn.Module, layers: Sequence[LayerCut], removed: int
           ) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    built, inputs = [], []
    for layer in layers:
        module = model.get_submodule(layer.module)
        full = _resized(module, {})
        sizes = {d: full.weight.shape[d] - removed * per for d, per in layer.cut}
        new = _resized(module, sizes)
        shape = list(layer.shape)
        channel_dim = len(shape) - 1 if isinstance(new, nn.Linear) else 1
        shape[channel_dim] = new.in_features if isinstance(new, nn.Linear) else new.in_channels
        built.append(new.eval())
        inputs.append(torch.randn(*shape, generator=torch.Generator().manual_seed(0)))
    return _Block(built).eval(), tuple(inputs)


def input_shapes(model: nn.Module, example_inputs: object, run: Callable[[], object]
                 ) -> dict[str, tuple[int, ...]]:
    """Module name -> shape of its first input in one forward (``run`` does the forward)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable[[nn.Module, tuple], None]:
        def hook(_module: nn.Module, args: tuple) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    handles = [module.register_forward_pre_hook(record(name))
               for name, module in model.named_modules()
               if timed_layer(module)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return shapes


def cache_path(cache_dir: Path | str | None, backend: str, device: str, threads: int) -> Path:
    """The JSON file of one machine, backend, device and thread count."""
    machine = "|".join([platform.node(), platform.machine(), platform.processor(),
                        str(os.cpu_count()), torch.__version__])
    digest = hashlib.sha1(machine.encode()).hexdigest()[:12]
    folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    return folder / f"latency-{digest}-{backend}-{device}-t{threads}.json"


def build_tables(model: nn.Module, groups: Sequence[Group], shapes: Mapping[str, tuple[int, ...]],
                 timer: Timer, path: Path, rounds: int = 2,
                 progress: bool | str | None = None) -> dict[int, dict[int, float]]:
    """Per group: width -> measured block ms, read from ``path`` where known, else timed and
    written back. Groups touching no conv or linear layer get no table (never pruned). Each
    group's widths are timed back to back in ``rounds`` rounds and the fastest round kept (a
    busy machine only ever slows a run down). ``progress`` (``surgery.progress.resolve``): a
    bar over the groups on a terminal, else a line per group timed."""
    cache = json.loads(path.read_text()) if path.exists() else {}
    tables, fresh = {}, False
    log = Progress(resolve(progress))
    for i, g in enumerate(log.bar(groups, "latency tables", unit="group")):
        layers = group_layers(model, g, shapes)
        if not layers:
            continue
        key = _key(model, layers, g.channels)
        if key not in cache:
            blocks = {w: _block(model, layers, g.channels - w)
                      for w in candidate_widths(g.channels)}
            times = [{w: timer(*block) for w, block in blocks.items()} for _ in range(rounds)]
            cache[key] = {str(w): min(t[w] for t in times) for w in blocks}
            fresh = True
            log.line(f"latency table {i + 1}/{len(groups)}: group {g.id}, {len(blocks)} widths "
                     f"timed")
        tables[g.id] = {int(w): float(ms) for w, ms in cache[key].items()}
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(cache, indent=1, sort_keys=True))
    return tables


def _key(model: nn.Module, layers: Sequence[LayerCut], channels: int) -> str:
    spec = [(repr(_resized(model.get_submodule(x.module), {})), x.cut, x.shape) for x in layers]
    return hashlib.sha1(repr((spec, channels, candidate_widths(channels))).encode()).hexdigest()

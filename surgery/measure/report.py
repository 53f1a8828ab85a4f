"""Before/after report of a pruning: params, MACs, latency, and channels per layer.

A ``Report`` is plain data (no torch objects): ``to_json()`` for machines, ``to_markdown()`` for
people, and ``write(folder)`` puts ``report.json``, ``report.md`` and ``report.png`` (per-layer
channels before/after, see ``surgery.measure.plot``) in a folder. Ratios are after / before.

Example:
    >>> import torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    >>> pruned = prune(model, x, ratio=0.5).model
    >>> report = build_report(model, x, pruned, name="lenet", timing=None)
    >>> report.before.macs, report.after.macs, round(report.ratios()["macs"], 4)
    (281640, 92220, 0.3274)
    >>> report.layers[0]
    LayerWidth(name='conv1', kind='Conv2d', before=6, after=3)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from graphs.inputs import input_leaves
from surgery.atomic import write_text
from surgery.errors import SurgeryError
from surgery.measure.flops import count_flops, count_params
from surgery.measure.latency import Latency, measure_latency
from surgery.measure.plot import plot_layer_widths
from surgery.measure.widths import LayerWidth, layer_widths
from surgery.plan.plan import Plan


@dataclass(frozen=True)
class Timing:
    """How each model is timed (the arguments of ``measure_latency``)."""

    runs: int = 50
    warmup: int = 10
    threads: int | None = 1  # one thread: comparable under load; None = torch's current count
    device: str = "cpu"
    backend: str = "eager"
    progress: bool = False


@dataclass(frozen=True)
class Stats:
    """One model's cost. ``macs``/``latency`` are None when not measured."""

    params: int
    macs: int | None
    uncounted: Mapping[str, int]
    latency: Latency | None


@dataclass(frozen=True)
class Report:
    """Before (and after) cost of a model and its per-layer widths."""

    name: str
    input_shapes: tuple[tuple[int, ...], ...]
    before: Stats
    after: Stats | None
    layers: tuple[LayerWidth, ...]
    timing: Timing | None

    def ratios(self) -> dict[str, float | None]:
        """after / before of params, MACs and median latency (None where not measured)."""
        if self.after is None:
            return {}
        lat = [s.latency.median_ms if s.latency else None for s in (self.before, self.after)]
        return {"params": _ratio(self.after.params, self.before.params),
                "macs": _ratio(self.after.macs, self.before.macs),
                "latency": _ratio(lat[1], lat[0])}

    def to_json(self) -> dict[str, Any]:
        """Plain dicts and lists: model, input_shapes, timing, before, after, ratios, layers."""
        return {"model": self.name, "input_shapes": [list(s) for s in self.input_shapes],
                "timing": asdict(self.timing) if self.timing else None,
                "before": _stats_json(self.before),
                "after": _stats_json(self.after) if self.after else None,
                "ratios": self.ratios() or None,
                "layers": [asdict(layer) for layer in self.layers]}

    def to_markdown(self, warnings: bool = True) -> str:
        """A readable summary table, then one row per layer (``warnings``: with the
        ``warnings()`` under the notes; the command line prints them on stderr instead)."""
        shown = self.warnings() if warnings else []
        return "\n".join([f"# Report: {self.name}", "", *_notes(self), *shown, "",
                          *_summary(self), "", "## Channels per layer", "",
                          *_layer_rows(self), ""])

    def warnings(self) -> list[str]:
        """Why the latency numbers may mislead (contention seen in the spread of the runs)."""
        noisy = [(label, s.latency) for label, s in (("before", self.before),
                                                     ("after", self.after))
                 if s is not None and s.latency is not None and s.latency.noisy]
        if not noisy:
            return []
        which = ", ".join(f"{label} p90/p10 = {lat.spread:.1f}" for label, lat in noisy)
        fewer = "" if all(lat.threads == 1 for _, lat in noisy) else ", with --threads 1"
        return [(f"**Warning**: latency runs were unsteady ({which}): the machine is busy or "
                f"throttling, so latency and its ratio are not reliable. Time again on an idle "
                f"machine{fewer}, or with more --runs.")]

    def write(self, out: str | Path, plot: bool = True) -> dict[str, Path]:
        """Write report.json, report.md and (if ``plot``) report.png; return their paths.
        Each is written to a temporary file and renamed (``surgery.atomic``)."""
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise SurgeryError(f"cannot write the report into {folder}: it is a file")
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"json": folder / "report.json", "md": folder / "report.md"}
        write_text(paths["json"], json.dumps(self.to_json(), indent=1) + "\n")
        write_text(paths["md"], self.to_markdown())
        if plot:
            paths["png"] = plot_layer_widths(self.layers, folder / "report.png", self.name)
        return paths

    def __str__(self) -> str:
        return self.to_markdown()


def model_stats(model: nn.Module, example_inputs: Any, timing: Timing | None) -> Stats:
    """Params and MACs (fvcore) of ``model``, and its latency unless ``timing`` is None."""
    flops = count_flops(model, example_inputs)
    latency = None
    if timing is not None:
        latency = measure_latency(model, example_inputs, timing.device, runs=timing.runs,
                                  warmup=timing.warmup, threads=timing.threads,
                                  backend=timing.backend, progress=timing.progress)
    return Stats(count_params(model), flops.total, dict(flops.uncounted), latency)


def build_report(before: nn.Module, example_inputs: Any, after: nn.Module | None = None, *,
                 name: str | None = None, timing: Timing | None = Timing()) -> Report:
    """Measure ``before`` (and ``after``, its pruned version) on the same example inputs.

    Layers are matched by qualified name (pruning keeps names). ``timing=None`` skips latency.
    The inputs are read as ``prune`` reads them (positional, keyword, any pytree of tensors).
    ``name`` defaults to the model's class name. See the module example.
    """
    name = name or type(before).__name__
    stats_before = model_stats(before, example_inputs, timing)
    stats_after = model_stats(after, example_inputs, timing) if after is not None else None
    old = layer_widths(before)
    new = layer_widths(after) if after is not None else {}
    layers = tuple(LayerWidth(n, kind, width, new[n][1] if n in new else None)
                   for n, (kind, width, _) in old.items())
    return Report(name, _shapes(example_inputs), stats_before, stats_after, layers, timing)


def report_from_plan(after: nn.Module, plan: Plan, params_before: int, example_inputs: Any,
                     *, name: str | None = None, timing: Timing | None = Timing()) -> Report:
    """Report a pruned model without its original: widths before come from the plan.

    MACs and latency before are unknown (None) since the original model is not at hand.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
        >>> r = report_from_plan(result.model, result.plan, result.params_before,
        ...                      torch.zeros(1, 1, 28, 28), timing=None)
        >>> r.ratios()["params"], r.ratios()["macs"], r.layers[1]
        (0.2570116598388331, None, LayerWidth(name='conv2', kind='Conv2d', before=16, after=8))
    """
    name = name or type(after).__name__
    removed = plan.removed()
    stats_after = model_stats(after, example_inputs, timing)
    layers = tuple(LayerWidth(n, kind, width + len(removed.get((n, dim), ())), width)
                   for n, (kind, width, dim) in layer_widths(after).items())
    before = Stats(params_before, None, {}, None)
    return Report(name, _shapes(example_inputs), before, stats_after, layers, timing)


def _ratio(after: float | None, before: float | None) -> float | None:
    return None if after is None or not before else after / before


def _stats_json(stats: Stats) -> dict[str, Any]:
    return {"params": stats.params, "macs": stats.macs,
            "flops": None if stats.macs is None else 2 * stats.macs,
            "uncounted_ops": dict(stats.uncounted),
            "latency": asdict(stats.latency) if stats.latency else None}


def _shapes(example_inputs: Any) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(x.shape) for _, x in input_leaves(example_inputs))


def _notes(report: Report) -> list[str]:
    shapes = ", ".join("x".join(map(str, s)) for s in report.input_shapes)
    lines = [f"Input {shapes}. MACs counted by fvcore (one multiply-add = 1); FLOPs = 2 x MACs."]
    stats = [s for s in (report.before, report.after) if s is not None]
    lat = next((s.latency for s in stats if s.latency is not None), None)
    if lat is not None and report.timing is not None:
        lines.append(f"Latency: median (p10-p90) of {lat.runs} runs after {report.timing.warmup} "
                     f"warm-up; {lat.device}, {lat.backend}, {lat.threads} thread(s).")
    for label, s in zip(("before", "after"), stats):
        if s.uncounted:
            ops = ", ".join(f"{op} ({n})" for op, n in sorted(s.uncounted.items()))
            lines.append(f"Ops fvcore does not count ({label}; not in MACs): {ops}.")
    return lines


def _summary(report: Report) -> list[str]:
    columns = [report.before] + ([report.after] if report.after else [])
    ratios = report.ratios()
    rows = [("params", [f"{s.params:,}" for s in columns], ratios.get("params")),
            ("MACs", [_maybe(s.macs) for s in columns], ratios.get("macs")),
            ("FLOPs (2 x MACs)", [_maybe(s.macs, 2) for s in columns], ratios.get("macs")),
            ("latency ms, median (p10-p90)", [_latency(s.latency) for s in columns],
             ratios.get("latency"))]
    if report.after is None:
        return ["| | value |", "|---|---:|"] + [f"| {n} | {v[0]} |" for n, v, _ in rows]
    head = ["| | before | after | after / before |", "|---|---:|---:|---:|"]
    return head + [f"| {n} | {v[0]} | {v[1]} | {_fraction(r)} |" for n, v, r in rows]


def _layer_rows(report: Report) -> list[str]:
    if report.after is None:
        return ["| layer | type | channels |", "|---|---|---:|"] + [
            f"| {x.name} | {x.kind} | {x.before:,} |" for x in report.layers]
    return ["| layer | type | before | after | kept |", "|---|---|---:|---:|---:|"] + [
        f"| {x.name} | {x.kind} | {x.before:,} | {_maybe(x.after)} | "
        f"{_fraction(_ratio(x.after, x.before))} |" for x in report.layers]


def _maybe(n: int | None, scale: int = 1) -> str:
    return "-" if n is None else f"{scale * n:,}"


def _fraction(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}"


def _latency(lat: Latency | None) -> str:
    return "-" if lat is None else f"{lat.median_ms:.3f} ({lat.p10_ms:.3f}-{lat.p90_ms:.3f})"

"""Prune to a latency target: measured latency vs target, and MACs / params kept compared with
uniform L1 pruning that lands at the same measured latency.

Usage:
    .venv/bin/python benchmarks/latency_target.py                  # 3 models x eager/ort x 1/2 t
    .venv/bin/python benchmarks/latency_target.py --models mobilenet_v2 --backends eager \\
        --threads 1 --targets 0.7 --runs 20                         # a reduced run

Per (model, backend, threads): the dense model is timed; each target is a fraction of that
time; ``surgery.prune(..., latency=LatencyTarget(T, backend=..., threads=...))`` prunes to it (its
tables are cached under --cache-dir). Uniform L1 pruning at --uniform ratios gives the
reference curve. Then every variant (dense, latency-targeted, uniform) is timed in this one
process for --runs cycles, each variant run once per cycle in turn (``compare_latency``); a
variant's latency is its median. "uniform at equal latency" interpolates the MACs and params
kept along the uniform curve's frontier (the best uniform ratio at each latency) at the
latency-targeted model's measured latency. Load average is recorded.
Writes results/latency_target.{md,png,json} and the latency_target section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
from _common import environment_line, input_for
from _latency_rows import frontier, rescore, table
from builders import build_model
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from surgery import (
    Budget,
    LatencyTarget,
    SurgeryError,
    compare_latency,
    count_flops,
    count_params,
    prune,
)
from surgery.atomic import write_atomic, write_text

HERE = Path(__file__).resolve().parent
MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0"]
MARKERS = ("<!-- latency_target:start -->", "<!-- latency_target:end -->")


def timed(models: dict, x: torch.Tensor, backend: str, threads: int, args) -> dict:
    """Key -> median ms over --runs cycles, each model run once per cycle in turn."""
    lats = compare_latency(list(models.values()), x, runs=args.runs, warmup=args.warmup,
                           threads=threads, backend=backend)
    return {key: lat.median_ms for key, lat in zip(models, lats)}


def config(name: str, backend: str, threads: int, args) -> list[dict]:
    x = input_for(name, args.size)
    dense = build_model(name)
    macs0, params0 = count_flops(dense, x).total, count_params(dense)
    dense_ms = timed({"dense": dense}, x, backend, threads, args)["dense"]
    models, found = {"dense": dense}, {}
    for ratio in args.uniform:
        models[("uniform", ratio)] = prune(dense, x, ratio=ratio).model
        if args.round_to > 1:
            models[("rounded", ratio)] = prune(
                dense, x, budget=Budget(ratio=ratio, round_to=args.round_to)).model
    for f in args.targets:
        start = time.perf_counter()
        try:
            result = prune(dense, x, latency=LatencyTarget(f * dense_ms, backend=backend,
                                                           threads=threads,
                                                           cache_dir=args.cache_dir))
        except SurgeryError as exc:
            print(f"[{name} {backend} t{threads}] {f}: {exc}", flush=True)
            continue
        models[("target", f)] = result.model
        found[f] = (result.latency, time.perf_counter() - start)
        print(f"[{name} {backend} t{threads}] {f}: {result.latency}", flush=True)
    load = os.getloadavg()[0]
    ms = timed(models, x, backend, threads, args)
    kept = {key: (count_flops(m, x).total / macs0, count_params(m) / params0, ms[key] / ms["dense"])
            for key, m in models.items()}
    curve = sorted(kept[k] for k in models if k == "dense" or k[0] == "uniform")
    rounded = sorted(kept[k] for k in models if k == "dense" or k[0] == "rounded")
    rows = []
    for f, (search, seconds) in found.items():
        macs, params, lat = kept[("target", f)]
        rows.append(rescore({
            "model": name, "backend": backend, "threads": threads, "fraction": f,
            "target_ms": search.target_ms, "search_ms": search.measured_ms,
            "final_ms": ms[("target", f)], "dense_ms": ms["dense"],
            "gap": (ms[("target", f)] - search.target_ms) / search.target_ms,
            "search_dense_ms": search.dense_ms,
            "paired_gap": lat * search.dense_ms / search.target_ms - 1,
            "macs_kept": macs, "params_kept": params, "lat_kept": lat,
            "measurements": search.measurements, "seconds": seconds,
            "load": (load, os.getloadavg()[0]), "command": args.command,
            "uniform_ratios": args.uniform, "timing": _timing(args), "curve": curve,
            **({"round_to": args.round_to, "rounded_curve": rounded} if args.round_to > 1
               else {})}))
    return rows


def plot(rows: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys((r["model"], r["backend"], r["threads"]) for r in rows))
    fig = Figure(figsize=(4.0 * len(keys), 4.0))
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        mine = [r for r in rows if (r["model"], r["backend"], r["threads"]) == key]
        references = [("curve", "o", "C0", "uniform L1")]
        if "rounded_curve" in mine[0]:
            references.append(("rounded_curve", "^", "C1",
                               f"uniform L1, round_to {mine[0]['round_to']}"))
        for key_, marker, color, label in references:  # points, and their frontier as a line
            points, front = mine[0][key_], frontier(mine[0][key_])
            ax.plot([c[2] for c in points], [c[0] for c in points], marker, color=color,
                    alpha=0.5)
            ax.plot([c[2] for c in front], [c[0] for c in front], "-", color=color, label=label)
        ax.plot([r["lat_kept"] for r in mine], [r["macs_kept"] for r in mine], "s",
                color="C3", label="latency target")
        for r in mine:
            ax.axvline(r["target_ms"] / r["dense_ms"], color="C3", lw=0.5, ls=":")
        ax.set(title=f"{key[0]} {key[1]} {key[2]}t", xlabel="latency kept (measured)",
               ylabel="MACs kept" if i == 0 else None)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))


def report(rows: list[dict], args, seconds: float, load: str) -> str:
    return "\n".join([
        "## Pruning to a latency target (`latency_target.py`)", "",
        (f"Input 1x3x{args.size}x{args.size}, CPU; targets {args.targets} x the dense model's "
        f"measured latency; uniform L1 reference at ratios {_ratios(rows, args)}. Final latencies: "
        f"{_timings(rows, args)}, all variants of a configuration in one process. Environment: "
        f"{environment_line(1)}; {os.cpu_count()} CPUs"
        + (_commands(rows, args) if args.rows else f", load average {load}; wall "
                                                   f"{seconds:.0f}s. Command: `{args.command}`.")),
        "",
        table(rows), "",
        (f"gap = (final measured - target) / target, from the alternating final timing (the "
         "search's own last measurement is the first number). paired gap = (final / dense "
         "timed in the same cycles) x the dense time the search measured (pooled over its "
         "measurements) / target - 1: the final model's speed relative to the dense model, at "
         "the machine speed the search saw; it cancels a drift of the whole machine between the "
         "search and the final timing, and is '-' for rows timed before it was recorded. "
         "latency kept = final / dense "
         "timed in the same final timing, against the target's fraction of the dense "
         "time measured before pruning (cancels a drift of the whole machine after the search, "
         "not one before or during it). MACs gain = MACs kept by the latency-targeted model / "
         "MACs kept by uniform L1 interpolated at the same measured "
         "latency - 1 (and the same against uniform L1 with widths rounded to a multiple, "
         "when --round-to is given). dense drift = the dense model's time in the final timing "
         "/ its first timing - 1, and the same for the dense time the search pooled (the "
         "machine's own drift; the target is a fraction of the "
         f"first timing). Plot: results/{args.stem}.png."), ""])


def _timings(rows: list[dict], args) -> str:
    """How the final latencies were timed: this run's setting, or each reported run's."""
    if not args.rows:
        return _timing(args)
    return " / ".join(dict.fromkeys(r.get("timing", "median of 3 alternating rounds of 10 "
                                          "runs after 10 warm-up") for r in rows))


def _timing(args) -> str:
    return (f"median of {args.runs} cycles after {args.warmup} warm-up cycles, each variant "
            f"run once per cycle in turn")


def _ratios(rows: list[dict], args) -> str:
    """The uniform ratios of this run, or of the reported runs (rows saved before they were
    recorded had 0.1-0.6)."""
    if not args.rows:
        return str(args.uniform)
    found = dict.fromkeys(str(r.get("uniform_ratios", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
                          for r in rows)
    return " / ".join(found)


def _commands(rows: list[dict], args) -> str:
    """The runs whose rows were reported (``--rows``), each command once, and this report's
    own command; the "load" column is the 1-minute load average at the start / end of each
    configuration's timing. A run's ``--cache-dir`` is left out: it only names the folder where
    the latency tables were cached (and reused by later runs), the default one works alike."""
    runs = list(dict.fromkeys(r["command"] for r in rows if "command" in r))
    shown = list(dict.fromkeys(re.sub(r" --cache-dir \S+", "", c) for c in runs))
    note = (" (their `--cache-dir`, a folder for the cached latency tables, left out)"
            if shown != runs else "")
    made = ". Rows from: " + "; ".join(f"`{c}`" for c in shown) + note if runs else ""
    return f"{made}. This table: `{args.command}`."


def write_section(text: str) -> None:
    path = HERE / "RESULTS.md"
    old = path.read_text()
    section = f"{MARKERS[0]}\n{text}{MARKERS[1]}"
    if MARKERS[0] in old:
        head, rest = old.split(MARKERS[0], 1)
        old = head + section + rest.split(MARKERS[1], 1)[1]
    else:
        old = old.rstrip() + "\n\n" + section + "\n"
    write_text(path, old)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--targets", nargs="+", type=float, default=[0.8, 0.65, 0.5])
    p.add_argument("--uniform", nargs="+", type=float,
                   default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    p.add_argument("--round-to", type=int, default=1, help="also a uniform L1 reference with "
                   "widths rounded to multiples of this (8: the widths vendors' kernels favour)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--runs", type=int, default=30, help="timed cycles; each variant runs once "
                   "per cycle, in turn, so a drift of the machine's speed slows all alike")
    p.add_argument("--warmup", type=int, default=5, help="untimed cycles before the timed ones "
                   "(a cold first timing reads 20-30%% slow)")
    p.add_argument("--cache-dir", default=None, help="latency tables (default ~/.cache/...)")
    p.add_argument("--stem", default="latency_target", help="results/STEM.{md,png,json}")
    p.add_argument("--no-results-md", action="store_true", help="leave RESULTS.md alone")
    p.add_argument("--rows", nargs="+", metavar="JSON", help="run nothing: report the rows "
                   "saved by earlier runs (results/STEM.json files), in the order given")
    args = p.parse_args(argv)
    args.command = "benchmarks/latency_target.py " + " ".join(argv or sys.argv[1:])
    load0, start, out = os.getloadavg()[0], time.perf_counter(), HERE / "results"
    rows = [rescore(r) for path in args.rows or () for r in json.loads(Path(path).read_text())]
    for name in [] if args.rows else args.models:
        for backend in args.backends:
            for t in args.threads:
                rows += config(name, backend, t, args)
                # saved after every configuration: a run stopped half-way keeps its rows
                write_text(out / f"{args.stem}.json", json.dumps(rows, indent=1) + "\n")
    seconds = time.perf_counter() - start
    text = report(rows, args, seconds, f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    if rows:
        plot(rows, out / f"{args.stem}.png")
    write_text(out / f"{args.stem}.md", text)
    write_text(out / f"{args.stem}.json", json.dumps(rows, indent=1) + "\n")
    if not args.no_results_md:
        write_section(text)
    print(text)


if __name__ == "__main__":
    main()

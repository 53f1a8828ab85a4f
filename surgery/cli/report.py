"""``surgery report MODEL [--pruned DIR]``: params, MACs, latency before/after; per-layer table.

Writes report.json, report.md and report.png into --out (default: DIR with --pruned, else
./report) and prints the markdown. Without --pruned the single model is reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from surgery.cli.common import (
    add_force_argument,
    add_model_arguments,
    check_out_folder,
    model_and_input,
    prepare_out_folder,
)
from surgery.cli.export import recorded_shape
from surgery.io.saving import load, read_plan
from surgery.measure.latency import BACKENDS
from surgery.measure.report import Timing, build_report

HELP = "measure params, MACs and latency of a model, before/after pruning with --pruned DIR"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--pruned", metavar="DIR", help="folder written by `surgery prune --out`")
    p.add_argument("--out", metavar="DIR", help="report folder (default: DIR, else ./report)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", type=int, help="torch threads while timing (default: as is)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--backend", default="eager", choices=BACKENDS)
    p.add_argument("--no-latency", action="store_true", help="count only: skip the timing")
    p.add_argument("--no-plot", action="store_true", help="do not write report.png")
    add_force_argument(p)


REPORT_FILES = ("report.json", "report.md", "report.png")


def run(args: argparse.Namespace) -> None:
    out = Path(args.out or args.pruned or "report")
    if not (args.pruned and out.resolve() == Path(args.pruned).resolve()):  # else: our folder
        check_out_folder(str(out), args.force)
    if args.pruned and not args.input_shape and Path(args.pruned).is_dir():  # as pruned
        _, data = read_plan(args.pruned)
        if "input_shape" in data:
            args.input_shape = ",".join(str(s) for s in recorded_shape(data, ()))
    model, x = model_and_input(args)
    pruned = None
    if args.pruned:
        pruned = load(args.pruned, model).eval()
    timing = None if args.no_latency else Timing(
        args.runs, args.warmup, args.threads, args.device, args.backend, progress=True)
    report = build_report(model, x, pruned, name=args.model, timing=timing)
    paths = report.write(prepare_out_folder(out, REPORT_FILES), plot=not args.no_plot)
    print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))

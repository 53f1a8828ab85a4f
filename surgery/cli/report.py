"""``surgery report MODEL [--pruned DIR]``: params, MACs, latency before/after; per-layer table.

Writes report.json, report.md and report.png into --out (default: DIR with --pruned, else
./report) and prints the markdown. Without --pruned the single model is reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from surgery.cli.common import (
    BACKENDS,
    CPUS,
    add_model_arguments,
    add_run_arguments,
    check_output,
    integer,
    model_and_input,
    progress_bars,
)
from surgery.cli.folder import recorded_num_classes, recorded_shape
from surgery.cli.outputs import (
    add_force_argument,
    check_out_folder,
    check_writable,
    prepare_out_folder,
)
from surgery.errors import SurgeryError

HELP = "measure params, MACs and latency of a model, before/after pruning with --pruned DIR"
DESCRIPTION = """\
Measure a model's parameters, MACs (multiply-adds, counted by fvcore with formulas for
attention added) and latency; with --pruned DIR, the model before and after pruning side by
side, with after/before ratios and channels per layer. Writes report.md, report.json and
report.png (channels per layer, dense vs pruned) and prints the markdown.

Latency is timed with one thread by default, so that other processes disturb it less; a
warning is printed when the runs were unsteady (p90/p10 over 1.5)."""
EPILOG = """\
examples:
  surgery prune resnet18 --ratio 0.3 --out out/r18
  surgery report resnet18 --pruned out/r18               # writes out/r18/report.*
  surgery report timm:convnext_atto --no-latency --out report_convnext
  surgery report resnet18 --pruned out/r18 --threads 4 --runs 100 --device cuda
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--pruned", metavar="DIR", help="folder written by `surgery prune --out` "
                   "(default: report MODEL alone)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: DIR, else ./report)")
    p.add_argument("--runs", type=integer(1, 100_000), default=50,
                   help="timed runs per model (default 50)")
    p.add_argument("--warmup", type=integer(0, 100_000), default=10,
                   help="untimed runs first (default 10)")
    p.add_argument("--threads", type=integer(0, CPUS), default=1,
                   help=f"torch threads while timing, 1 to {CPUS} (0: leave torch's setting)")
    p.add_argument("--backend", default="eager", choices=BACKENDS,
                   help="how the model runs while timed")
    p.add_argument("--no-latency", action="store_true", help="count only: skip the timing")
    p.add_argument("--no-plot", action="store_true", help="do not write report.png")
    add_force_argument(p)
    add_run_arguments(p)


REPORT_FILES = ("report.json", "report.md", "report.png")


def run(args: argparse.Namespace) -> None:
    from surgery.io.saving import load, read_plan_data
    from surgery.measure.report import Timing, build_report

    if args.pruned and not Path(args.pruned).is_dir():
        raise SurgeryError(f"--pruned {args.pruned} is not a folder (one written by surgery "
                           f"prune --out)")
    out = Path(args.out or args.pruned or "report")
    if args.pruned and out.resolve() == Path(args.pruned).resolve():  # our folder
        check_writable(out, out)
    else:
        check_out_folder(str(out), args.force)
    data = read_plan_data(args.pruned) if args.pruned else {}
    if args.num_classes is None:
        args.num_classes = recorded_num_classes(data)
    recorded = recorded_shape(data, ()) if "input_shape" in data else None
    model, x = model_and_input(args, recorded, f"{args.pruned}/plan.json")
    check_output(model, x, args.model)
    pruned = None
    if args.pruned:  # the same input as the dense model: a tampered layer fails here
        pruned = load(args.pruned, model, example_inputs=x).eval().to(x.device)
    timing = None if args.no_latency else Timing(
        args.runs, args.warmup, args.threads or None, args.device, args.backend,
        progress=progress_bars(args))
    report = build_report(model, x, pruned, name=args.model, timing=timing)
    paths = report.write(prepare_out_folder(out, REPORT_FILES), plot=not args.no_plot)
    print(report.to_markdown(warnings=False))  # results, --quiet or not; the warnings below
    for warning in report.warnings():
        print(f"warning: {warning.removeprefix('**Warning**: ')}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths.values()))

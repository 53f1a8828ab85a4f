"""Where prune() spends its time: wall time (median of repeats) and a cProfile stage breakdown.

Usage:
    .venv/bin/python benchmarks/profile_prune.py                  # resnet50, mobilenet_v2, lenet
    .venv/bin/python benchmarks/profile_prune.py --models resnet50 --top 30  # + cProfile top 30

Runs with torch.set_num_threads(--threads, default 1), ratio 0.5, L1, in place on a fresh copy
(the deepcopy is not timed, as in vs_torch_pruning.py). Stages are cProfile cumulative times of
the functions named in STAGES (profiling overhead included, so they add up to more than the wall
time; read them as shares).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import sys
import time

import torch
from _common import input_for, median_seconds
from builders import build_model

from surgery import prune

# (label, file suffix, function name): cumulative time of each in the profile.
STAGES = [
    ("prune total", "surgery/prune.py", "prune"),
    ("  trace", "graphs/trace.py", "trace"),
    ("    capture (the forward)", "graphs/capture.py", "capture"),
    ("    coupling rules", "graphs/trace.py", "run_rule"),
    ("    grouping", "graphs/grouping.py", "build_groups_and_sites"),
    ("  scoring", "surgery/plan/importance.py", "scores"),
    ("  planning", "surgery/plan/plan.py", "plan_group"),
    ("  rebuild layers", "surgery/rebuild/apply.py", "apply_plan"),
    ("  lint", "surgery/rebuild/lint.py", "lint"),
]


def stage_times(stats: pstats.Stats) -> list[tuple[str, float]]:
    found = []
    for label, suffix, func in STAGES:
        total = sum(row[3] for (path, _, name), row in stats.stats.items()
                    if name == func and path.endswith(suffix))
        found.append((label, total))
    return found


def profile_model(name: str, size: int, repeats: int, top: int) -> None:
    model, x = build_model(name), input_for(name, size)

    def run(m):
        return prune(m, x, ratio=0.5, importance="l1", inplace=True)

    secs, _ = median_seconds(run, repeats, setup=lambda: copy.deepcopy(model))
    profiler = cProfile.Profile()
    target = copy.deepcopy(model)
    profiler.enable()
    run(target)
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"\n## {name} {tuple(x.shape)}: prune wall time {secs:.3f}s (median of {repeats})")
    for label, total in stage_times(stats):
        print(f"{label:<26} {total:8.3f}s")
    if top:
        stats.sort_stats("cumulative").print_stats(top)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2", "lenet"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=0, help="also print the cProfile top N")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    for name in args.models:
        profile_model(name, args.size, args.repeats, args.top)
    print(f"\ntotal {time.perf_counter() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()

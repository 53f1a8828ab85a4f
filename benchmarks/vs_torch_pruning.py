"""Head-to-head with torch-pruning: prune time, params/MACs kept, CPU latency kept, exactness.

Usage:
    .venv/bin/python benchmarks/vs_torch_pruning.py            # 224x224, ~3-5 min on 2 cores
    .venv/bin/python benchmarks/vs_torch_pruning.py --quick    # 64x64, fewer repeats (~1 min)
    .venv/bin/python benchmarks/vs_torch_pruning.py --accuracy # + LeNet/MNIST fine-tune accuracy

Both tools run in this one process with torch.set_num_threads fixed (--threads, default 1),
after one untimed warm-up of each (first calls pay imports and lazy initialisation). Prune
repeats alternate ours / torch-pruning, each on a fresh deepcopy made outside the timed region;
latency rounds alternate original / ours / torch-pruning; so a drifting load hits both alike.
Writes benchmarks/results/vs_torch_pruning[_quick].md; a full run of all models also rewrites
its marked section of benchmarks/RESULTS.md and README.md (--no-publish to skip).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch_pruning as tp
from _common import (
    environment_line,
    input_for,
    last_linear,
    markdown_table,
    short_error,
    write_marked_section,
)
from builders import build_model

from graphs import trace
from surgery import count_params, prune
from surgery.atomic import write_text
from surgery.measure.flops import count_flops
from surgery.measure.latency import measure_latency
from surgery.testing.oracle import kill_channels, randomize_norms, relative_error

HERE = Path(__file__).resolve().parent

MODELS = ["lenet", "resnet18", "resnet50", "mobilenet_v2", "densenet121", "efficientnet_b0"]
GOALS = {"resnet50": 0.5, "densenet121": 0.5}  # issue 7: ours/tp prune time at most this
EXACT_TOL = 1e-4


def ours_prune(model, x, ratio):
    # The copy is made (untimed) by the caller, so prune in place: neither tool's timing
    # includes a deepcopy of the model.
    return prune(model, x, ratio=ratio, importance="l1", inplace=True).model


def tp_prune(model, x, ratio):
    pruner = tp.pruner.MagnitudePruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=[last_linear(model)])  # builds the DependencyGraph: timed
    pruner.step()
    return model


TOOLS = {"ours": ours_prune, "tp": tp_prune}


def exactness(tool, model, x, ratio):
    """Kill floor(ratio*C) random channels per group, prune with ``tool``, compare outputs.

    For torch-pruning this only passes when it removes no more than the killed channels of
    each of our groups (its per-group count is C - int(C*(1-ratio)): odd C loses a live one).
    """
    m = randomize_norms(copy.deepcopy(model))
    dead = kill_channels(m, trace(m, x), ratio)
    with torch.no_grad():
        expected = m(x)
    if tool == "ours":
        result = prune(m, x, ratio=ratio)
        pruned, same = result.model, {g.group: g.removed_channels
                                      for g in result.plan.groups} == dead
    else:
        pruned, same = tp_prune(m, x, ratio), True
    with torch.no_grad():
        err = relative_error(pruned(x), expected)
    tag = "yes" if err <= EXACT_TOL and same else ("NO (removed != killed)" if not same else "no")
    return f"{tag}, rel err {err:.1e}"


def time_prunes(model, x, args, row):
    """Alternate the tools ``args.repeats`` times; record median seconds, keep the last models."""
    times, pruned = {t: [] for t in TOOLS}, {}
    for _ in range(args.repeats):
        for tool, fn in TOOLS.items():
            if row.get(f"{tool}_error"):
                continue
            m = copy.deepcopy(model)
            t0 = time.perf_counter()
            try:
                pruned[tool] = fn(m, x, args.ratio)
            except Exception as exc:  # noqa: BLE001 - record, never crash the whole run
                row[f"{tool}_error"] = f"ERROR {short_error(exc)}"
                continue
            times[tool].append(time.perf_counter() - t0)
    for tool in TOOLS:
        row[f"{tool}_time"] = statistics.median(times[tool]) if times[tool] else None
    return pruned


def time_latency(models, x, args):
    """Median over ``args.rounds`` alternating rounds of each model's median latency (ms)."""
    rounds = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            rounds[name].append(measure_latency(m, x, runs=args.runs, warmup=args.warmup,
                                                threads=args.threads).median_ms)
    return {name: statistics.median(v) for name, v in rounds.items()}


def bench_model(name, args):
    x, model = input_for(name, args.size), build_model(name)
    row = {"model": name, "input": "x".join(map(str, x.shape)),
           "params0": count_params(model), "macs0": count_flops(model, x).total}
    say(f"[{name}] timing {args.repeats} prunes per tool")
    pruned = time_prunes(model, x, args, row)
    if len(pruned) == len(TOOLS):
        shapes = [{n: tuple(t.shape) for n, t in m.state_dict().items()} for m in pruned.values()]
        row["same_shapes"] = all(s == shapes[0] for s in shapes)
    for tool, m in pruned.items():
        row[f"{tool}_params"] = count_params(m) / row["params0"]
        row[f"{tool}_macs"] = count_flops(m, x).total / row["macs0"]
    say(f"[{name}] latency, {args.rounds} rounds")
    lat = time_latency({"original": model, **pruned}, x, args)
    row["lat0"] = lat["original"]
    for tool in pruned:
        row[f"{tool}_lat"] = lat[tool] / lat["original"]
    for tool in TOOLS:
        if args.no_exact or row.get(f"{tool}_error"):
            row[f"{tool}_exact"] = "skipped" if args.no_exact else "-"
            continue
        say(f"[{name}] exactness oracle, {tool}")
        try:
            row[f"{tool}_exact"] = exactness(tool, model, x, args.ratio)
        except Exception as exc:  # noqa: BLE001 - record, never crash the whole run
            row[f"{tool}_exact"] = f"ERROR {short_error(exc)}"
    return row


def say(text):
    print(text, file=sys.stderr, flush=True)


def to_cells(row):
    def pair(key, fmt="{:.3f}"):
        return " / ".join(row[f"{t}_error"][:60] if row.get(f"{t}_error") else
                          fmt.format(row[f"{t}_{key}"]) for t in TOOLS)

    o, t = row.get("ours_time"), row.get("tp_time")
    ratio = f"**{o / t:.2f}x**" if o is not None and t else "-"
    fewer = "-" if "ours_macs" not in row or "tp_macs" not in row else \
        ("yes" if row["ours_macs"] <= row["tp_macs"] + 1e-9 else "no")
    return [row["model"], row["input"], f"{row['params0'] / 1e6:.2f}M",
            f"{row['macs0'] / 1e6:.1f}M", f"{row['lat0']:.2f}",
            pair("time"), ratio, pair("params"), pair("macs"), fewer, pair("lat"),
            row["ours_exact"], row["tp_exact"]]


HEADER = ["model", "input", "params", "MACs", "latency ms", "prune s (ours / tp)",
          "time ours/tp", "params kept (ours / tp)", "MACs kept (ours / tp)",
          "MACs ours <= tp", "latency kept (ours / tp)", "exact ours", "exact tp (oracle)"]

NOTES = """\
Kept = after / before (lower is more compression; latency kept < 1 is a speed-up).
time ours/tp < 1 means ours prunes faster (trace + score + plan + rebuild + lint, in place on a
fresh copy; torch-pruning: DependencyGraph build + MagnitudePruner.step()).
Ours removes floor(ratio*C) channels of every prunable group; torch-pruning removes
C - int(C*(1-ratio)) (it rounds the removal up), and leaves the final classifier Linear
ignored, which we never prune either (its outputs are the model output). So at equal ratio
the MACs can differ only through groups of odd size, where torch-pruning removes one more.
exact tp (oracle): our kill_channels oracle applied to torch-pruning; 'no' is expected
whenever it removes more channels than were killed, so it is not a correctness verdict."""


def goal_lines(rows, size):
    note = "" if size == 224 else f" (the goal is stated for 224x224; this run used {size})"
    lines = []
    for row in rows:
        goal, o, t = GOALS.get(row["model"]), row.get("ours_time"), row.get("tp_time")
        if goal and o is not None and t:
            verdict = "met" if o / t <= goal else "NOT met"
            lines.append(f"- {row['model']}: ours/tp prune time {o / t:.2f}x "
                         f"(goal <= {goal}x): {verdict}{note}.")
    faster = sum(1 for r in rows if r.get("ours_time") is not None and r.get("tp_time")
                 and r["ours_time"] < r["tp_time"])
    fewer = sum(1 for r in rows if "ours_macs" in r and "tp_macs" in r
                and r["ours_macs"] <= r["tp_macs"] + 1e-9)
    same = [r["model"] for r in rows if r.get("same_shapes")]
    lines.append(f"- ours prunes faster on {faster} of {len(rows)} models; "
                 f"same or fewer MACs kept on {fewer} of {len(rows)}.")
    lines.append(f"- both tools give identical layer shapes on {len(same)} of {len(rows)} models "
                 f"({', '.join(same) or 'none'}): there, latency kept can differ only by timing "
                 "noise.")
    return lines


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64x64 inputs, fewer repeats (~1 min)")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--size", type=int, default=None, help="input side (default 224, quick 64)")
    p.add_argument("--repeats", type=int, default=None, help="prune repeats (default 5, quick 3)")
    p.add_argument("--runs", type=int, default=None, help="latency runs (default 10, quick 5)")
    p.add_argument("--rounds", type=int, default=None, help="latency rounds (default 3, quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="latency warm-up (default 2, quick 1)")
    p.add_argument("--no-exact", action="store_true", help="skip the exactness oracle")
    p.add_argument("--no-publish", action="store_true",
                   help="do not update benchmarks/RESULTS.md and README.md")
    p.add_argument("--accuracy", action="store_true",
                   help="also compare accuracy after an equal fine-tune (LeNet, MNIST subset)")
    p.add_argument("--out", default=None, help="default results/vs_torch_pruning[_quick].md")
    args = p.parse_args(argv)
    q = args.quick
    args.size = args.size or (64 if q else 224)
    args.repeats = args.repeats or (3 if q else 5)
    args.runs = args.runs or (5 if q else 10)
    args.rounds = args.rounds or (2 if q else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    name = "vs_torch_pruning_quick.md" if q else "vs_torch_pruning.md"
    args.out = Path(args.out) if args.out else HERE / "results" / name
    args.publish = not (q or args.no_publish or set(args.models) != set(MODELS))
    return args


def warm_up(ratio):
    """One untimed prune per tool: the first call in a process pays imports and lazy init."""
    x, model = input_for("lenet", 28), build_model("lenet")
    for fn in TOOLS.values():
        fn(copy.deepcopy(model), x, ratio)


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    start, load = time.perf_counter(), os.getloadavg()[0]  # a busy machine shows up here
    warm_up(args.ratio)
    rows = []
    for name in args.models:
        t0 = time.perf_counter()
        rows.append(bench_model(name, args))
        say(f"[{name}] done in {time.perf_counter() - t0:.1f}s")
    head = [f"## surgery vs torch-pruning{' (quick)' if args.quick else ''}", "",
            (f"ratio {args.ratio}, L1 magnitude in both tools, input side {args.size} (LeNet 28). "
            f"Prune time: median of {args.repeats} alternating repeats; latency: median of "
            f"{args.rounds} alternating rounds, each the median of {args.runs} runs after "
            f"{args.warmup} warm-up (CPU, eager)."),
            (f"Environment: {environment_line(args.threads)}; {os.cpu_count()} cores, 1-minute "
            f"load average {load:.1f} at start; total wall time "
            f"{time.perf_counter() - start:.0f}s."), "",
            markdown_table(HEADER, [to_cells(r) for r in rows]), "",
            *goal_lines(rows, args.size), ""]
    section = "\n".join(head + [NOTES, ""])
    if args.accuracy:
        from _accuracy_vs_tp import accuracy_section

        section += "\n" + accuracy_section(TOOLS, args.ratio) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, section.replace("## surgery", "# surgery", 1))
    if args.publish:
        write_marked_section(HERE / "RESULTS.md", "vs_torch_pruning", section,
                             new_file="# Benchmark results\n\nEach section is written by the "
                             "script it names; rerun the script to refresh it.\n")
        readme = "\n".join(head).replace("## surgery", "## Speed: surgery", 1)
        write_marked_section(HERE.parent / "README.md", "vs_torch_pruning",
                             readme + "\nWritten by `benchmarks/vs_torch_pruning.py`; notes on "
                             "rounding and the oracle in benchmarks/RESULTS.md.\n",
                             before_heading="## Layout")
        say("updated benchmarks/RESULTS.md and README.md")
    print(section)


if __name__ == "__main__":
    main()

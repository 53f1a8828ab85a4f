"""Head-to-head with torch-pruning: prune time, params/MACs kept, CPU latency kept, exactness.

Usage:
    .venv/bin/python benchmarks/vs_torch_pruning.py            # 224x224, ~several minutes
    .venv/bin/python benchmarks/vs_torch_pruning.py --quick    # 64x64, fewer repeats (~1 min)

Both tools run in this one process with torch.set_num_threads fixed (--threads, default 1).
Writes benchmarks/results/vs_torch_pruning.md and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch_pruning as tp  # noqa: E402

from _common import (build_model, environment_line, input_for, last_linear,  # noqa: E402
                     markdown_table, median_seconds, short_error)
from graphs import trace  # noqa: E402
from surgery import count_params, prune  # noqa: E402
from surgery.flops import count_flops  # noqa: E402
from surgery.latency import measure_latency  # noqa: E402
from surgery.oracle import kill_channels, randomize_norms, relative_error  # noqa: E402

MODELS = ["lenet", "resnet18", "resnet50", "mobilenet_v2", "densenet121", "efficientnet_b0"]
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


def ours_exactness(model, x, ratio):
    """Kill floor(ratio*C) random channels per group, prune, compare outputs."""
    m = randomize_norms(copy.deepcopy(model))
    dead = kill_channels(m, trace(m, x), ratio)
    with torch.no_grad():
        expected = m(x)
    result = prune(m, x, ratio=ratio)
    removed = {g.group: g.removed_channels for g in result.plan.groups}
    with torch.no_grad():
        err = relative_error(result.model(x), expected)
    ok = err <= EXACT_TOL and removed == dead
    tag = "yes" if ok else ("NO (removed != killed)" if removed != dead else "NO")
    return f"{tag}, rel err {err:.1e}"


def tp_exactness(model, x, ratio):
    """Same oracle for torch-pruning: only meaningful when it removes no more than the killed
    channels of each of our groups (its per-group count is C - int(C*(1-ratio)), so odd C
    loses one live channel)."""
    m = randomize_norms(copy.deepcopy(model))
    kill_channels(m, trace(m, x), ratio)
    with torch.no_grad():
        expected = m(x)
    tp_prune(m, x, ratio)
    with torch.no_grad():
        err = relative_error(m(x), expected)
    return f"{'yes' if err <= EXACT_TOL else 'no'}, rel err {err:.1e}"


def kept(after, before):
    return f"{after / before:.3f}" if before else "n/a"


def bench_model(name, args):
    x = input_for(name, args.size)
    model = build_model(name)
    row = {"model": name, "input": "x".join(map(str, x.shape))}
    params0 = count_params(model)
    macs0 = count_flops(model, x).total
    lat0 = measure_latency(model, x, runs=args.runs, warmup=args.warmup,
                           threads=args.threads).median_ms
    row.update(params=f"{params0 / 1e6:.2f}M", macs=f"{macs0 / 1e6:.1f}M", lat=f"{lat0:.2f}")

    for tool, fn, exact in (("ours", ours_prune, ours_exactness), ("tp", tp_prune, tp_exactness)):
        try:
            secs, pruned = median_seconds(lambda m: fn(m, x, args.ratio), args.repeats,
                                          setup=lambda: copy.deepcopy(model))
            with torch.no_grad():
                pruned(x)
            row[f"{tool}_time"] = secs
            row[f"{tool}_params"] = kept(count_params(pruned), params0)
            row[f"{tool}_macs"] = kept(count_flops(pruned, x).total, macs0)
            lat = measure_latency(pruned, x, runs=args.runs, warmup=args.warmup,
                                  threads=args.threads).median_ms
            row[f"{tool}_lat"] = kept(lat, lat0)
        except Exception as exc:  # record, never crash the whole run
            row[f"{tool}_time"] = None
            err = f"ERROR {short_error(exc)}"
            for key in ("params", "macs", "lat"):
                row[f"{tool}_{key}"] = err if key == "params" else "-"
        if args.no_exact:
            row[f"{tool}_exact"] = "skipped"
        else:
            try:
                row[f"{tool}_exact"] = exact(model, x, args.ratio)
            except Exception as exc:
                row[f"{tool}_exact"] = f"ERROR {short_error(exc)}"
    return row


def to_cells(row):
    def secs(v):
        return "-" if v is None else f"{v:.3f}"

    o, t = row["ours_time"], row["tp_time"]
    ratio = f"{o / t:.2f}x" if o is not None and t else "-"
    return [row["model"], row["input"], row["params"], row["macs"], row["lat"],
            secs(o), secs(t), ratio,
            row["ours_params"], row["tp_params"], row["ours_macs"], row["tp_macs"],
            row["ours_lat"], row["tp_lat"], row["ours_exact"], row["tp_exact"]]


HEADER = ["model", "input", "params", "MACs", "latency ms",
          "ours prune s", "tp prune s", "time ours/tp",
          "params kept ours", "params kept tp", "MACs kept ours", "MACs kept tp",
          "latency kept ours", "latency kept tp", "exact ours", "exact tp (oracle)"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64x64 inputs, fewer repeats (~1 min)")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--size", type=int, default=None, help="input side (default 224, quick 64)")
    p.add_argument("--repeats", type=int, default=None, help="prune repeats (default 5, quick 1)")
    p.add_argument("--runs", type=int, default=None, help="latency runs (default 20, quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="latency warm-up (default 3, quick 1)")
    p.add_argument("--no-exact", action="store_true", help="skip the exactness oracle")
    p.add_argument("--out", default=str(HERE / "results" / "vs_torch_pruning.md"))
    args = p.parse_args(argv)
    q = args.quick
    args.size = args.size or (64 if q else 224)
    args.repeats = args.repeats or (1 if q else 5)
    args.runs = args.runs or (5 if q else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 3)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    rows = []
    for name in args.models:
        t0 = time.perf_counter()
        rows.append(bench_model(name, args))
        print(f"[{name}] done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

    table = markdown_table(HEADER, [to_cells(r) for r in rows])
    text = "\n".join([
        "# surgery vs torch-pruning" + (" (quick)" if q else ""), "",
        f"ratio {args.ratio}, L1 magnitude in both tools, input side {args.size} "
        f"(LeNet 28), prune time = median of {args.repeats}, latency = median of "
        f"{args.runs} runs after {args.warmup} warm-up (CPU, eager).",
        f"Environment: {environment_line(args.threads)}.",
        f"Total wall time {time.perf_counter() - start:.0f}s.", "",
        table, "",
        "Kept = after / before (lower is more compression; latency kept < 1 is a speed-up).",
        "time ours/tp < 1 means ours prunes faster. Ours removes floor(ratio*C) channels of every",
        "prunable group; torch-pruning removes C - int(C*(1-ratio)) per group (round up) and "
        "leaves the final classifier Linear ignored.",
        "exact tp (oracle): our kill_channels oracle applied to torch-pruning; 'no' is expected",
        "whenever it removes more channels than were killed, so it is not a correctness verdict.",
        "",
    ])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

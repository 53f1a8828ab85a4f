"""Does removing MACs buy CPU latency? Sweep pruning ratio and round_to, plot MACs kept vs
latency kept (ideal: y = x).

Usage:
    .venv/bin/python benchmarks/latency.py            # resnet18, resnet50, mobilenet_v2 at 224
    .venv/bin/python benchmarks/latency.py --quick    # resnet18 at 64, fewer runs (~1 min)

Writes benchmarks/results/latency.md and benchmarks/results/latency.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from _common import (build_model, environment_line, input_for, markdown_table,  # noqa: E402
                     short_error)
from surgery import count_params, prune  # noqa: E402
from surgery.flops import count_flops  # noqa: E402
from surgery.latency import measure_latency  # noqa: E402

MODELS = ["resnet18", "resnet50", "mobilenet_v2"]
RATIOS = [0.0, 0.25, 0.5, 0.75]
ROUND_TOS = [1, 8]


def sweep(name, args):
    x = input_for(name, args.size)
    model = build_model(name)
    params0, macs0 = count_params(model), count_flops(model, x).total
    lat0 = measure_latency(model, x, runs=args.runs, warmup=args.warmup,
                           threads=args.threads).median_ms
    rows = []
    for round_to in args.round_to:
        for ratio in args.ratios:
            row = dict(model=name, round_to=round_to, ratio=ratio, lat0=lat0)
            try:
                pruned = prune(model, x, ratio=ratio, round_to=round_to).model
                lat = measure_latency(pruned, x, runs=args.runs, warmup=args.warmup,
                                      threads=args.threads).median_ms
                row.update(params=count_params(pruned) / params0,
                           macs=count_flops(pruned, x).total / macs0, lat_ms=lat, lat=lat / lat0)
            except Exception as exc:  # record, never crash the sweep
                row["error"] = short_error(exc)
            rows.append(row)
            print(f"[{name}] round_to={round_to} ratio={ratio}: "
                  + (row.get("error") or f"MACs kept {row['macs']:.3f}, "
                     f"latency kept {row['lat']:.3f}"), file=sys.stderr, flush=True)
    return rows


def plot(rows, path, title):
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.plot([0, 1.05], [0, 1.05], "k--", lw=1, label="ideal (y = x)")
    markers = {1: "o", 8: "s"}
    styles = {1: "-", 8: ":"}
    colors = {}
    for row in rows:
        colors.setdefault(row["model"], f"C{len(colors)}")
    for model, color in colors.items():
        for round_to in sorted({r["round_to"] for r in rows}):
            pts = sorted((r["macs"], r["lat"]) for r in rows
                         if r["model"] == model and r["round_to"] == round_to and "error" not in r)
            if pts:
                ax.plot(*zip(*pts), styles.get(round_to, "-"), marker=markers.get(round_to, "^"),
                        color=color, label=f"{model}, round_to={round_to}")
    ax.set_xlabel("MACs kept (pruned / original)")
    ax.set_ylabel("CPU latency kept (pruned / original, median)")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0, max([1.05] + [r["lat"] * 1.05 for r in rows if "lat" in r]))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="resnet18 at 64x64, fewer runs (~1 min)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--models", nargs="+", default=None, choices=MODELS)
    p.add_argument("--ratios", nargs="+", type=float, default=RATIOS)
    p.add_argument("--round-to", nargs="+", type=int, default=ROUND_TOS)
    p.add_argument("--size", type=int, default=None, help="input side (default 224, quick 64)")
    p.add_argument("--runs", type=int, default=None, help="latency runs (default 15, quick 10)")
    p.add_argument("--warmup", type=int, default=None, help="latency warm-up (default 3, quick 2)")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    args = p.parse_args(argv)
    q = args.quick
    args.models = args.models or (["resnet18"] if q else MODELS)
    args.size = args.size or (64 if q else 224)
    args.runs = args.runs or (10 if q else 15)
    args.warmup = args.warmup if args.warmup is not None else (2 if q else 3)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    rows = [r for name in args.models for r in sweep(name, args)]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = (f"1x3x{args.size}x{args.size}, CPU eager, {args.threads} thread(s), "
             f"median of {args.runs} runs")
    plot(rows, out / "latency.png", title)

    cells = []
    for r in rows:
        if "error" in r:
            cells.append([r["model"], r["round_to"], r["ratio"], f"ERROR {r['error']}",
                          "-", "-", "-", "-"])
        else:
            eff = (1 - r["lat"]) / (1 - r["macs"]) if r["macs"] < 0.999 else float("nan")
            cells.append([r["model"], r["round_to"], r["ratio"], f"{r['params']:.3f}",
                          f"{r['macs']:.3f}", f"{r['lat_ms']:.2f} / {r['lat0']:.2f}",
                          f"{r['lat']:.3f}", "-" if eff != eff else f"{eff:.2f}"])
    table = markdown_table(["model", "round_to", "ratio", "params kept", "MACs kept",
                            "latency ms (pruned / orig)", "latency kept",
                            "speed-up efficiency"], cells)
    text = "\n".join([
        "# MACs kept vs CPU latency kept" + (" (quick)" if q else ""), "",
        f"Input 1x3x{args.size}x{args.size}; latency = median of {args.runs} runs after "
        f"{args.warmup} warm-up, CPU eager. Environment: {environment_line(args.threads)}.",
        f"Total wall time {time.perf_counter() - start:.0f}s. Plot: latency.png.", "",
        table, "",
        "speed-up efficiency = (1 - latency kept) / (1 - MACs kept): 1.0 means latency falls",
        "exactly as fast as MACs, < 1 means the removed MACs bought less time than their share.",
        "The original is re-measured once per model; ratio 0 rows show measurement noise.", "",
    ])
    (out / "latency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

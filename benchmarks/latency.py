"""Does removing MACs buy latency? Sweep pruning ratio x round_to on ResNet-18/50 and
MobileNetV2; tabulate and plot latency kept against MACs kept (ideal: y = x).

Usage:
    .venv/bin/python benchmarks/latency.py            # 224x224, 4 ratios x round_to 1/8
    .venv/bin/python benchmarks/latency.py --quick    # 64x64, 3 ratios, fewer runs (~1-2 min)

Timing is interleaved: in each of --rounds rounds every variant of a model (the original and
each pruned one) is timed run by run in turn with compare_latency (--runs cycles after
--warmup, each variant once per cycle), and a variant's latency is the median of its round
medians, so drifts of a shared machine hit all variants alike. Writes
results/latency.{md,png,json} (--quick: results/latency_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from _common import (
    environment_line,
    input_for,
    markdown_table,
    short_error,
)
from builders import build_model
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from graphs.errors import TraceError
from surgery import (
    Budget,
    SurgeryError,
    compare_latency,
    count_flops,
    count_params,
    prune,
)
from surgery.atomic import write_atomic, write_text

HERE = Path(__file__).resolve().parent
MODELS = ["resnet18", "resnet50", "mobilenet_v2"]
# 0.3 and 0.7 leave kept counts that are not multiples of 8 (64 -> 45 / 20), so round_to=8
# changes the architecture there; at 0.5 ResNet widths stay multiples of 8 either way.
RATIOS = [0.0, 0.3, 0.5, 0.7]
QUICK_RATIOS = [0.0, 0.3, 0.7]
ROUND_TOS = [1, 8]


def variants(name: str, x: torch.Tensor, args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """The original and every pruned variant of one model, with params/MACs kept per point."""
    model = build_model(name)
    params0, macs0 = count_params(model), count_flops(model, x).total
    models, rows = {"original": model}, []
    for round_to in args.round_to:
        for ratio in args.ratios:
            row = {"model": name, "round_to": round_to, "ratio": ratio,
                   "params0": params0, "macs0": macs0}
            try:
                pruned = prune(model, x, budget=Budget(ratio=ratio, round_to=round_to)).model
            except (SurgeryError, TraceError) as exc:  # recorded in the table, sweep goes on
                row["error"] = short_error(exc)
            else:
                models[(round_to, ratio)] = pruned
                row.update(params=count_params(pruned), macs=count_flops(pruned, x).total)
            rows.append(row)
    return models, rows


def time_interleaved(models: dict, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """Key -> (median of round medians, spread of round medians) in ms."""
    medians: dict = {key: [] for key in models}
    for _ in range(args.rounds):
        lats = compare_latency(list(models.values()), x, args.device, runs=args.runs,
                               warmup=args.warmup, threads=args.threads)
        for key, lat in zip(models, lats):
            medians[key].append(lat.median_ms)
    return {key: (statistics.median(v), max(v) - min(v)) for key, v in medians.items()}


def sweep(name: str, args: argparse.Namespace) -> list[dict]:
    x = input_for(name, args.size)
    models, rows = variants(name, x, args)
    times = time_interleaved(models, x, args)
    lat0, spread0 = times["original"]
    for row in rows:
        if "error" not in row:
            lat, spread = times[(row["round_to"], row["ratio"])]
            row.update(lat0_ms=lat0, spread0_ms=spread0, lat_ms=lat, spread_ms=spread,
                       params_kept=row["params"] / row["params0"],
                       macs_kept=row["macs"] / row["macs0"], lat_kept=lat / lat0)
        print(f"[{name}] round_to={row['round_to']} ratio={row['ratio']}: "
              + (row.get("error") or f"MACs kept {row['macs_kept']:.3f}, "
                 f"latency kept {row['lat_kept']:.3f}"), flush=True)
    return rows


def efficiency(row: dict) -> str:
    """(1 - latency kept) / (1 - MACs kept); '-' where no MACs were removed."""
    if row["macs_kept"] > 0.999:
        return "-"
    return f"{(1 - row['lat_kept']) / (1 - row['macs_kept']):.2f}"


def points_table(rows: list[dict]) -> str:
    cells = []
    for r in rows:
        head = [r["model"], r["round_to"], r["ratio"]]
        if "error" in r:
            cells.append(head + [f"ERROR {r['error']}"] + ["-"] * 5)
            continue
        cells.append(head + [f"{r['params_kept']:.3f}", f"{r['macs_kept']:.3f}",
                             f"{r['lat_ms']:.2f} / {r['lat0_ms']:.2f}",
                             f"{r['spread_ms']:.2f} / {r['spread0_ms']:.2f}",
                             f"{r['lat_kept']:.3f}", efficiency(r)])
    return markdown_table(["model", "round_to", "ratio", "params kept", "MACs kept",
                           "latency ms (pruned / orig)", "round spread ms (pruned / orig)",
                           "latency kept", "speed-up efficiency"], cells)


def round_to_table(rows: list[dict]) -> str:
    """Per model and ratio: round_to 1 vs 8, gap = latency kept - MACs kept (0 is ideal)."""
    ok = {(r["model"], r["ratio"], r["round_to"]): r for r in rows if "error" not in r}
    cells = []
    for (model, ratio, rt), one in ok.items():
        eight = ok.get((model, ratio, 8))
        if rt != 1 or eight is None or ratio == 0:
            continue
        gap1, gap8 = one["lat_kept"] - one["macs_kept"], eight["lat_kept"] - eight["macs_kept"]
        same = one["macs"] == eight["macs"]
        cells.append([model, ratio, f"{one['macs_kept']:.3f} / {eight['macs_kept']:.3f}",
                      f"{one['lat_kept']:.3f} / {eight['lat_kept']:.3f}",
                      f"{gap1:+.3f} / {gap8:+.3f}",
                      "same architecture" if same else verdict(one, eight, gap1, gap8),
                      f"{eight['lat_ms'] / one['lat_ms']:.3f}"])
    return markdown_table(["model", "ratio", "MACs kept (1 / 8)", "latency kept (1 / 8)",
                           "gap (1 / 8)", "round_to=8 closer to MACs?",
                           "latency ms 8 / 1"], cells)


def verdict(one: dict, eight: dict, gap1: float, gap8: float) -> str:
    """yes/no, or 'within noise' when the gaps differ by less than the relative round spread."""
    noise = max(r["spread_ms"] / r["lat_ms"] + r["spread0_ms"] / r["lat0_ms"] for r in (one, eight))
    if abs(abs(gap8) - abs(gap1)) <= noise:
        return f"within noise (+-{noise:.3f})"
    return "yes" if abs(gap8) < abs(gap1) else "no"


def plot(rows: list[dict], path: Path, title: str) -> None:
    names = list(dict.fromkeys(r["model"] for r in rows))
    fig = Figure(figsize=(4.2 * len(names), 4.4))
    FigureCanvasAgg(fig)
    top = max([1.05] + [r["lat_kept"] * 1.05 for r in rows if "lat_kept" in r])
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        ax.plot([0, 1.05], [0, 1.05], "k--", lw=1, label="ideal y = x")
        for k, rt in enumerate(sorted({r["round_to"] for r in rows})):
            marker, color = "os^v"[k % 4], f"C{k}"
            pts = sorted((r["macs_kept"], r["lat_kept"], r["ratio"]) for r in rows
                         if r["model"] == name and r["round_to"] == rt and "lat_kept" in r)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker=marker, color=color,
                        alpha=0.8, label=f"round_to={rt}")
                for mx, ly, ratio in pts:
                    ax.annotate(f"{ratio:g}", (mx, ly), fontsize=6, xytext=(3, 3),
                                textcoords="offset points", color=color)
        ax.set(xlim=(0, 1.05), ylim=(0, top), title=name, xlabel="MACs kept (pruned / original)")
        if i == 0:
            ax.set_ylabel("latency kept (pruned / original, median)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64x64, 3 ratios, fewer runs")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--ratios", nargs="+", type=float, default=None)
    p.add_argument("--round-to", nargs="+", type=int, default=ROUND_TOS)
    p.add_argument("--size", type=int, default=None, help="input side (default 224, quick 64)")
    p.add_argument("--runs", type=int, default=None, help="runs per round (default 10, quick 5)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3, quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up per round (3, quick 1)")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    args = p.parse_args(argv)
    q = args.quick
    args.ratios = args.ratios or (QUICK_RATIOS if q else RATIOS)
    args.size = args.size or (64 if q else 224)
    args.runs = args.runs or (5 if q else 10)
    args.rounds = args.rounds or (2 if q else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 3)
    return args


def report_text(rows: list[dict], args: argparse.Namespace, seconds: float, load: str) -> str:
    return "\n".join([
        "# MACs kept vs latency kept" + (" (quick: a smoke test, not a result)" if args.quick
                                          else ""), "",
        (f"Input 1x3x{args.size}x{args.size}, {args.device}, eager. Latency of a variant = "
         f"median of {args.rounds} rounds, each the median of {args.runs} runs after "
         f"{args.warmup} warm-up, all variants of a model run once per cycle in turn; round "
         f"spread = max - min of the round medians (noise)."),
        (f"Environment: {environment_line(args.threads)}; {os.cpu_count()} CPUs, load average "
         f"{load}. Wall time {seconds:.0f}s. Plot: {args.stem}.png, data: {args.stem}.json."), "",
        points_table(rows), "",
        "speed-up efficiency = (1 - latency kept) / (1 - MACs kept): 1.0 means latency falls",
        "exactly as fast as MACs; < 1 means the removed MACs bought less than their share of time.",
        "Ratio 0 rows are the unpruned architecture timed as a separate variant: their",
        "latency kept shows the measurement noise.", "",
        "## Does round_to=8 move latency closer to MACs?", "",
        round_to_table(rows), "",
        "gap = latency kept - MACs kept (0 = latency falls exactly as MACs do). 'same",
        "architecture': every kept count was already a multiple of 8, so only noise differs.",
        "'within noise': the two gaps differ by less than the relative round spreads of the",
        "variants and the original added up.",
        "latency ms 8 / 1 < 1 means round_to=8 is faster in absolute terms despite keeping",
        "at least as many MACs.", ""])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.stem = "latency_quick" if args.quick else "latency"
    torch.set_num_threads(args.threads)
    load_start = f"{os.getloadavg()[0]:.1f}"
    start = time.perf_counter()
    rows = [r for name in args.models for r in sweep(name, args)]
    seconds = time.perf_counter() - start
    load = f"{load_start} at start, {os.getloadavg()[0]:.1f} at end"
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / f"{args.stem}.png",
         f"1x3x{args.size}x{args.size}, {args.device} eager, {args.threads} thread(s)")
    text = report_text(rows, args, seconds, load)
    write_text(out / f"{args.stem}.md", text)
    write_text(out / f"{args.stem}.json", json.dumps(
        {"settings": {k: v for k, v in vars(args).items() if k != "stem"}, "rows": rows},
        indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()

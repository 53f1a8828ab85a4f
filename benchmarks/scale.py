"""Cost at scale: prune time in forward passes and peak memory, ours vs torch-pruning.

Usage:
    .venv/bin/python benchmarks/scale.py                       # all models, ~30-60 min on 2 cores
    .venv/bin/python benchmarks/scale.py --models resnet50 llama-0.1b --repeats 3

Each model is measured in processes of its own (benchmarks/_scale_child.py): one for time, one
per memory figure. Time: 1 thread, ratio 0.5, L1; ``--repeats`` pairs of (one forward, one
prune), each after ``gc.collect()``, alternating ours (default copy), ours in place and
torch-pruning (in place on a deepcopy made untimed); each prune is divided by the forward of
its own pair, and the median ratio is reported, in wall time and in the thread's CPU time (on a
loaded machine the CPU-time ratio is the steadier). Memory: the peak of torch's CPU
allocations during one prune above what was held when it began, counted from the allocator's
events (benchmarks/scale_memory.py), in model sizes. The 1-minute load average is recorded
before each model. Writes benchmarks/results/scale.md and scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import markdown_table

from surgery.atomic import write_text

HERE = Path(__file__).resolve().parent
MODELS = ["resnet50", "densenet121", "vit_b_16", "llama-0.1b", "llama-0.3b", "llama-0.9b",
          "llama-d4", "llama-d16"]
# torch-pruning's process gets TP_LIMIT seconds; on Llama (HF, output_transform=logits) it did
# not finish in 120 s even at 2 layers of width 256, so it is tried on the smallest only
TP_LIMIT = 120
NO_TP = {"llama-0.3b", "llama-0.9b", "llama-d4", "llama-d16"}
MEMORY_TOOLS = ["ours-inplace", "ours", "tp", "forward"]
GOALS = {"resnet50": 1.5, "densenet121": 2.5}  # issue 28: prune time in forwards, at most


def child(*args: str, timeout: float | None = None) -> dict:
    cmd = [sys.executable, str(HERE / "_scale_child.py"), *args]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    if run.returncode or not lines:
        tail = (run.stderr.strip().splitlines() or ["no output"])[-1][:120]
        return {"error": f"exit {run.returncode}: {tail}"}
    return json.loads(lines[-1])


def measure(name: str, repeats: int) -> dict:
    row = {"model": name, "load_1min": os.getloadavg()[0]}
    row["time"] = child(name, "time", "--repeats", str(repeats), "--tools", "ours",
                        "ours-inplace")
    if name not in NO_TP:  # torch-pruning in a process of its own: it may not finish
        tp = child(name, "time", "--repeats", str(repeats), "--tools", "tp", timeout=TP_LIMIT)
        row["time"]["errors"] = {**row["time"].get("errors", {}), **tp.get("errors", {})}
        row["time"].update({k: v for k, v in tp.items() if k.startswith("tp_")})
        if "error" in tp:
            row["time"]["errors"]["tp"] = tp["error"]
    row["memory"] = {tool: child(name, "memory", "--tool", tool,
                                 timeout=TP_LIMIT if tool == "tp" else None)
                     for tool in MEMORY_TOOLS if tool != "tp" or name not in NO_TP}
    return row


def cells(row: dict) -> list[str]:
    t, mem = row["time"], row["memory"]
    bytes_ = next((m["model_bytes"] for m in mem.values() if "model_bytes" in m), 0)

    def ratio(tool: str) -> str:
        if f"{tool}_fwd" not in t:
            return t.get("errors", {}).get(tool, t.get("error", "not run"))[:60]
        return f"{t[f'{tool}_fwd']:.2f} / {t[f'{tool}_fwd_cpu']:.2f} ({t[f'{tool}_s']:.2f} s)"

    def peak(tool: str) -> str:
        m = mem.get(tool, {"error": "not run"})
        return f"{m['ratio']:.2f}x" if "ratio" in m else m.get("error", "-")[:60]

    return [row["model"], f"{bytes_ / 4e9:.2f} B" if bytes_ else "?",
            f"{t.get('forward_s', float('nan')):.3f} s", ratio("ours"), ratio("ours-inplace"),
            ratio("tp"), peak("ours-inplace"), peak("ours"), peak("tp"), peak("forward"),
            f"{row['load_1min']:.1f}"]


HEADER = ["model", "params", "forward", "ours (copy): wall / CPU fwd", "ours in place",
          "torch-pruning", "peak in place", "peak copy", "peak tp", "peak forward", "load"]


def depth_line(rows: dict) -> str:
    d4, d16 = rows.get("llama-d4"), rows.get("llama-d16")
    if not d4 or not d16 or "ours_s" not in d4["time"] or "ours_s" not in d16["time"]:
        return ""
    return (f"Depth: 16 decoder layers take {d16['time']['ours_s'] / d4['time']['ours_s']:.2f}x "
            f"the prune time of 4 (same width; goal at most 5x).")


def report(rows: dict, command: str) -> str:
    loads = [r["load_1min"] for r in rows.values()]
    table = markdown_table(HEADER, [cells(r) for r in rows.values()])
    loaded = max(loads) > (os.cpu_count() or 1)
    about = ("Prune time (ratio 0.5, L1, 1 thread, 224 px or 32 tokens) in forward passes of "
             "the same model in the same process: median over paired repeats of prune / "
             "forward (each call after gc.collect()), wall and thread CPU time (absolute wall "
             "seconds of the prune in brackets). Peak: torch CPU memory during one prune above what was held when it "
             "began, in model sizes (benchmarks/scale_memory.py; exact, not timed). "
             "torch-pruning prunes in place.")
    load = (f"Load average (1 min) when each model started: {min(loads):.1f}-{max(loads):.1f} "
            f"on {os.cpu_count()} cores")
    load += (": a loaded machine (other jobs running); wall times are inflated, the CPU-time "
             "ratios less so." if loaded else ".")
    return "\n".join(["# Cost at scale", "", "```bash", command, "```", "", about, "", load, "",
                      table, "", depth_line(rows), ""])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "scale"))
    p.add_argument("--merge", action="store_true",
                   help="keep the other models' rows of an earlier run in --out")
    args = p.parse_args(argv)
    command = ".venv/bin/python benchmarks/scale.py " + " ".join(argv or sys.argv[1:])
    old = Path(args.out + ".json")
    rows = json.loads(old.read_text())["rows"] if args.merge and old.exists() else {}
    commands = [json.loads(old.read_text())["command"]] if args.merge and old.exists() else []
    for name in args.models:
        rows[name] = {**measure(name, args.repeats), "command": command}
        print(" | ".join(cells(rows[name])), flush=True)
    commands = "\n".join(dict.fromkeys([*commands, command.strip()]))
    write_text(Path(args.out + ".json"), json.dumps({"command": commands, "rows": rows}, indent=1))
    write_text(Path(args.out + ".md"), report(rows, commands))
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()

"""Coverage: every model of coverage_models.json through ours and torch-pruning, side by side.

Usage:
    .venv/bin/python benchmarks/coverage.py                      # every model (long)
    .venv/bin/python benchmarks/coverage.py --only hf            # one source
    .venv/bin/python benchmarks/coverage.py --models yolov8n,s3d --timeout 300
    .venv/bin/python benchmarks/coverage.py --timm-every 3       # every 3rd timm model only

Each model runs once per tool in its own process (1 thread, seed 0) under a wall-clock timeout
and an address-space limit; the child prints one JSON line. The parent writes
benchmarks/results/coverage.md (summary per source, then one row per model) and coverage.json.
What each column means is written at the top of coverage.md (see ``HEADER``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import markdown_table, short_error
from coverage_models import SOURCES, load_entries

from surgery.atomic import write_text

HERE = Path(__file__).resolve().parent
TOOLS = ("ours", "tp")
NOT_RUN = "not run"
EXACT_TOL = 1e-4
HEADER = """\
Per tool and model, in a fresh process (1 thread, seed 0, random weights and BatchNorm
statistics, eval mode, ratio 0.5):

* **captured**: ours: `graphs.trace` returns a graph; tp: `tp.DependencyGraph().build_dependency`.
* **runs**: pruning at ratio 0.5 succeeds and the pruned model runs with the same output
  structure (the same floating-point output tensors, same shapes).
* **exact**: the oracle. Ours: `surgery.testing.oracle.check` (kill floor(r*C) random channels
  of every exactly-prunable group, prune; the plan must remove exactly them and the output must
  equal the killed model's, rel. error <= 1e-4). tp: the same idea with its own groups: zero the
  channels its MagnitudePruner (L1) would remove in every member of their group (producer rows,
  bias, norm affine, consumer columns), then prune with it; the output must equal the killed
  model's. "vacuous" = mean |output| < 1e-6. Where a model's entry in coverage_models.json has
  `compare_at` (RetinaNet, SSDlite: `head`), both tools compare that submodule's outputs
  instead of the model's, for runs and exact: score threshold, top-k and NMS on random weights turn 1e-7
  differences into other or reordered boxes (RetinaNet: the same 300 boxes, two rows with scores
  6e-8 apart swapped, rel. error 5e-2 at the output, 1e-6 at the head).
* **prunable**: fraction of channels prunable. Ours: channels of prunable groups / channels of
  all groups. **layers** (both tools, comparable): output channels of Conv/Linear layers that lie
  in a group the tool prunes / all Conv/Linear output channels; once the prune has run, only
  layers it actually made narrower count (torch-pruning lists BEiT's qkv and proj in groups but
  leaves them whole). tp ignores the Conv/Linear layers whose outputs are model outputs (taken
  from our trace; the last one when our trace fails).
  "layers >= tp" in the summary counts the models both tools prune and run. HF GPT-2's layers
  are `transformers.Conv1D`, neither Conv nor Linear: its layers fraction is 0 for both.
* Timeouts here are mostly the machine's load (2 cores shared by many jobs), not the models.
* **kept**: params after / before at ratio 0.5. **s**: seconds of one prune (ours: `prune()`;
  tp: pruner construction + `step()`).
"""


def run_child(tool: str, entry: dict, timeout: float, memory_gb: float) -> dict:
    """Run one tool on one model in a subprocess; its JSON line, or a failure record."""
    cmd = [sys.executable, str(HERE / "_coverage_child.py"), tool, json.dumps(entry),
           str(int(memory_gb * 2**30))]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True,
                              timeout=timeout, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    memory = any(t in done.stderr for t in ("MemoryError", "Cannot allocate", "std::bad_alloc"))
    status = f"out of memory ({memory_gb:g} GB)" if memory else f"crashed: {tail}"
    return {"status": short_error_text(status), "wall": time.perf_counter() - t0}


def short_error_text(text: str) -> str:
    return short_error(RuntimeError(text)).removeprefix("RuntimeError: ")


def cell(r: dict, group_fraction: bool = True) -> list[str]:
    """captured / runs / exact / prunable / layers / kept / s of one tool's record."""
    if "captured" not in r:
        return ["no", "-", "-", "-", "-", "-", "-"][: 7 if group_fraction else 6]
    yes = {True: "yes", False: "no", None: "-"}
    frac = "-" if r.get("prunable") is None else f"{r['prunable']:.2f}"
    layers = "-" if r.get("layers") is None else f"{r['layers']:.2f}"
    kept = "-" if r.get("kept") is None else f"{r['kept']:.2f}"
    runs = r.get("runs", False) if r["captured"] else None
    exact = r.get("exact_text") or yes[r.get("exact", False) if runs else None]
    cells = [yes[r["captured"]], yes[runs], exact, frac, layers, kept,
             "-" if r.get("seconds") is None else f"{r['seconds']:.1f}"]
    return cells if group_fraction else cells[:3] + cells[4:]


def model_rows(results: list[dict]) -> str:
    head = ["source", "model", "ours: captured", "runs", "exact", "prunable", "layers", "kept",
            "s", "tp: captured", "runs", "exact", "layers", "kept", "s", "notes"]
    rows = []
    for res in results:
        ours, tp = res["ours"], res["tp"]
        notes = "; ".join(f"{k}: {v['status']}" for k, v in (("ours", ours), ("tp", tp))
                          if v.get("status"))
        rows.append([res["source"], res["name"], *cell(ours), *cell(tp, False), notes])
    return markdown_table(head, rows)


def summary(results: list[dict]) -> str:
    """Per source: models run, captured, pruned+runs, exact; ours vs tp; mean layers fraction."""
    head = ["source", "models run (not run)", "captured ours / tp", "runs ours / tp",
            "exact ours / tp", "layers >= tp (both run)", "mean layers ours / tp"]
    rows = []
    for source in dict.fromkeys(r["source"] for r in results):
        every = [r for r in results if r["source"] == source]
        sub = [r for r in every if r["ours"].get("status") != NOT_RUN]
        counts = [" / ".join(str(sum(bool(r[t].get(k)) for r in sub)) for t in TOOLS)
                  for k in ("captured", "runs", "exact")]
        both = [r for r in sub if r["ours"].get("runs") and r["tp"].get("runs")]
        ge = sum(r["ours"]["layers"] >= r["tp"]["layers"] - 1e-9 for r in both)
        means = [sum(r[t].get("layers") or 0 for r in sub) / max(len(sub), 1) for t in TOOLS]
        rows.append([source, f"{len(sub)} ({len(every) - len(sub)})", *counts,
                     f"{ge}/{len(both)}", f"{means[0]:.2f} / {means[1]:.2f}"])
    return markdown_table(head, rows)


def select(entries: list[dict], args: argparse.Namespace) -> list[dict]:
    if args.only:
        entries = [e for e in entries if e["source"] in args.only.split(",")]
    if args.models:
        entries = [e for e in entries if e["name"] in args.models.split(",")]
    timm = [e for e in entries if e["source"] == "timm"][:: args.timm_every]
    return [e for e in entries if e["source"] != "timm" or e in timm]


def write(results: list[dict], args: argparse.Namespace, seconds: float, total: int,
          how: str) -> None:
    out = Path(args.out)
    write_text(out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    ran = sum(r["ours"].get("status") != NOT_RUN for r in results)
    subset = "" if ran == total else (
        f"\n**Subset**: {ran} of the {total} models of coverage_models.json were run "
        f"(`{how}`); run the script without options for all.\n")
    took = f"; {seconds:.0f} s in all" if seconds else ""
    write_text(out, f"# Coverage: ours vs torch-pruning\n\n{HEADER}{subset}\n"
               f"Timeout {args.timeout:g} s and {args.memory:g} GB address space per process"
               f"{took}.\n\n## Per source\n\n{summary(results)}\n\n"
               f"## Per model\n\n{model_rows(results)}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated sources of {SOURCES}")
    parser.add_argument("--models", help="comma-separated model names")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per process")
    parser.add_argument("--memory", type=float, default=8.0, help="GB address space per process")
    parser.add_argument("--timm-every", type=int, default=1, help="run every n-th timm model")
    parser.add_argument("--tools", default="ours,tp")
    parser.add_argument("--jobs", type=int, default=1, help="models run at once")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="run nothing: write the report from these coverage.json files of "
                             "earlier runs (per tool, later files win), in data file order")
    parser.add_argument("--out", default=str(HERE / "results" / "coverage.md"))
    args = parser.parse_args(argv)
    entries = load_entries()
    if args.combine:
        write(combine(entries, args.combine), args, 0.0, len(entries), " ".join(args.combine))
        return
    chosen, results, start = select(entries, args), [], time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on child processes
        for res in pool.map(lambda e: run_model(e, args), chosen):
            results.append(res)
            print(res["source"], res["name"], json.dumps(res["ours"]), json.dumps(res["tp"]),
                  flush=True)
            write(results, args, time.perf_counter() - start, len(entries),
                  " ".join(sys.argv[1:]))


def combine(entries: list[dict], paths: list[str]) -> list[dict]:
    """The records of several runs, one per model, in data file order: per tool, the last
    file's record that ran it (a run with ``--tools ours`` keeps an earlier run's tp record)."""
    found: dict[tuple[str, str], dict] = {}
    for p in paths:
        for r in json.loads(Path(p).read_text()):
            record = found.setdefault((r["source"], r["name"]), {
                "source": r["source"], "name": r["name"], **{t: {"status": NOT_RUN}
                                                            for t in TOOLS}})
            record.update({t: r[t] for t in TOOLS if r[t].get("status") != NOT_RUN})
    missing = {t: {"status": NOT_RUN} for t in TOOLS}
    return [found.get((e["source"], e["name"]), {"source": e["source"], "name": e["name"],
                                                 **missing}) for e in entries]


def run_model(entry: dict, args: argparse.Namespace) -> dict:
    res = {"source": entry["source"], "name": entry["name"]}
    for tool in TOOLS:
        skip = tool not in args.tools.split(",")
        res[tool] = {"status": NOT_RUN} if skip else run_child(
            tool, entry, args.timeout, args.memory)
    return res


if __name__ == "__main__":
    main()

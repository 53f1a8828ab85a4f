"""Coverage: every model of coverage_models.json through ours and torch-pruning, side by side.

Usage:
    .venv/bin/python benchmarks/coverage.py                      # every model (long)
    .venv/bin/python benchmarks/coverage.py --only hf            # one source
    .venv/bin/python benchmarks/coverage.py --models yolov8n,s3d --timeout 300
    .venv/bin/python benchmarks/coverage.py --timm-every 3       # every 3rd timm model only
    .venv/bin/python benchmarks/coverage.py --only hand --resume # the models with no result yet

Each model runs once per tool in its own process (1 thread, seed 0) under a wall-clock timeout
and an address-space limit; the child prints one JSON line. A run updates the results in place:
benchmarks/results/coverage.json keeps, per tool, the record of every model this run does not
run (``--fresh`` starts from nothing), so one source can be rerun alone, and ``--resume`` skips
the models that already have a record. After every model the parent rewrites coverage.json and
coverage.md (summary per source with the commands behind it, where torch-pruning does better,
one row per model; what each column means is at its top, ``HEADER``); at the end of a run that
writes the default results, README.md's coverage table too. Each record notes its command,
limits, date and commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from surgery.atomic import write_text
from surgery.progress import LINES, Progress, elapsed

if __package__:  # imported as benchmarks.coverage (the tests)
    from benchmarks._common import short_error, write_marked_section
    from benchmarks._coverage_report import (
        NOT_RUN,
        NOTES,
        TOOLS,
        ran,
        readme_block,
        report,
    )
    from benchmarks.coverage_models import SOURCES, load_entries
else:  # run as benchmarks/coverage.py: benchmarks/ is on the path
    from _common import short_error, write_marked_section
    from _coverage_report import NOT_RUN, NOTES, TOOLS, ran, readme_block, report
    from coverage_models import SOURCES, load_entries

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "coverage.md"
README = HERE.parent / "README.md"
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
  are `transformers.Conv1D`, neither Conv nor Linear: its layers fraction is 0 for both; so
  are recurrent widths (`nn.LSTM`/`nn.GRU` hidden size), experts held as 3-D parameters and
  embeddings: a model whose only prunable widths are those reads 0 for both tools.
* Sources: `hand` are the hand-written models of `benchmarks/hand_models_conv.py` and
  `hand_models_seq.py` (one per layer kind or pattern); `diffusers`, `smp`
  (segmentation-models-pytorch, `encoder_weights=None`), `hf-families` (Hugging Face
  encoder-decoder, speech, mixture-of-experts, state-space and fused-projection models) and
  `ultralytics-tasks` (seg/pose/obb/cls and RT-DETR from their yaml) from small configs.
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


def select(entries: list[dict], args: argparse.Namespace) -> list[dict]:
    if args.only:
        entries = [e for e in entries if e["source"] in args.only.split(",")]
    if args.models:
        entries = [e for e in entries if e["name"] in args.models.split(",")]
    timm = [e for e in entries if e["source"] == "timm"][:: args.timm_every]
    return [e for e in entries if e["source"] != "timm" or e in timm]


def write(results: list[dict], out: Path) -> None:
    """coverage.json and coverage.md from ``results``, keeping the notes block of the old .md."""
    write_text(out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    old = out.read_text() if out.exists() else ""
    start, end = f"<!-- {NOTES}:start -->", f"<!-- {NOTES}:end -->"
    notes = (start + old.split(start, 1)[1].split(end, 1)[0] + end + "\n\n"
             if start in old and end in old else "")
    write_text(out, report(results, HEADER, notes))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated sources of {SOURCES}")
    parser.add_argument("--models", help="comma-separated model names")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per process")
    parser.add_argument("--memory", type=float, default=8.0, help="GB address space per process")
    parser.add_argument("--timm-every", type=int, default=1, help="run every n-th timm model")
    parser.add_argument("--tools", default="ours,tp")
    parser.add_argument("--jobs", type=int, default=1, help="models run at once")
    parser.add_argument("--resume", action="store_true",
                        help="skip the chosen models that already have a record per tool")
    parser.add_argument("--fresh", action="store_true",
                        help="start from no records instead of the existing --out results")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="run nothing: write the report from these coverage.json files of "
                             "earlier runs (per tool, later files win), in data file order")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args, entries = parse(argv), load_entries()
    out = Path(args.out)
    if args.combine:
        finish(combine(entries, args.combine), out)
        return
    old = out.with_suffix(".json")
    results = combine(entries, [] if args.fresh or not old.exists() else [str(old)])
    at = {(r["source"], r["name"]): r for r in results}
    tools = args.tools.split(",")
    chosen = [e for e in select(entries, args) if not args.resume
              or not all(ran(at[e["source"], e["name"]], t) for t in tools)]
    run, start = run_info(args, sys.argv[1:] if argv is None else argv), time.perf_counter()
    print(f"{len(chosen)} models to run", flush=True)
    log = Progress(LINES, stream=sys.stdout)  # a line per model, with the time elapsed
    with ThreadPoolExecutor(args.jobs) as pool:  # threads only wait on child processes
        for i, res in enumerate(pool.map(lambda e: run_model(e, args, run), chosen), 1):
            at[res["source"], res["name"]].update({t: res[t] for t in TOOLS if ran(res, t)})
            log.line(f"[{i}/{len(chosen)}] {res['source']} {res['name']} "
                     f"{json.dumps(res['ours'])} {json.dumps(res['tp'])}")
            write(results, out)
    finish(results, out)
    print(f"{len(chosen)} models in {elapsed(time.perf_counter() - start)}; {out}", flush=True)


def finish(results: list[dict], out: Path) -> None:
    """Write the results; README.md's coverage table too when they are the default results."""
    write(results, out)
    if out.resolve() == DEFAULT_OUT:
        write_marked_section(README, "coverage", readme_block(results))


def run_info(args: argparse.Namespace, argv: list[str]) -> dict:
    """What made a record: the command line, the limits, the date and the commit (``+changes``
    when graphs/ or surgery/ differ from it)."""
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=HERE.parent,
                              check=False)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    changed = git("status", "--porcelain", "--", "graphs", "surgery")
    return {"command": " ".join(["coverage.py", *argv]), "timeout": args.timeout,
            "memory": args.memory, "date": datetime.date.today().isoformat(),
            "commit": git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")}


def combine(entries: list[dict], paths: list[str]) -> list[dict]:
    """The records of several runs, one per model, in data file order: per tool, the last
    file's record that ran it (a run with ``--tools ours`` keeps an earlier run's tp record)."""
    found: dict[tuple[str, str], dict] = {}
    for p in paths:
        for r in json.loads(Path(p).read_text()):
            record = found.setdefault((r["source"], r["name"]), {
                "source": r["source"], "name": r["name"], **{t: {"status": NOT_RUN}
                                                            for t in TOOLS}})
            record.update({t: r[t] for t in TOOLS if ran(r, t)})
    return [found.get((e["source"], e["name"])) or {
        "source": e["source"], "name": e["name"], **{t: {"status": NOT_RUN} for t in TOOLS}}
        for e in entries]


def run_model(entry: dict, args: argparse.Namespace, run: dict) -> dict:
    res = {"source": entry["source"], "name": entry["name"]}
    for tool in TOOLS:
        skip = tool not in args.tools.split(",")
        res[tool] = {"status": NOT_RUN} if skip else {
            **run_child(tool, entry, args.timeout, args.memory), "run": run}
    return res


if __name__ == "__main__":
    main()

"""The tables of ``coverage.py``: per source, per model, where torch-pruning does better, and
which command made each source's records. Plain functions of the result records.

A record is ``{"source", "name", "ours": {...}, "tp": {...}}``; each tool's part holds the
child's JSON line (``_coverage_child.py``) and ``run``, the command that made it.

Example:
    >>> ok = {"captured": True, "runs": True, "exact": True, "layers": 0.5, "kept": 0.3}
    >>> rec = {"source": "hand", "name": "m", "ours": ok, "tp": {**ok, "layers": 0.75}}
    >>> behind([rec]).splitlines()[-1]
    '| hand | m | layers 0.50 < 0.75 | yes / yes | 0.50 / 0.75 |  |'
"""

from __future__ import annotations

if __package__:  # imported as benchmarks._coverage_report (the tests)
    from benchmarks._common import markdown_table
else:  # imported by a script run as benchmarks/NAME.py: benchmarks/ is on the path
    from _common import markdown_table

TOOLS = ("ours", "tp")
NOT_RUN = "not run"
NOTES = "notes"  # the marked block of coverage.md kept across runs (hand-written run history)


def ran(record: dict, tool: str) -> bool:
    """Whether ``tool`` has a result for this model (any outcome, timeouts included)."""
    return record[tool].get("status") != NOT_RUN


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


def notes_of(ours: dict, tp: dict) -> str:
    return "; ".join(f"{k}: {v['status']}" for k, v in (("ours", ours), ("tp", tp))
                     if v.get("status"))


def model_rows(results: list[dict]) -> str:
    head = ["source", "model", "ours: captured", "runs", "exact", "prunable", "layers", "kept",
            "s", "tp: captured", "runs", "exact", "layers", "kept", "s", "notes"]
    rows = [[res["source"], res["name"], *cell(res["ours"]), *cell(res["tp"], False),
             notes_of(res["ours"], res["tp"])] for res in results]
    return markdown_table(head, rows)


def summary(results: list[dict]) -> str:
    """Per source: models run, captured, pruned+runs, exact; ours vs tp; mean layers fraction."""
    head = ["source", "models run (not run)", "captured ours / tp", "runs ours / tp",
            "exact ours / tp", "layers >= tp (both run)", "mean layers ours / tp"]
    rows = []
    for source in dict.fromkeys(r["source"] for r in results):
        every = [r for r in results if r["source"] == source]
        sub = [r for r in every if ran(r, "ours")]
        counts = [" / ".join(str(sum(bool(r[t].get(k)) for r in sub)) for t in TOOLS)
                  for k in ("captured", "runs", "exact")]
        both = [r for r in sub if r["ours"].get("runs") and r["tp"].get("runs")]
        ge = sum(r["ours"]["layers"] >= r["tp"]["layers"] - 1e-9 for r in both)
        means = [sum(r[t].get("layers") or 0 for r in sub) / max(len(sub), 1) for t in TOOLS]
        rows.append([source, f"{len(sub)} ({len(every) - len(sub)})", *counts,
                     f"{ge}/{len(both)}", f"{means[0]:.2f} / {means[1]:.2f}"])
    return markdown_table(head, rows)


def behind(results: list[dict]) -> str:
    """The models where torch-pruning prunes and runs and ours does not, or where both do and
    our layers fraction is lower, with each tool's status."""
    rows = []
    for r in results:
        ours, tp = r["ours"], r["tp"]
        if not tp.get("runs") or (ours.get("runs") and ours["layers"] >= tp["layers"] - 1e-9):
            continue
        why = (f"layers {ours['layers']:.2f} < {tp['layers']:.2f}" if ours.get("runs")
               else "ours does not prune and run")
        layers = [f"{x['layers']:.2f}" if x.get("layers") is not None else "-"
                  for x in (ours, tp)]
        rows.append([r["source"], r["name"], why,
                     " / ".join("yes" if x.get("runs") else "no" for x in (ours, tp)),
                     " / ".join(layers), notes_of(ours, tp)])
    return markdown_table(["source", "model", "why", "runs ours / tp",
                           "layers ours / tp", "notes"], rows)


def made_by(results: list[dict]) -> str:
    """One line per source: the runs its records come from (command, limits, date, commit)."""
    lines = []
    for source in dict.fromkeys(r["source"] for r in results):
        counts: dict[str, int] = {}
        for r in results:
            for t in TOOLS:
                if r["source"] == source and ran(r, t):
                    label = run_label(r[t].get("run"))
                    counts[label] = counts.get(label, 0) + 1
        runs = "; ".join(f"{label}: {n} record{'s' * (n != 1)}" for label, n in counts.items())
        lines.append(f"- {source}: {runs or 'not run yet'}")
    return "\n".join(lines)


def run_label(run: dict | None) -> str:
    if not run:
        return "earlier runs (see the notes)"
    return (f"`{run['command']}` (timeout {run['timeout']:g} s, {run['memory']:g} GB; "
            f"{run['date']}, {run['commit']})")


def report(results: list[dict], header: str, notes: str) -> str:
    """The text of coverage.md: definitions, notes, the tables, the runs behind them."""
    total = len(results)
    done = sum(ran(r, "ours") or ran(r, "tp") for r in results)
    subset = "" if done == total else (
        f"\n**Subset**: {done} of the {total} models of coverage_models.json have results; "
        "the others read \"not run\" (run `coverage.py --resume` for them).\n")
    return (f"# Coverage: ours vs torch-pruning\n\n{header}{subset}\n{notes}"
            f"## Per source\n\n{summary(results)}\n\nMade by (`.venv/bin/python benchmarks/...`"
            f", one process per tool and model):\n\n{made_by(results)}\n\n"
            f"## Where torch-pruning does better\n\n{behind(results)}\n\n"
            f"## Per model\n\n{model_rows(results)}\n")


def readme_block(results: list[dict]) -> str:
    """The README's coverage table: the summary and the commands that made it."""
    return (f"{summary(results)}\n\nMade by (`.venv/bin/python benchmarks/...`):\n\n"
            f"{made_by(results)}\n\nEvery model and where torch-pruning does better: "
            "`benchmarks/results/coverage.md`.")

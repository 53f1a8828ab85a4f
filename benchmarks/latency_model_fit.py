"""How well do the latency tables predict measured latency? No timing: reads the tables cached
by ``prune(target_latency_ms=...)`` and the uniform curves saved by ``latency_target.py``.

Usage:
    .venv/bin/python benchmarks/latency_model_fit.py --cache-dir /tmp/lat-cache-s3 \\
        --rows benchmarks/results/latency_target_s6.json

Per (model, backend, threads) in the rows: the full-width blocks' summed time over the dense
time (each conv sits in two groups' blocks, so additive tables count it twice), and, at each
uniform L1 ratio with widths rounded to --round-to, the latency kept that the tables predict
against the one measured (the row's rounded curve). Two predictions: "additive" (``TableLatency``
without layers: dense minus each group's block saving) and "per-layer product"
(``TableLatency(layers=layer_shares(...))``: each conv's share of its blocks' time, by MACs,
scaled by the product of its groups' block speed-ups: halving both dims keeps 1/4 of it, not 0;
``prune`` uses it on onnxruntime). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _common import input_for, markdown_table
from builders import build_model

from graphs import trace
from surgery import count_flops, prune
from surgery.plan.latency_model import (
    TableLatency,
    build_tables,
    cache_path,
    input_shapes,
    layer_shares,
)


def fit(name: str, rows: list[dict], cache_dir: str, round_to: int) -> list[list]:
    model, x = build_model(name).eval(), input_for(name, 224)
    graph, flops = trace(model, x), count_flops(model, x)
    shapes = input_shapes(model, x, lambda: model(x))
    full = {g.id: g.channels for g in graph.prunable}
    plans = {}
    for ratio in sorted({u for r in rows for u in r["uniform_ratios"]}):
        result = prune(model, x, ratio=ratio, round_to=round_to)
        plans[ratio] = ({g.group: full[g.group] - len(g.removed_channels)
                         for g in result.plan.groups}, count_flops(result.model, x).total / flops.total)
    out = []
    for key in dict.fromkeys((r["backend"], r["threads"]) for r in rows):
        row = next(r for r in rows if (r["backend"], r["threads"]) == key)
        tables = build_tables(model, graph.prunable, shapes, _not_cached,
                              cache_path(cache_dir, key[0], "cpu", key[1]))
        dense = row["search_dense_ms"]
        layers = layer_shares(model, graph.prunable, shapes, tables, flops.by_module)
        additive, product = (TableLatency(dense, tables).predict,
                             TableLatency(dense, tables, layers).predict)
        pairs = _measured(plans, row["rounded_curve"], tables)
        blocks = sum(max(t.values()) for t in tables.values()) / dense
        out.append([name, *key, f"{blocks:.2f}x", len(pairs)]
                   + [f"{_rmse(predict, pairs, dense):.3f}" for predict in (additive, product)])
    return out


def _not_cached(*_args: object) -> float:
    raise SystemExit("a table is not in --cache-dir: run latency_target.py with it first")


def _measured(plans: dict, curve: list, tables: dict) -> list[tuple[dict, float]]:
    """(widths, measured latency kept) for the uniform plans whose MACs match a curve point."""
    pairs = []
    for widths, macs in plans.values():
        point = min(curve, key=lambda c: abs(c[0] - macs))
        if abs(point[0] - macs) <= 0.005:
            pairs.append(({g: w for g, w in widths.items() if g in tables}, point[2]))
    return pairs


def _rmse(predict, pairs: list, dense: float) -> float:
    errors = [predict(widths) / dense - measured for widths, measured in pairs]
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", nargs="+", required=True, help="latency_target.py JSON rows")
    p.add_argument("--cache-dir", required=True, help="where those runs cached their tables")
    args = p.parse_args(argv)
    rows = [r for path in args.rows for r in json.loads(Path(path).read_text())
            if "rounded_curve" in r and "search_dense_ms" in r]
    if not rows:
        raise SystemExit("no rows with a rounded curve and a search dense time (--round-to runs "
                         "of latency_target.py since the paired timing)")
    body = []
    with torch.no_grad():
        for name in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == name]
            body += fit(name, mine, args.cache_dir, mine[0]["round_to"])
    print(markdown_table(["model", "backend", "threads", "full blocks / dense", "points",
                          "rmse additive", "rmse per-layer product"], body))
    print("\nrmse: of predicted minus measured latency kept (dense = 1), over the uniform L1 "
          "ratios with rounded widths.")


if __name__ == "__main__":
    main()

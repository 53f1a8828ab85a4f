"""How well do the latency tables predict measured latency? No timing: reads the tables cached
by ``prune(latency=LatencyTarget(...))`` and the uniform curves saved by ``latency_target.py``.

Usage:
    .venv/bin/python benchmarks/latency_model_fit.py --cache-dir /tmp/lat-cache-s3 \\
        --rows benchmarks/results/latency_target_s6.json

Per (model, backend, threads) in the rows: the full-width blocks' summed time over the dense
time (each conv sits in two groups' blocks, so additive tables count it twice), the layers'
time over it (``layer_shares``: each conv's share of its blocks' time, by MACs), and, at each
uniform L1 ratio with widths rounded to --round-to, the latency kept that each model predicts
against the one measured (the row's rounded curve). The models: "additive" (``TableLatency``
without layers: dense minus each group's block saving); "per-layer product"
(``TableLatency(layers=...)``: each conv scaled by the product of its groups' block speed-ups,
halving both dims keeps 1/4 of it, not 0); "+ rest" (``rest_shares``: the dense time outside
the layers, norms and activations, shrinking with the channels); "+ fitted rest" (the share of
that rest which shrinks, fitted by ``fit_rest`` to the measured point at ratio 0.5 and scored
on the other points: what ``prune`` uses, fitted there to one measured probe). Prints a
markdown table.
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
from surgery import Budget, count_flops, prune
from surgery.plan.latency_layers import fit_rest, layer_shares, rest_shares
from surgery.plan.latency_model import (
    TableLatency,
    build_tables,
    cache_path,
    input_shapes,
)

PROBE_RATIO = 0.5  # the uniform point "+ fitted rest" is fitted to, and left out of its score


def fit(name: str, rows: list[dict], cache_dir: str, round_to: int) -> list[list]:
    model, x = build_model(name).eval(), input_for(name, 224)
    graph, flops = trace(model, x), count_flops(model, x)
    shapes = input_shapes(model, x, lambda: model(x))
    full = {g.id: g.channels for g in graph.prunable}
    plans = {}
    for ratio in sorted({u for r in rows for u in r["uniform_ratios"]}):
        result = prune(model, x, budget=Budget(ratio=ratio, round_to=round_to))
        plans[ratio] = ({g.group: full[g.group] - len(g.removed_channels)
                         for g in result.plan.groups}, count_flops(result.model, x).total / flops.total)
    out = []
    for key in dict.fromkeys((r["backend"], r["threads"]) for r in rows):
        row = next(r for r in rows if (r["backend"], r["threads"]) == key)
        tables = build_tables(model, graph.prunable, shapes, _not_cached,
                              cache_path(cache_dir, key[0], "cpu", key[1]))
        dense = row["search_dense_ms"]
        layers = layer_shares(model, graph.prunable, shapes, tables, flops.by_module)
        rest = rest_shares(model, graph.prunable, shapes, layers, flops.by_module, dense)
        measured = _measured(plans, row["rounded_curve"], tables)
        pairs = list(measured.values())
        product = TableLatency(dense, tables, layers)
        probe = measured.get(PROBE_RATIO)  # prune's probe is each group near half width
        fitted = fit_rest(product, rest, probe[0], probe[1] * dense) if probe and rest else product
        predictors = (TableLatency(dense, tables).predict, product.predict,
                      TableLatency(dense, tables, layers, rest).predict)
        blocks = sum(max(t.values()) for t in tables.values()) / dense
        convs = sum(ms for ms, _ in layers.values()) / dense
        held_out = [p for ratio, p in measured.items() if ratio != PROBE_RATIO]
        out.append([name, *key, f"{blocks:.2f}x", f"{convs:.2f}x", len(pairs)]
                   + [f"{_rmse(predict, pairs, dense):.3f}" for predict in predictors]
                   + [f"{_rmse(fitted.predict, held_out, dense):.3f}"])
    return out


def _not_cached(*_args: object) -> float:
    raise SystemExit("a table is not in --cache-dir: run latency_target.py with it first")


def _measured(plans: dict, curve: list, tables: dict) -> dict[float, tuple[dict, float]]:
    """Ratio -> (widths, measured latency kept) for the uniform plans whose MACs match a curve
    point."""
    out = {}
    for ratio, (widths, macs) in plans.items():
        point = min(curve, key=lambda c: abs(c[0] - macs))
        if abs(point[0] - macs) <= 0.005:
            out[ratio] = ({g: w for g, w in widths.items() if g in tables}, point[2])
    return out


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
    print(markdown_table(["model", "backend", "threads", "full blocks / dense", "layers / dense",
                          "points", "rmse additive", "rmse per-layer product",
                          "rmse product + rest", "rmse product + fitted rest"], body))
    print("\nrmse: of predicted minus measured latency kept (dense = 1), over the uniform L1 "
          "ratios with rounded widths; the fitted rest is fitted to the point at ratio 0.5 "
          "(as prune fits it to a probe with each group near half width) and scored on the "
          "other points.")


if __name__ == "__main__":
    main()

"""Rows of ``latency_target.py``: the uniform references scored at each row's measured latency
(along their frontier), the machine's drift, and the markdown table with its summary.

Example:
    >>> frontier([(0.2, 0.2, 0.3), (0.8, 0.8, 1.4), (1.0, 1.0, 1.0)])  # 0.8 runs slower
    [(0.2, 0.2, 0.3), (1.0, 1.0, 1.0)]
"""

from __future__ import annotations

import statistics

import numpy as np

if __package__:  # imported as benchmarks._latency_rows (the tests)
    from benchmarks._common import markdown_table
else:  # imported by a script run as benchmarks/NAME.py: benchmarks/ is on the path
    from _common import markdown_table


def rescore(row: dict) -> dict:
    """``row`` with the references' MACs and params at its measured latency, from the curves
    it stores (rows saved by earlier versions are scored the same way)."""
    u_macs, u_params, inside = at_latency(row["curve"], row["lat_kept"])
    row = {**row, "uniform_macs": u_macs, "uniform_params": u_params, "extrapolated": not inside}
    if "rounded_curve" in row:
        macs, _, inside = at_latency(row["rounded_curve"], row["lat_kept"])
        row["rounded_macs"] = macs if inside else None
    return row


def frontier(curve: list) -> list:
    """The (MACs, params, latency) kept points no faster point beats on MACs, by latency: the
    best a reference does at each latency. A reference curve need not be monotone: on
    onnxruntime, uniform L1 at ratio 0.1 (odd channel counts) ran 1.4-1.5x slower than the dense
    model while keeping 83% of its MACs."""
    best, kept = -1.0, []
    for point in sorted(curve, key=lambda c: (c[2], -c[0])):
        if point[0] > best:
            kept.append(point)
            best = point[0]
    return kept


def at_latency(curve: list, lat: float) -> tuple[float, float, bool]:
    """MACs and params kept by a reference at latency ``lat``, interpolated along its
    ``frontier``, and whether ``lat`` lies inside it (``np.interp`` clamps outside)."""
    front = frontier(curve)
    lats = [c[2] for c in front]
    return (float(np.interp(lat, lats, [c[0] for c in front])),
            float(np.interp(lat, lats, [c[1] for c in front])), lats[0] <= lat <= lats[-1])


def _gain(row: dict, reference: str) -> float:
    """MACs kept by the latency-targeted model over a reference's (``uniform_macs`` or
    ``rounded_macs``) at the same latency, - 1."""
    return row["macs_kept"] / row[reference] - 1


def _rounded_gain(r: dict) -> str:
    if r.get("rounded_macs") is None:
        return "-"
    return f"{_gain(r, 'rounded_macs'):+.1%}"


def table(rows: list[dict]) -> str:
    header = ["model", "backend", "thr", "target ms", "measured ms (search / final)", "gap",
              "paired gap",
              "latency kept / target fraction",
              "MACs kept", "uniform L1 MACs kept", "MACs gain", "params kept",
              "uniform params", "MACs gain vs uniform round_to", "measurements", "prune s",
              "load", "dense drift (final / search)"]
    body = [[r["model"], r["backend"], r["threads"], f"{r['target_ms']:.1f}",
             f"{r['search_ms']:.1f} / {r['final_ms']:.1f}", f"{r['gap']:+.1%}",
             f"{r['paired_gap']:+.1%}" if "paired_gap" in r else "-",
             f"{r['lat_kept']:.3f} / {r['fraction']:g} ({r['lat_kept'] / r['fraction'] - 1:+.1%})",
             f"{r['macs_kept']:.3f}",
             "outside the curve" if r["extrapolated"] else f"{r['uniform_macs']:.3f}",
             "-" if r["extrapolated"] else f"{_gain(r, 'uniform_macs'):+.1%}",
             f"{r['params_kept']:.3f}",
             f"{r['uniform_params']:.3f}",
             f"{_rounded_gain(r)} ({r['round_to']})" if "round_to" in r else "not run",
             r["measurements"], f"{r['seconds']:.0f}",
             "{:.1f}-{:.1f}".format(*r["load"]) if "load" in r else "-",
             f"{drift(r):+.1%} / " + ("-" if search_drift(r) is None else f"{search_drift(r):+.1%}")]
            for r in rows]
    return markdown_table(header, body) + "\n\n" + summary(rows)


def drift(row: dict) -> float:
    """How much the dense model's time moved between its first timing (the target's basis)
    and the final timing: the machine's own drift over the configuration."""
    return _moved(row, row["dense_ms"])


def search_drift(row: dict) -> float | None:
    """The same between the first timing and the dense time the search pooled (None for rows
    saved before it was recorded)."""
    if "search_dense_ms" not in row:
        return None
    return _moved(row, row["search_dense_ms"])


def _moved(row: dict, dense_ms: float) -> float:
    """``dense_ms`` over the dense model's first timing (target / fraction), - 1."""
    return dense_ms * row["fraction"] / row["target_ms"] - 1


def steady(row: dict) -> bool:
    """The dense model's time held within 5% of its first timing, in the search (where known)
    and in the final timing."""
    moves = [drift(row), search_drift(row)]
    return all(abs(m) <= 0.05 for m in moves if m is not None)


def summary(rows: list[dict]) -> str:
    """Per model: rows whose final latency lands within 5% of the target (all rows, and rows
    whose dense model held within 5%, ``steady``), and rows keeping >= 15% more MACs than
    uniform L1 at the same latency (rows outside the uniform curve, where interpolation would
    clamp, are not counted)."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        held = [r for r in mine if steady(r)]
        inside = [r for r in mine if not r["extrapolated"]]
        gains = [_gain(r, "uniform_macs") for r in inside]
        lines.append(f"- {model}: within 5% of the target on "
                     f"{sum(abs(r['gap']) <= 0.05 for r in mine)} of {len(mine)} rows ("
                     f"{sum(abs(r['gap']) <= 0.05 for r in held)} of {len(held)} where the "
                     f"dense model held within 5%); MACs gain "
                     f">= +15% on {sum(g >= 0.15 for g in gains)} of {len(inside)} rows inside "
                     f"the uniform curve" + (f" (median {statistics.median(gains):+.1%})"
                                             if gains else "") + _paired_summary(mine)
                     + _rounded_summary(mine))
    return "\n".join(lines)


def _paired_summary(rows: list[dict]) -> str:
    paired = [r["paired_gap"] for r in rows if "paired_gap" in r]
    if not paired:
        return ""
    return (f"; paired gap within 5% on {sum(abs(g) <= 0.05 for g in paired)} of {len(paired)} "
            f"rows")


def _rounded_summary(rows: list[dict]) -> str:
    gains = [_gain(r, "rounded_macs") for r in rows if r.get("rounded_macs")]
    if not gains:
        return ""
    return (f"; vs uniform L1 with round_to {rows[0]['round_to']}: >= +15% on "
            f"{sum(g >= 0.15 for g in gains)} of {len(gains)} rows inside its curve (median "
            f"{statistics.median(gains):+.1%})")

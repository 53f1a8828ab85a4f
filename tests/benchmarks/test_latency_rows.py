"""benchmarks/_latency_rows.py (rows.py's rows): the reference curve's frontier and
the rows' rescoring."""

from __future__ import annotations

import pytest

from benchmarks import _latency_rows as rows

# (MACs kept, params kept, latency kept): ratio 0.1 runs slower than dense (odd widths), as
# uniform L1 did on onnxruntime
CURVE = [(0.2, 0.25, 0.3), (0.5, 0.55, 0.9), (0.6, 0.62, 0.5), (0.83, 0.85, 1.45),
         (1.0, 1.0, 1.0)]


def test_frontier_keeps_the_best_macs_at_each_latency():
    assert rows.frontier(CURVE) == [(0.2, 0.25, 0.3), (0.6, 0.62, 0.5),
                                              (1.0, 1.0, 1.0)]


def test_at_latency_interpolates_the_frontier():
    macs, params, inside = rows.at_latency(CURVE, 0.75)
    assert (macs, params, inside) == (pytest.approx(0.8), pytest.approx(0.81), True)
    assert rows.at_latency(CURVE, 0.2)[2] is False  # faster than the curve


def test_rescore_recomputes_the_references_from_the_stored_curves():
    row = {"curve": CURVE, "rounded_curve": CURVE, "lat_kept": 0.75, "uniform_macs": 0.1,
           "extrapolated": True}
    scored = rows.rescore(row)
    assert scored["uniform_macs"] == pytest.approx(0.8) and not scored["extrapolated"]
    assert scored["rounded_macs"] == pytest.approx(0.8)
    assert row["uniform_macs"] == 0.1  # the row given is left as it was
    assert rows.rescore({**row, "lat_kept": 0.1})["rounded_macs"] is None

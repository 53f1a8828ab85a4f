"""Latency targets: the measured table is built and cached, the search respects a latency
model, the CLI parses units. No assertion here depends on how fast anything ran."""

import importlib
import importlib.util
import json

import pytest
import torch
import torchvision

from graphs import trace
from surgery import Budget, LatencyTarget, SurgeryError, count_flops, lint, prune
from surgery.cli import main
from surgery.io.models import LeNet
from surgery.plan.latency_layers import (
    fit_rest,
    layer_shares,
    probe_widths,
    rest_shares,
)
from surgery.plan.latency_model import (
    FakeLatency,
    TableLatency,
    build_tables,
    cache_path,
    candidate_widths,
    input_shapes,
)
from surgery.plan.latency_target import parse_latency, plan_from_widths, search

X = torch.zeros(1, 1, 28, 28)
HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def weight_timer(calls):
    """A fake timer: ms = thousandths of the block's weights, so tables are reproducible."""
    def timer(block, inputs):
        calls.append([tuple(x.shape) for x in inputs])
        return sum(p.numel() for p in block.parameters()) / 1000
    return timer


def lenet_tables(tmp_path, calls, threads=1):
    model = LeNet().eval()
    graph = trace(model, X)
    shapes = input_shapes(model, X, lambda: model(X))
    path = cache_path(tmp_path, "eager", "cpu", threads)
    return graph, build_tables(model, graph.prunable, shapes, weight_timer(calls), path), path


def test_table_is_built_from_the_real_shapes_and_cached(tmp_path):
    calls = []
    graph, tables, path = lenet_tables(tmp_path, calls)
    assert sorted(tables) == [g.id for g in graph.prunable]
    # conv1's group: 6 channels, conv1 (out) and conv2 (in) timed at each width, twice
    assert sorted(tables[1]) == sorted(candidate_widths(6))
    conv1 = 6 * 1 * 25 + 6
    conv2 = 16 * 6 * 25 + 16
    assert tables[1][6] == (conv1 + conv2) / 1000
    assert tables[1][3] == (3 * 25 + 3 + 16 * 3 * 25 + 16) / 1000
    assert calls[0] == [(1, 1, 28, 28), (1, 6, 12, 12)]
    assert path.exists() and len(json.loads(path.read_text())) == len(tables)
    again = []
    assert lenet_tables(tmp_path, again)[1] == tables and again == []  # read from the cache
    other = []
    lenet_tables(tmp_path, other, threads=2)  # another thread count: another file, timed
    assert other and cache_path(tmp_path, "eager", "cpu", 2) != path


def test_widths_offered_are_the_fast_ones():
    table = TableLatency(10.0, {1: {64: 4.0, 56: 3.9, 55: 4.2, 48: 3.0, 47: 3.1, 32: 2.0}})
    assert table.widths(1) == (64, 56, 48, 32)
    assert table.predict({1: 48}) == 9.0
    assert table.predict({1: 40}) == pytest.approx(10 - (4.0 - (2.0 + 1.1 * 8 / 15)))  # 47..32


def test_candidate_widths_are_multiples_with_probes():
    assert candidate_widths(256) == (256, 224, 192, 191, 160, 128, 127, 96, 64)
    assert candidate_widths(1) == (1,)


def test_search_takes_the_cheapest_importance_per_ms():
    fake = FakeLatency(10.0, {1: 0.5, 2: 0.1, 3: 0.05}, {1: 8, 2: 8, 3: 8})
    scores = {1: torch.ones(8), 2: torch.ones(8), 3: torch.ones(8)}
    found = search(scores, fake, 8.0, fake.predict)
    assert found.widths == {1: 4, 2: 8, 3: 8}
    assert found.measured_ms == 8.0 and found.gap == 0.0 and found.dense_ms == 10.0
    # group 1 carries the important channels: pay with the cheaper ones first
    scores[1] = torch.full((8,), 100.0)
    scores[1][:2] = 0.0  # ... except its two weakest
    found = search(scores, fake, 9.0, fake.predict)
    assert found.widths == {1: 6, 2: 8, 3: 8}


def test_search_weighs_importance_per_group():
    fake = FakeLatency(10.0, {1: 0.5, 2: 0.1}, {1: 8, 2: 8})
    scores = {1: torch.ones(8), 2: torch.ones(8)}
    assert search(scores, fake, 9.5, fake.predict).widths == {1: 6, 2: 8}
    # group 1's channels carry 10x the MACs of group 2's: 10 importance per 0.5 ms there,
    # 1 per 0.1 ms in group 2, which goes instead (to its smallest width, 2: -0.6 ms)
    found = search(scores, fake, 9.5, fake.predict, weights={1: 10.0, 2: 1.0})
    assert found.widths == {1: 8, 2: 2} and found.measured_ms == 9.4


def test_capacity_weights_are_macs_per_channel_over_the_mean(tmp_path):
    from surgery.prune import _capacity
    model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    graph = trace(model, x)
    weights = _capacity(model, count_flops(model, x).by_module, graph,
                        [g.id for g in graph.prunable])
    per = {1: 86400 // 6 + 153600 // 6, 2: 153600 // 16 + 256 // 16 * 120, 3: 340, 4: 130}
    mean = sum(per.values()) / 4
    assert weights == pytest.approx({g: n / mean for g, n in per.items()})


def test_layer_shares_split_blocks_by_macs_and_name_both_groups():
    # LeNet: conv2 is cut by group 1 (inputs) and group 2 (outputs); fc1 by 2 and 3
    model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    graph = trace(model, x)
    macs = count_flops(model, x).by_module
    tables = {g.id: {g.channels: 10.0, g.channels // 2: 6.0} for g in graph.prunable}
    shares = layer_shares(model, graph.prunable, {n: (1,) for n in macs}, tables, macs)
    assert shares["conv2"][1] == (1, 2) and shares["fc1"][1] == (2, 3)
    in_block_2 = macs["conv2"] / (macs["conv2"] + macs["fc1"]) * 10.0
    in_block_1 = macs["conv2"] / (macs["conv1"] + macs["conv2"]) * 10.0
    assert shares["conv2"][0] == pytest.approx((in_block_1 + in_block_2) / 2)


def test_product_model_keeps_a_quarter_when_both_dims_halve():
    tables = {1: {8: 4.0, 4: 2.0}, 2: {8: 4.0, 4: 2.0}}
    product = TableLatency(10.0, tables, {"conv": (4.0, (1, 2)), "head": (2.0, (2,))})
    assert product.predict({1: 4, 2: 8}) == 8.0  # conv keeps half
    assert product.predict({1: 4, 2: 4}) == 6.0  # conv keeps a quarter (-3), head half (-1)
    assert TableLatency(10.0, tables).predict({1: 4, 2: 4}) == 6.0  # additive: -2 -2
    assert product.widths(1) == (8, 4)


def test_rest_is_the_time_outside_the_layers_split_by_outputs():
    model, x = LeNet(), torch.zeros(1, 1, 28, 28)
    graph, macs = trace(model, x), count_flops(model, x).by_module
    layers = {"conv1": (1.0, (1,)), "conv2": (2.0, (1, 2)), "fc1": (1.0, (2, 3)),
              "fc2": (0.5, (3, 4)), "fc3": (0.5, (4,))}
    rest = rest_shares(model, graph.prunable, {n: (1,) for n in layers}, layers, macs, 12.0)
    # outputs: conv1 6x24x24, conv2 16x8x8, fc1 120, fc2 84, fc3 10 (no group cuts fc3's)
    outputs = {1: 3456, 2: 1024, 3: 120, 4: 84}
    assert rest == pytest.approx({g: 7.0 * n / 4694 for g, n in outputs.items()})
    assert rest_shares(model, graph.prunable, {}, layers, macs, 5.0) == {}  # layers take it all
    tables = {g: {w: 1.0 for w in (4 * n, 3 * n, 2 * n)} for g, n in {1: 2, 2: 4}.items()}
    assert TableLatency(12.0, tables, {}, {1: 3.0}).predict({1: 4}) == 10.5  # half of 3 ms


def test_rest_share_is_fitted_to_the_probe_and_clipped():
    tables = {1: {16: 4.0, 12: 3.5, 9: 2.0, 8: 2.1, 4: 1.0}, 2: {8: 2.0, 4: 1.0}}
    model = TableLatency(20.0, tables, {"a": (4.0, (1,)), "b": (2.0, (2,))})
    probe = probe_widths(model)
    assert probe == {1: 9, 2: 4}  # 8 is slower than 9: not offered
    without = model.predict(probe)
    rest = {1: 4.0, 2: 2.0}
    full = TableLatency(20.0, tables, model.layers, rest).predict(probe)
    half = fit_rest(model, rest, probe, (without + full) / 2)
    assert half.rest == pytest.approx({1: 2.0, 2: 1.0})
    assert half.predict(probe) == pytest.approx((without + full) / 2)
    assert fit_rest(model, rest, probe, without + 1).rest == {1: 0.0, 2: 0.0}  # slower: none
    assert fit_rest(model, rest, probe, full - 1).rest == rest  # faster: at most all of it


def test_search_stops_on_the_measurement_not_the_prediction():
    fake = FakeLatency(10.0, {1: 0.25, 2: 0.25}, {1: 8, 2: 8})
    measured = []

    def slower(widths):  # the real model is 20% slower than predicted
        measured.append(dict(widths))
        return 1.2 * fake.predict(widths)

    found = search({1: torch.ones(8), 2: torch.ones(8)}, fake, 9.0, slower, measure_every=1)
    assert found.measured_ms <= 9.0
    assert found.measured_ms == pytest.approx(1.2 * fake.predict(found.widths))
    assert found.measurements == len(measured)


def test_search_puts_back_what_still_fits():
    fake = FakeLatency(10.0, {1: 1.0}, {1: 8})
    found = search({1: torch.ones(8)}, fake, 8.5, lambda w: 0.8 * fake.predict(w),
                   measure_every=4)
    # steps of 2 channels: predicted 8 ms at width 6 would do; the measurements are 20% faster,
    # so the first width measured at <= 8.5 ms is kept (8 channels: 8 ms measured)
    assert found.widths == {1: 8} and found.measured_ms == 8.0


def test_search_recovers_from_noisy_readings():
    # greedy order: group 1 (1 ms per 2 channels) before group 2 (0.5 ms per 2 channels)
    fake = FakeLatency(10.0, {1: 0.5, 2: 0.25}, {1: 8, 2: 8})
    factors = iter([1.25, 1.0, 1.1, 1.0, 1.0])  # the dense and one put-back reading are slow

    def noisy(widths):
        return next(factors) * fake.predict(widths)

    found = search({1: torch.ones(8), 2: torch.ones(8)}, fake, 8.0, noisy, measure_every=8)
    # the slow dense reading drove it to {1: 2, 2: 4} (6 ms, 25% under); the first put-back
    # read 8.8 ms and was refused; calibrated by it, {1: 2, 2: 8} (7 ms), then {1: 4, 2: 8}
    assert found.widths == {1: 4, 2: 8} and found.measured_ms == 8.0
    assert found.measurements == 5


def test_search_refuses_an_unreachable_target():
    fake = FakeLatency(10.0, {1: 1.0}, {1: 8})
    with pytest.raises(SurgeryError, match="cannot reach"):
        search({1: torch.ones(8)}, fake, 1.0, fake.predict)


def test_plan_from_widths_removes_the_lowest_scored():
    graph = trace(LeNet(), X)
    scores = {g.id: torch.arange(g.channels, dtype=torch.float).flip(0) for g in graph.prunable}
    plan = plan_from_widths(graph, scores, {2: 10}, "l1")
    assert [len(g.removed_channels) for g in plan.groups] == [0, 6, 0, 0]
    assert plan.groups[1].removed_channels == [10, 11, 12, 13, 14, 15]


def test_prune_with_a_latency_target_plumbs_through(tmp_path):
    model = LeNet().eval()
    result = prune(model, X, latency=LatencyTarget(1e6, threads=1, cache_dir=tmp_path))
    assert result.latency.target_ms == 1e6 and result.latency.widths == {1: 6, 2: 16, 3: 120,
                                                                          4: 84}
    assert all(not g.removed_channels for g in result.plan.groups)
    assert list(tmp_path.glob("latency-*-eager-cpu-t1.json")) and lint(result.model, X) == []


class ParamsTimer:
    """A stand-in for surgery.measure.paired.PairedTimer: 1 ms per 1,000 parameters plus a
    fixed ``overhead_ms`` (a cost outside the layers that pruning does not shrink); the dense
    reference reads 10% slower in its last timing (a drifting machine)."""

    def __init__(self, reference, overhead_ms):
        self.overhead, self.measured = overhead_ms, []
        self.dense = self._ms(reference)

    def _ms(self, model):
        return sum(p.numel() for p in model.parameters()) / 1000 + self.overhead

    def calibrate(self):
        return self.dense

    @property
    def reference_ms(self):
        return self.dense * 1.1

    def measure(self, model):
        self.measured.append(self._ms(model))
        return self.measured[-1]


@pytest.mark.parametrize("backend", ["eager", pytest.param("onnxruntime", marks=pytest.mark.skipif(
    not HAS_ORT, reason="onnx / onnxruntime not installed"))])
@pytest.mark.parametrize("overhead_ms", [0.0, 20.0])
def test_prune_measures_candidates_with_the_paired_timer(tmp_path, monkeypatch, backend,
                                                         overhead_ms):
    # surgery.prune is also the name of the function: patch the module itself
    module = importlib.import_module("surgery.prune")
    timers, followed = [], []
    monkeypatch.setattr(module, "PairedTimer", lambda reference, *args, **kwargs:
                        timers.append(ParamsTimer(reference, overhead_ms)) or timers[-1])
    monkeypatch.setattr(module, "search", lambda scores, latency, *args, **kwargs:
                        followed.append(latency) or search(scores, latency, *args, **kwargs))
    # reproducible tables (real block timings would make the offered widths vary)
    monkeypatch.setattr(module, "build_tables", lambda model, groups, shapes, _timer, path, **kw:
                        build_tables(model, groups, shapes, weight_timer([]), path, **kw))
    model = LeNet().eval()
    dense = sum(p.numel() for p in model.parameters()) / 1000 + overhead_ms
    target = dense - 0.5 * (dense - overhead_ms)
    result = prune(model, X, latency=LatencyTarget(target, backend=backend, threads=1, cache_dir=tmp_path))
    kept = sum(p.numel() for p in result.model.parameters()) / 1000 + overhead_ms
    assert result.latency.measured_ms == pytest.approx(kept) and kept <= target
    assert result.latency.dense_ms == pytest.approx(dense * 1.1)  # pooled over the search
    assert lint(result.model, X) == []
    # each conv's two groups combine as a product; time outside the layers is fitted to one
    # probe (the first plan measured, counted as a measurement): the model predicts it
    latency = followed[0]
    assert latency.layers is not None
    assert result.latency.measurements == len(timers[0].measured)
    if overhead_ms:
        assert latency.rest and max(latency.rest.values()) < overhead_ms / 10
        assert latency.predict(probe_widths(latency)) == pytest.approx(timers[0].measured[0])
    else:
        assert latency.rest is None


def test_depthwise_and_linear_blocks_build(tmp_path):
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    x = torch.zeros(1, 3, 32, 32)
    graph = trace(model, x)
    shapes = input_shapes(model, x, lambda: model(x))
    tables = build_tables(model, graph.prunable[:4], shapes, weight_timer([]),
                          cache_path(tmp_path, "eager", "cpu", 1), rounds=1)
    assert all(t[max(t)] >= t[min(t)] > 0 for t in tables.values())


def test_budget_takes_one_target():
    with pytest.raises(SurgeryError, match="exactly one"):
        Budget(ratio=0.5, target_latency_ms=3.0)
    with pytest.raises(SurgeryError, match="round_to"):
        Budget(target_latency_ms=3.0, round_to=8)
    with pytest.raises(SurgeryError, match="max_ratio unset"):
        Budget(target_latency_ms=3.0, max_ratio=0.8)


@pytest.mark.parametrize("text, ms", [("12ms", 12.0), ("12", 12.0), ("0.012s", 12.0),
                                      ("900us", 0.9), (" 2.5 MS ", 2.5)])
def test_cli_parses_latency_units(text, ms):
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["fast", "-3ms", "0", "12 min"])
def test_cli_refuses_bad_latency(text, tmp_path, capsys):
    assert main(["prune", "lenet", f"--target-latency={text}", "--out", str(tmp_path)]) == 2
    assert "--target-latency" in capsys.readouterr().err

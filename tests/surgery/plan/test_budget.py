"""Per-layer ratios, global ranking and target_macs: counts, MACs landing, oracle exactness."""

import pytest
import torch
import torchvision

from graphs import trace
from surgery import LatencyTarget, SurgeryError, lint, prune
from surgery.io.models import LeNet
from surgery.measure.flops import count_flops
from surgery.plan.budget import Budget, MacModel, removal_counts
from surgery.testing.oracle import kill, randomize_norms, relative_error

X = torch.randn(2, 1, 28, 28)
X_RESNET = torch.randn(1, 3, 32, 32)


def lenet():
    torch.manual_seed(0)
    return LeNet().eval()


def resnet18():
    torch.manual_seed(0)
    return randomize_norms(torchvision.models.resnet18().eval())


def removed(result):
    return {g.group: len(g.removed_channels) for g in result.plan.groups}


def kill_some(model, x, per_group):
    """Kill the first per_group[i] channels of the i-th prunable group (odd ones, spread out)."""
    graph = trace(model, x)
    dead = {}
    for group, n in zip(graph.prunable, per_group):
        chosen = sorted(range(1, group.channels, 2))[:n] if n else []
        kill(model, group, chosen)
        dead[group.id] = chosen
    return graph, dead


def assert_exact(model, x, dead, **settings):
    with torch.no_grad():
        expected = model(x)
    result = prune(model, x, **settings)
    assert {g.group: g.removed_channels for g in result.plan.groups} == dead
    with torch.no_grad():
        assert relative_error(result.model(x), expected) <= 1e-4
    assert lint(result.model, x) == []
    return result


# per-layer ratios

def test_per_layer_ratios_prune_only_the_named_layers():
    result = prune(lenet(), X, ratio={"conv2": 0.5, "fc1": 0.25})
    assert removed(result) == {1: 0, 2: 8, 3: 30, 4: 0}
    assert result.model.conv2.out_channels == 8 and result.model.fc1.out_features == 90
    assert result.model.conv1.out_channels == 6 and result.model.fc2.out_features == 84
    assert result.plan.ratio == round(38 / 226, 6)  # fraction of prunable channels removed


def test_per_layer_ratios_accept_group_ids():
    assert removed(prune(lenet(), X, ratio={1: 0.5})) == {1: 3, 2: 0, 3: 0, 4: 0}


def test_per_layer_ratios_are_exact_under_the_oracle():
    model = lenet()
    _, dead = kill_some(model, X, [0, 8, 30, 0])
    assert_exact(model, X, dead, ratio={"conv2": 0.5, "fc1": 0.25})


def test_per_layer_ratios_exact_on_resnet18():
    model = resnet18()
    graph = trace(model, X_RESNET)
    names = {g.id: next(m.module for m in g.members if m.role == "out") for g in graph.prunable}
    ratios = {names[g.id]: 0.5 for g in graph.prunable[:4]}
    want = [g.channels // 2 if g.id in [h.id for h in graph.prunable[:4]] else 0
            for g in graph.prunable]
    _, dead = kill_some(model, X_RESNET, want)
    assert_exact(model, X_RESNET, dead, ratio=ratios)


@pytest.mark.parametrize(("ratio", "match"), [
    ({"conv9": 0.5}, "produces no prunable channels"),
    ({"fc3": 0.5}, "produces no prunable channels"),  # the output layer's channels stay
    ({"conv1": 1.5}, r"ratio for 'conv1' must be in \[0, 1\)"),
])
def test_bad_per_layer_ratios_are_refused(ratio, match):
    with pytest.raises(SurgeryError, match=match):
        prune(lenet(), X, ratio=ratio)


def test_conflicting_ratios_for_one_group_are_refused():
    graph = trace(resnet18(), X_RESNET)
    stem = graph.prunable[0]
    producers = [m.module for m in stem.members if m.role == "out"]
    with pytest.raises(SurgeryError, match="conflicting ratios"):
        prune(resnet18(), X_RESNET, ratio={producers[0]: 0.5, producers[-1]: 0.25})


# global ranking

def test_global_ranking_removes_floor_ratio_of_all_channels():
    result = prune(lenet(), X, budget=Budget(ratio=0.5, global_ranking=True))
    assert sum(removed(result).values()) == 226 // 2
    assert result.plan.ratio == 0.5


def test_global_ranking_keeps_one_channel_per_group():
    result = prune(lenet(), X, budget=Budget(ratio=0.99, global_ranking=True))
    assert [g.channels - len(g.removed_channels) for g in result.plan.groups] == [1, 1, 1, 1]


def test_global_ranking_is_invariant_to_a_layers_scale():
    """Scores are normalised by their group's mean, so scaling one layer changes nothing."""
    model = lenet()
    before = prune(model, X, budget=Budget(ratio=0.4, global_ranking=True)).plan
    with torch.no_grad():
        model.fc1.weight.mul_(100.0)
    after = prune(model, X, budget=Budget(ratio=0.4, global_ranking=True)).plan
    assert before == after


def test_global_ranking_differs_from_uniform():
    uniform = removed(prune(lenet(), X, ratio=0.5))
    global_ = removed(prune(lenet(), X, budget=Budget(ratio=0.5, global_ranking=True)))
    assert sum(uniform.values()) == sum(global_.values()) == 113 and uniform != global_


def test_global_ranking_exact_under_the_oracle():
    model = lenet()
    _, dead = kill_some(model, X, [2, 5, 40, 20])
    assert_exact(model, X, dead, budget=Budget(ratio=67 / 226, global_ranking=True))


def test_global_ranking_round_to_rounds_kept_counts_up():
    result = prune(lenet(), X, budget=Budget(ratio=0.5, global_ranking=True, round_to=8))
    kept = [g.channels - len(g.removed_channels) for g in result.plan.groups]
    assert all(k % 8 == 0 or k == g.channels for k, g in zip(kept, result.plan.groups))


# target_macs

def test_mac_model_matches_fvcore_on_pruned_models():
    model = resnet18()
    graph = trace(model, X_RESNET)
    macs = MacModel(model, count_flops(model, X_RESNET).by_module, graph.prunable)
    result = prune(model, X_RESNET, ratio={"layer1.0.conv1": 0.5, "layer3.1.conv1": 0.25,
                                           "conv1": 0.75})
    counts = {g.group: len(g.removed_channels) for g in result.plan.groups}
    real = count_flops(result.model, X_RESNET).total
    assert real <= macs.estimate(counts) <= real + 1024  # only avgpool is not modelled


@pytest.mark.parametrize("fused", [True, False])
def test_mac_model_matches_fvcore_on_pruned_attention_heads(fused):
    """timm's attention runs sdpa (or q @ k^T and attn @ v) in the scope of ``attn``, which no
    group names: the graph's sites scale those MACs with the kept heads, exactly."""
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                            num_classes=10).eval()
    for block in vit.blocks:
        block.attn.fused_attn = fused
    x = torch.randn(1, 3, 32, 32)
    graph = trace(vit, x)
    macs = MacModel(vit, count_flops(vit, x).by_module, graph.prunable, graph.sites)
    for ratio in (0.25, 0.5, 0.75):
        result = prune(vit, x, ratio=ratio)
        assert macs.estimate(removed(result)) == count_flops(result.model, x).total


@pytest.mark.parametrize("global_ranking", [False, True])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_target_macs_lands_within_two_percent_on_lenet(fraction, global_ranking):
    model = lenet()
    target = int(fraction * count_flops(model, X).total)
    result = prune(model, X, budget=Budget(target_macs=target, global_ranking=global_ranking))
    assert 0.98 * target <= count_flops(result.model, X).total <= target


@pytest.mark.parametrize("global_ranking", [False, True])
def test_target_macs_lands_within_two_percent_on_resnet18(global_ranking):
    model = resnet18()
    target = int(0.4 * count_flops(model, X_RESNET).total)
    result = prune(model, X_RESNET, budget=Budget(target_macs=target, global_ranking=global_ranking))
    assert 0.98 * target <= count_flops(result.model, X_RESNET).total <= target
    assert lint(result.model, X_RESNET) == []


def test_target_macs_with_global_ranking_on_mobilenet_v2_at_64(recwarn):
    """The case reported at 0.976x of the target: now 0.994x (0.05 to 0.95 of the dense MACs
    all land within 0.6%)."""
    torch.manual_seed(0)
    model, x = torchvision.models.mobilenet_v2().eval(), torch.zeros(1, 3, 64, 64)
    target = int(0.3 * count_flops(model, x).total)
    result = prune(model, x, budget=Budget(target_macs=target, global_ranking=True))
    assert 0.98 * target <= count_flops(result.model, x).total <= target
    assert not [w for w in recwarn if "band" in str(w.message)]


def test_target_macs_outside_the_band_says_so_and_why():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(),
                                torch.nn.Conv2d(2, 1, 3)).eval()
    x = torch.zeros(1, 1, 8, 8)
    target = int(0.7 * count_flops(model, x).total)  # one channel of two: 0.5x, too far
    with pytest.warns(UserWarning, match=r"\(0\.71\dx\), below the 2% band: no channel"):
        result = prune(model, x, budget=Budget(target_macs=target))
    assert count_flops(result.model, x).total < 0.98 * target


def test_target_macs_exact_under_the_oracle():
    """Dead channels score 0, so they go first; the target is the MACs without them."""
    model = resnet18()
    graph, dead = kill_some(model, X_RESNET, [g.channels // 3 for g in
                                              trace(model, X_RESNET).prunable])
    target = MacModel(model, count_flops(model, X_RESNET).by_module, graph.prunable).estimate(
        {gid: len(c) for gid, c in dead.items()})
    assert_exact(model, X_RESNET, dead, budget=Budget(target_macs=target, global_ranking=True))


def test_unreachable_target_is_refused():
    with pytest.raises(SurgeryError, match="cannot reach target_macs=1,000"):
        prune(lenet(), X, budget=Budget(target_macs=1000))


@pytest.mark.parametrize(("settings", "match"), [
    ({}, "exactly one of ratio= and target_macs="),
    ({"ratio": 0.5, "target_macs": 1000}, "exactly one of"),
    ({"target_macs": 0}, "target_macs must be a positive integer"),
    ({"target_macs": 100_000, "round_to": 8}, "round_to cannot be combined"),
    ({"ratio": {"conv1": 0.5}, "global_ranking": True}, "exclude each other"),
])
def test_bad_settings_are_refused(settings, match):
    with pytest.raises(SurgeryError, match=match):
        prune(lenet(), X, budget=Budget(**settings))


@pytest.mark.parametrize("settings", [{}, {"ratio": 0.5, "budget": Budget(ratio=0.5)},
                                      {"ratio": 0.5, "latency": LatencyTarget(5.0)}])
def test_prune_takes_exactly_one_budget(settings):
    with pytest.raises(SurgeryError, match="exactly one of ratio=, budget="):
        prune(lenet(), X, **settings)


def test_budget_is_a_frozen_value():
    budget = Budget(ratio=0.5)
    with pytest.raises(AttributeError):
        budget.ratio = 0.3  # type: ignore[misc]


@pytest.mark.parametrize("settings", [{"ratio": 0.5, "final_macs": 50_000},
                                      {"target_macs": 100_000, "final_macs": 0}])
def test_final_macs_needs_a_positive_target(settings):
    with pytest.raises(SurgeryError, match="final_macs .* needs target_macs"):
        Budget(**settings)


def skewed_scores(graph):
    """fc1's channels: one strong, the rest near zero (a layer after L1 training), so a
    global ranking of mean-normalised scores takes every weak one first."""
    scores = {g.id: torch.rand(g.channels, generator=torch.Generator().manual_seed(g.id)) + 1
              for g in graph.prunable}
    fc1 = next(g for g in graph.prunable if g.channels == 120)
    scores[fc1.id] = torch.full((120,), 1e-3)
    scores[fc1.id][0] = 100.0
    return fc1, scores


@pytest.mark.parametrize("budget", [{"ratio": 0.5, "global_ranking": True},
                                    {"target_macs": 200_000, "global_ranking": True},
                                    {"ratio": 0.9}])
def test_max_ratio_caps_what_one_group_loses(budget):
    model = lenet()
    graph = trace(model, X)
    fc1, scores = skewed_scores(graph)
    layer_macs = count_flops(model, X).by_module
    free = removal_counts(model, graph, scores, Budget(**budget), layer_macs)
    capped = removal_counts(model, graph, scores, Budget(**budget, max_ratio=0.5), layer_macs)
    assert free[fc1.id] > 60 and capped[fc1.id] == 60  # floor(0.5 * 120)
    assert all(capped[g.id] <= g.channels // 2 for g in graph.prunable)
    if "target_macs" in budget:  # the cap moves the cut elsewhere: the target is still met
        result = prune(model, X, budget=Budget(**budget, max_ratio=0.5))
        assert 0.98 * 200_000 <= count_flops(result.model, X).total <= 200_000  # X: batch 2


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, True, "0.5", {1: 2.0}])
def test_max_ratio_out_of_range_is_an_error(bad):
    with pytest.raises(SurgeryError, match="max_ratio"):
        Budget(ratio=0.5, max_ratio=bad)


@pytest.mark.parametrize("target", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_latency_target_must_be_a_finite_positive_time(target):
    with pytest.raises(SurgeryError, match="positive number of milliseconds"):
        LatencyTarget(target)

"""Tests for surgery.recover.optim_state: one step after a prune equals the step of a model built
small.

The reference is built independently of the index-shadow mechanism: a fresh LeNet with the
pruned widths whose weights and optimizer state are ``index_select``ed from the dense ones with
the kept indices the plan lists per (module, dim).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from graphs import trace
from surgery.io.models import LeNet
from surgery.plan.plan import Plan
from surgery.prune import prune
from surgery.recover.optim_state import kept_indices, prune_with_optimizer, slice_tensor

X = torch.zeros(1, 1, 28, 28)
LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)


def step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    x, y = batch(seed)
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def make_optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    """Two param groups: weights with weight decay, the rest (biases, scales) without."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if n.endswith("weight")]
    plain = [p for n, p in named if not n.endswith("weight")]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": plain, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=1e-3, amsgrad=True)


def reference_slice(t: torch.Tensor, module: str, kept: dict[tuple[str, int], list[int]]
                    ) -> torch.Tensor:
    """index_select ``t`` (a parameter of ``module`` or its state) along each planned dim."""
    for dim in range(min(t.dim(), 2)):
        if (module, dim) in kept:
            t = t.index_select(dim, torch.tensor(kept[(module, dim)]))
    return t.clone()


def planned_kept(plan: Plan) -> dict[tuple[str, int], list[int]]:
    return {(m.module, m.dim): m.kept for g in plan.groups for m in g.members if m.removed}


def small_reference(dense: dict[str, torch.Tensor], kept: dict) -> LeNet:
    """A LeNet built at the pruned widths, holding the dense weights' kept entries."""
    model = LeNet()
    for layer in LAYERS:
        w = reference_slice(dense[f"{layer}.weight"], layer, kept)
        old = getattr(model, layer)
        new = nn.Conv2d(w.shape[1], w.shape[0], 5) if isinstance(old, nn.Conv2d) \
            else nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            new.weight.copy_(w)
            new.bias.copy_(reference_slice(dense[f"{layer}.bias"], layer, kept))
        setattr(model, layer, new)
    return model


def trained_dense(kind: str, frozen: str | None = None):
    torch.manual_seed(0)
    model = LeNet()
    if frozen:
        model.get_parameter(frozen).requires_grad_(False)
    opt = make_optimizer(kind, model)
    for seed in range(3):
        step(model, opt, seed)
    return model, opt


def state_by_name(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, dict]:
    return {n: {k: v.clone() if isinstance(v, torch.Tensor) else v
                for k, v in opt.state[p].items()}
            for n, p in model.named_parameters() if p in opt.state}


def worst_difference(model, opt, ref, ref_opt) -> float:
    """Largest |difference| over parameters and optimizer state of two same-named models."""
    worst = 0.0
    for name, p in model.named_parameters():
        q = ref.get_parameter(name)
        worst = max(worst, float((p - q).detach().abs().max()))
        for key, value in ref_opt.state[q].items():
            worst = max(worst, float((opt.state[p][key] - value).abs().max()))
    return worst


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_step_after_prune_equals_step_of_model_built_small(kind):
    model, opt = trained_dense(kind)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    dense_state = state_by_name(model, opt)
    plan = prune_with_optimizer(model, X, opt, ratio=0.5).result.plan
    kept = planned_kept(plan)

    ref = small_reference(dense, kept)
    ref_opt = make_optimizer(kind, ref)
    for name, p in ref.named_parameters():
        layer = name.rpartition(".")[0]
        ref_opt.state[p] = {k: reference_slice(v, layer, kept) if v.dim() else v.clone()
                            for k, v in dense_state[name].items()}
    for name, p in model.named_parameters():  # same starting point, same shapes
        assert torch.equal(p, ref.get_parameter(name)), name
    step(model, opt, seed=7)
    step(ref, ref_opt, seed=7)

    worst = worst_difference(model, opt, ref, ref_opt)
    print(f"{kind}: max |difference| {worst:.3g}")
    assert worst <= 1e-6  # measured 0 for both (the same float32 ops on the same data)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == \
        {id(p) for p in model.parameters()}


def test_scalar_state_kept_and_scheduler_still_bound():
    model, opt = trained_dense("adamw")
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    prune_with_optimizer(model, X, opt, ratio=0.5)
    assert float(opt.state[model.fc1.weight]["step"]) == 3.0
    assert opt.state[model.fc1.weight]["exp_avg"].shape == model.fc1.weight.shape
    step(model, opt, seed=4)
    scheduler.step()
    assert scheduler.optimizer is opt
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4]


def test_frozen_parameter_stays_frozen_and_unchanged():
    model, opt = trained_dense("sgd", frozen="conv2.weight")
    before = model.conv2.weight.detach().clone()
    plan = prune_with_optimizer(model, X, opt, ratio=0.5).result.plan
    kept = planned_kept(plan)
    assert model.conv2.weight.requires_grad is False
    assert all(p is not model.conv2.weight for g in opt.param_groups for p in g["params"])
    step(model, opt, seed=5)
    assert torch.equal(model.conv2.weight, reference_slice(before, "conv2", kept))


def test_kept_indices_match_the_plan_for_a_batchnorm_net():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    plan_result = prune_with_optimizer(model, torch.zeros(1, 3, 8, 8), None, ratio=0.5)
    kept = plan_result.kept
    group = plan_result.result.plan.groups[0]
    channels = torch.tensor(group.members[0].kept)
    assert torch.equal(kept["1.weight"], channels)  # the BatchNorm's gamma
    assert torch.equal(kept["0.bias"], channels)
    # conv 0 weight (8, 3, 3, 3): rows of 27 consecutive flat indices per kept channel
    expected = (channels[:, None] * 27 + torch.arange(27)).flatten()
    assert torch.equal(kept["0.weight"], expected)


def test_slice_tensor_and_kept_indices_leave_model_alone():
    model = LeNet()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    plan = prune_with_optimizer(LeNet(), X, None, ratio=0.25).result.plan
    kept = kept_indices(model, plan)
    assert set(kept) == {f"{n}.{p}" for n in LAYERS for p in ("weight", "bias")}
    assert torch.equal(kept["fc3.bias"], torch.arange(10))  # touched on its input side only
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert slice_tensor(torch.arange(4.0), torch.tensor([0, 3]), torch.Size([2])).tolist() \
        == [0.0, 3.0]


class Conv1D(nn.Module):
    """Hugging Face GPT-2's ``Conv1D`` (transformers.pytorch_utils), as written there: an
    (in, out) weight applied by ``torch.addmm``, its width in the int attribute ``nf``."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.5)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class ScaledMLP(nn.Module):
    """Conv1D(4 -> 8), a layer scale ``gamma`` on the root, ReLU, Linear(8 -> 3): the 8 hidden
    channels are members by name (up.weight dim 1, up.bias, gamma), a size (up.nf) and a layer
    dim (down's inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = Conv1D(8, 4)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.down = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x) * self.gamma))


MLP_DIMS = {"up.weight": 1, "up.bias": 0, "gamma": 0, "down.weight": 1}  # where channels sit


def mlp_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_step_after_prune_equals_step_of_model_built_small_with_named_parameters(kind):
    """Parameters named by members (a layer scale on the root, GPT-2 Conv1D's (in, out)
    weight, sliced along dim 1) keep their moments; the SIZE member ``nf`` has none."""
    torch.manual_seed(0)
    model = ScaledMLP()
    opt = make_optimizer(kind, model)
    for seed in range(3):
        mlp_step(model, opt, seed)
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    dense_state = state_by_name(model, opt)
    plan = prune_with_optimizer(model, torch.zeros(2, 4), opt, ratio=0.5).result.plan
    kept = torch.tensor(next(m.kept for g in plan.groups for m in g.members if m.removed))
    assert model.up.nf == 4 and model.gamma.shape == (4,) and model.up.weight.shape == (4, 4)

    ref = ScaledMLP()
    ref.up.nf = 4
    for name, p in list(ref.named_parameters()):
        cut = dense[name].index_select(MLP_DIMS[name], kept) if name in MLP_DIMS else dense[name]
        owner, _, attr = name.rpartition(".")
        (ref.get_submodule(owner) if owner else ref)._parameters[attr] = nn.Parameter(cut)
    ref_opt = make_optimizer(kind, ref)
    for name, p in ref.named_parameters():
        ref_opt.state[p] = {k: v.index_select(MLP_DIMS[name], kept).clone()
                            if v.dim() and name in MLP_DIMS else v.clone()
                            for k, v in dense_state[name].items()}
    mlp_step(model, opt, seed=7)
    mlp_step(ref, ref_opt, seed=7)

    worst = worst_difference(model, opt, ref, ref_opt)
    print(f"{kind}: max |difference| {worst:.3g}")
    assert worst <= 1e-6  # measured 0 for both


def test_layer_scales_of_an_inexact_group_keep_their_sliced_moments():
    """ConvNeXt's residual stream (a LayerNorm over the channels: not exact) prunes as prune()
    does, with every moment, the layer scales' included, cut to the kept channels."""
    torch.manual_seed(0)
    model = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    opt.step()
    stream = next(g for g in trace(model, x).prunable if g.inexact and g.channels == 16)
    expected = prune(model, x, ratio={stream.id: 0.5}).model
    dense = opt.state[model.features[1][0].layer_scale]["exp_avg"].clone()
    plan = prune_with_optimizer(model, x, opt, ratio={stream.id: 0.5}).result.plan

    for name, p in model.named_parameters():
        assert torch.equal(p, expected.get_parameter(name)), name
        assert all(v.shape == p.shape for v in opt.state[p].values() if v.dim()), name
    scale = next(m for g in plan.groups for m in g.members
                 if m.attr == "layer_scale" and m.module == "features.1.0")
    assert torch.equal(opt.state[model.features[1][0].layer_scale]["exp_avg"],
                       dense.index_select(0, torch.tensor(scale.kept)))
    nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())

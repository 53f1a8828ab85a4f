"""Pruning from several threads at once, tied weights, and hooks on rebuilt layers."""

import threading

import torch
import torchvision
from torch import nn

from graphs import trace
from graphs.modes import eval_mode
from surgery import Budget, prune
from surgery.io.models import LeNet
from surgery.measure.flops import count_params
from surgery.testing.oracle import check, randomize_weights

X28 = torch.zeros(1, 1, 28, 28)
X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _run_threads(jobs):
    results, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def work(i, job):
        barrier.wait()
        try:
            results[i] = job()
        except Exception as exc:  # noqa: BLE001  (recorded and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    return results


def test_threads_pruning_different_and_same_models_match_single_threaded():
    torch.manual_seed(0)
    lenet, resnet = LeNet().eval(), torchvision.models.resnet18(num_classes=10).eval()
    want_lenet = prune(lenet, X28, ratio=0.5).plan
    want_resnet = prune(resnet, X32, ratio=0.3).plan
    jobs = [lambda: prune(lenet, X28, ratio=0.5).plan,
            lambda: prune(resnet, X32, ratio=0.3).plan] * 2  # the same models in 2 threads each
    got = _run_threads(jobs)
    assert all(p == want_lenet for p in got[0::2]) and all(p == want_resnet for p in got[1::2])
    assert _no_hooks_left(lenet) and _no_hooks_left(resnet)
    assert nn.Module.__call__ is torch.nn.modules.module.Module.__call__
    assert lenet(X28).shape == (1, 10) and resnet(X32).shape == (1, 10)  # plain forwards work


def test_threads_tracing_while_others_run_plain_forwards():
    lenet = LeNet().eval()
    want = lenet(X28)
    outputs = _run_threads([lambda: trace(lenet, X28), lambda: lenet(X28)] * 3)
    assert all(torch.equal(out, want) for out in outputs[1::2])
    assert all(len(g.prunable) == 4 for g in outputs[0::2]) and _no_hooks_left(lenet)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3.weight = self.c2.weight  # tied
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))


def test_tied_weights_prune_together_exactly_and_stay_tied():
    """c2 and c3 hold one weight: c2's input and output and c3's are one group (c1 -> c2 -> c3
    -> head), cut once. By hand: c1 3*2*9+2, c2 2*2*9+2, c3's bias 2, head 2*2+2: 102."""
    torch.manual_seed(0)
    model, x = randomize_weights(Tied()), torch.randn(1, 3, 8, 8)
    c = check(model, x, 0.5)
    assert c.removed == c.dead and c.error <= 1e-5 and c.output_scale > 1e-6
    (group,) = c.graph.prunable
    assert set(group.modules()) == {"c1", "c2", "c3", "head"}
    result = c.result
    assert result.model.c3.weight is result.model.c2.weight
    assert result.params_before == count_params(model) == 274 and result.params_after == 102


def test_forward_hooks_and_pre_hooks_survive_rebuilding():
    torch.manual_seed(0)
    model = LeNet().eval()
    seen = []
    model.conv2.register_forward_hook(lambda m, i, o: seen.append(("hook", o.shape[1])))
    model.fc1.register_forward_pre_hook(lambda m, i: seen.append(("pre", i[0].shape[1])))
    result = prune(model, X28, ratio=0.5)
    seen.clear()
    result.model(X28)
    assert seen == [("hook", 8), ("pre", 128)]


def test_memory_shared_by_two_parameters_is_cut_once_and_stays_shared():
    torch.manual_seed(0)
    model = randomize_weights(Tied())
    model.c3.weight = nn.Parameter(torch.empty(0))  # untie, then share memory only
    model.c3.weight.data = model.c2.weight.data
    assert model.c3.weight is not model.c2.weight
    x = torch.randn(1, 3, 8, 8)
    (group,) = trace(model, x).prunable
    assert {"c2", "c3"} <= set(group.modules())
    result = prune(model, x, ratio=0.5, inplace=True)
    c2, c3 = result.model.c2, result.model.c3
    assert c3.weight is not c2.weight and c3.weight.data_ptr() == c2.weight.data_ptr()
    assert c2.weight.shape == (2, 2, 3, 3) and result.params_after < result.params_before


def _all_flags(model):
    return {name: m.training for name, m in model.named_modules()}


def test_overlapping_eval_mode_blocks_restore_the_flags_of_the_first():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout()).train()
    model[2].eval()
    before = _all_flags(model)
    outer, inner = eval_mode(model), eval_mode(model[1])
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # ends first, as a thread finishing first would
    assert not model[1].training  # still held by the inner block
    inner.__exit__(None, None, None)
    assert _all_flags(model) == before


def test_threads_pruning_and_tracing_a_train_mode_model_leave_it_in_train_mode():
    model = LeNet().train()
    model.fc3.eval()  # mixed flags: each must come back as it was
    before = _all_flags(model)
    jobs = [lambda: prune(model, X28, budget=Budget(target_macs=150_000)), lambda: trace(model, X28),
            lambda: trace(model, X28)]
    for _ in range(4):
        _run_threads(jobs)
        assert _all_flags(model) == before


def test_a_capture_flips_no_flag_of_the_users_model():
    """The capture runs a shadow of the module tree in eval mode: while it runs, the user's
    modules stay in training mode (a training forward in another thread keeps training)."""
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((user.training, user[1].training))
            return x

    user = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), Probe(), nn.Conv2d(4, 2, 1))
    user.train()
    running = user[1].running_mean.clone()
    prune(user, torch.randn(2, 3, 4, 4), ratio=0.5)
    assert seen and all(flags == (True, True) for flags in seen)
    assert torch.equal(user[1].running_mean, running)

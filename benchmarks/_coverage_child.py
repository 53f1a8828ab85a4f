"""One tool on one model for coverage.py: ``_coverage_child.py ours|tp ENTRY_JSON [BYTES]`` prints a JSON line.

The record: captured, runs, exact (or exact_text), prunable, layers, kept, seconds, status (the
first error, short). See coverage.HEADER for the definitions. An entry's ``compare_at`` names the
submodule whose outputs are compared instead of the model's (a detector's ``head``: score
threshold, top-k and NMS on random weights turn 1e-7 differences into other or reordered boxes).
"""

from __future__ import annotations

import copy
import json
import resource
import sys
import time
import warnings

import torch
from torch import nn

if __package__:  # imported as benchmarks._coverage_child (the tests)
    from benchmarks._common import short_error
    from benchmarks.coverage_models import build
else:  # run as benchmarks/_coverage_child.py: benchmarks/ is on the path
    from _common import short_error
    from coverage_models import build

from graphs import trace
from graphs.datamodel import OUT
from surgery import prune
from surgery.testing.oracle import check, outputs_at, relative_error

EXACT_TOL, RATIO, VACUOUS = 1e-4, 0.5, 1e-6
LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def same_structure(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return [t.shape for t in a] == [t.shape for t in b]


def layer_channels(model: nn.Module) -> dict[str, int]:
    return {n: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, LAYERS)}


def shrunk(covered: set, before: dict[str, int], pruned: nn.Module) -> float:
    """Fraction of Conv/Linear output channels (``before``: the dense widths) in ``covered``
    whose layer the prune made narrower: a layer listed in a group but left whole does not
    count."""
    after = layer_channels(pruned)
    kept = {(name, i) for name, i in covered if after.get(name, before[name]) < before[name]}
    return len(kept) / max(sum(before.values()), 1)


def ours(entry: dict, rec: dict) -> None:
    model, x = build(entry)
    at = entry.get("compare_at")
    graph = trace(model, x)
    rec["captured"] = True
    total = sum(g.channels for g in graph.groups)
    rec["prunable"] = sum(g.channels for g in graph.prunable) / max(total, 1)
    widths = layer_channels(model)
    covered = {(m.module, p) for g in graph.prunable for m in g.members
               if m.role == OUT and not m.attr and m.module in widths
               for c in m.indices for p in c}
    rec["layers"] = len(covered) / max(sum(widths.values()), 1)
    expected = outputs_at(model, x, at)
    t0 = time.perf_counter()
    result = prune(model, x, ratio=RATIO)
    rec["seconds"] = time.perf_counter() - t0
    rec["kept"] = result.params_after / max(result.params_before, 1)
    rec["layers"] = shrunk(covered, widths, result.model)
    rec["runs"] = same_structure(outputs_at(result.model, x, at), expected) and rec["kept"] < 1
    if not rec["runs"]:
        rec["status"] = "nothing pruned" if rec["kept"] >= 1 else "output structure changed"
        return
    c = check(model, x, RATIO, at=at)
    rec["exact"] = c.removed == c.dead and c.shape_kept and c.error <= EXACT_TOL \
        and c.output_scale >= VACUOUS and bool(c.dead)
    rec["error"] = c.error
    if not c.dead:
        rec["exact_text"] = "no exact group"
    elif c.output_scale < VACUOUS:
        rec["exact_text"] = "vacuous"
    elif not rec["exact"]:
        rec["status"] = ("removed != killed" if c.removed != c.dead
                         else f"rel err {c.error:.0e}")


def output_layers(model: nn.Module, x) -> list[nn.Module]:
    """Conv/Linear layers whose outputs are model outputs (our trace), else the last one."""
    try:
        graph = trace(model, x)
        names = {m.module for g in graph.groups if "model output" in g.reason
                 for m in g.members if m.role == OUT}
    except Exception:  # noqa: BLE001 - fall back to the last layer, as survey.py does
        names = set()
    found = [m for n, m in model.named_modules() if n in names and isinstance(m, LAYERS)]
    return found or [m for m in model.modules() if isinstance(m, LAYERS)][-1:]


def tp_pruner(model: nn.Module, x, ignored: list[nn.Module]):
    import torch_pruning as tp

    return tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                     pruning_ratio=RATIO, ignored_layers=ignored)


def theirs(entry: dict, rec: dict) -> None:
    import torch_pruning as tp

    model, x = build(entry)
    at = entry.get("compare_at")
    ignored = output_layers(model, x)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    rec["captured"] = True
    widths, names = layer_channels(model), {m: n for n, m in model.named_modules()}
    covered = set()
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=LAYERS):
        for dep, idxs in group:
            m = dep.target.module
            if isinstance(m, LAYERS) and dg.is_out_channel_pruning_fn(dep.handler):
                covered.update((names[m], int(i)) for i in idxs if 0 <= int(i) < widths[names[m]])
    rec["layers"] = len(covered) / max(sum(widths.values()), 1)
    expected = outputs_at(model, x, at)
    pruned = copy.deepcopy(model)
    before = sum(p.numel() for p in pruned.parameters())
    t0 = time.perf_counter()
    tp_pruner(pruned, x, names_to(pruned, model, ignored)).step()
    rec["seconds"] = time.perf_counter() - t0
    rec["kept"] = sum(p.numel() for p in pruned.parameters()) / max(before, 1)
    rec["layers"] = shrunk(covered, widths, pruned)
    rec["runs"] = same_structure(outputs_at(pruned, x, at), expected) and rec["kept"] < 1
    if not rec["runs"]:
        rec["status"] = "nothing pruned" if rec["kept"] >= 1 else "output structure changed"
        return
    tp_exact(model, x, ignored, rec, at)


def names_to(target: nn.Module, source: nn.Module, layers: list[nn.Module]) -> list[nn.Module]:
    """The modules of ``target`` at the names ``layers`` have in ``source`` (a deepcopy)."""
    names = {m: n for n, m in source.named_modules()}
    return [target.get_submodule(names[m]) for m in layers]


def tp_exact(model: nn.Module, x, ignored: list[nn.Module], rec: dict,
             at: str | None = None) -> None:
    """Zero what tp would prune in every member of its group, prune with tp, compare.

    Like our oracle, groups holding a norm over the channels (LayerNorm, GroupNorm, RMSNorm) are
    left alone: pruning them cannot be exact.
    """
    probe = copy.deepcopy(model)
    names = {m: n for n, m in probe.named_modules()}
    pruner = tp_pruner(probe, x, names_to(probe, model, ignored))
    plan = [(names.get(dep.target.module), pruner.DG.is_out_channel_pruning_fn(dep.handler),
             [int(i) for i in idxs])
            for group in pruner.step(interactive=True) if exact_group(group)
            for dep, idxs in group]
    for name, out, idxs in plan:
        if name is not None:
            zero(model.get_submodule(name), out, idxs)
    expected = outputs_at(model, x, at)
    for group in tp_pruner(model, x, ignored).step(interactive=True):
        if exact_group(group):
            group.prune()
    got = outputs_at(model, x, at)
    scale = float(torch.cat([e.flatten().abs() for e in expected]).mean()) if expected else 0.0
    same = same_structure(got, expected)
    error = max((relative_error(g, e) for g, e in zip(got, expected)), default=0.0) \
        if same else float("inf")
    rec["error"] = error
    rec["exact"] = same and error <= EXACT_TOL and scale >= VACUOUS and bool(plan)
    if scale < VACUOUS:
        rec["exact_text"] = "vacuous"
    elif not plan:
        rec["exact_text"] = "no exact group"
    elif not rec["exact"]:
        rec["status"] = "output structure changed" if not same else f"rel err {error:.0e}"


def exact_group(group) -> bool:
    """No member normalises over the channels (its statistics would change)."""
    return not any(isinstance(dep.target.module, (nn.LayerNorm, nn.GroupNorm))
                   or "RMSNorm" in type(dep.target.module).__name__ for dep, _ in group)


def zero(m: nn.Module, out: bool, idxs: list[int]) -> None:
    """Zero channels ``idxs`` of ``m``: producer rows, bias and norm affine, or consumer columns."""
    weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
    if not isinstance(weight, torch.Tensor) or not idxs:
        return
    index = torch.tensor(idxs, dtype=torch.long)
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    with torch.no_grad():
        if out:
            if weight.dim() == 1 or getattr(m, "groups", 1) == 1 or not transposed:
                weight.index_fill_(1 if transposed else 0, index, 0.0)
            if isinstance(bias, torch.Tensor):
                bias.index_fill_(0, index, 0.0)
        elif weight.dim() > 1 and getattr(m, "groups", 1) == 1:
            weight.index_fill_(0 if transposed else 1, index, 0.0)


def record(tool: str, entry: dict) -> dict:
    """One tool's record on one model: a failure is a ``status``, never an exception."""
    rec: dict = {"captured": False}
    t0 = time.perf_counter()
    try:
        (ours if tool == "ours" else theirs)(entry, rec)
    except Exception as exc:  # noqa: BLE001 - a failure is a result of the survey
        rec["status"] = short_error(exc, 120)
    rec["wall"] = time.perf_counter() - t0
    return rec


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    tool, entry = sys.argv[1], json.loads(sys.argv[2])
    if len(sys.argv) > 3:  # the address-space limit in bytes
        resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
    print(json.dumps(record(tool, entry)), flush=True)


if __name__ == "__main__":
    main()

"""Every torchvision classifier through trace -> prune -> exactness oracle, and torch-pruning's groups.

Usage:
    .venv/bin/python benchmarks/survey.py                 # all 80 models of torchvision.models (slow)
    .venv/bin/python benchmarks/survey.py resnet18 vgg11  # just these
    .venv/bin/python benchmarks/survey.py --no-peer       # skip the torch-pruning comparison

Writes benchmarks/results/survey.md (family, model, traced, pruned, exact, peer result) and prints it.
``check_model(name)`` is the per-model check; other scripts and families reuse it (pass ``exact=False``
for families whose channel-normalising layers make the oracle inapplicable: the row then checks
that the pruned model runs, keeps its output shape and shrinks).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import astuple, dataclass
from pathlib import Path

import torch
import torchvision
from _common import markdown_table, short_error
from builders import build_model
from torch import nn

from graphs import trace
from graphs.datamodel import OUT
from surgery import prune
from surgery.atomic import write_text
from surgery.testing.oracle import (
    kill_channels,
    relative_error,
)

HERE = Path(__file__).resolve().parent

FAMILY_PREFIXES = [  # (prefix, family), first match wins
    ("alexnet", "AlexNet"), ("vgg", "VGG"), ("resnext", "ResNet"), ("wide_resnet", "ResNet"),
    ("resnet", "ResNet"), ("squeezenet", "SqueezeNet"), ("densenet", "DenseNet"),
    ("googlenet", "GoogLeNet"), ("inception", "Inception"), ("mobilenet_v2", "MobileNetV2"),
    ("mobilenet_v3", "MobileNetV3"), ("mnasnet", "MNASNet"), ("shufflenet", "ShuffleNetV2"),
    ("efficientnet_v2", "EfficientNetV2"), ("efficientnet", "EfficientNet"), ("regnet", "RegNet"),
    ("convnext", "ConvNeXt"), ("vit", "ViT"), ("swin", "Swin"), ("maxvit", "MaxViT"),
]
MIN_SIZE = {"inception_v3": 75, "maxvit_t": 224, "vit": 224}  # name or prefix -> input side
EXACT_TOL = 1e-4
# torchvision zero-inits ViT's head and sets ConvNeXt/Swin/MaxViT layer scales tiny: re-randomise,
# or the oracle would compare two all-zero outputs.
# models whose torch-pruning graph build is not attempted (measured on a 24 GB machine)
PEER_SKIP = {"swin_t": "torch-pruning 1.6 exhausted 20 GB of memory building its graph"}
ZERO_INIT_FAMILIES = {"ViT", "ConvNeXt", "Swin", "MaxViT"}


@dataclass(frozen=True)
class Row:
    family: str
    model: str
    traced: str
    pruned: str
    exact: str
    peer: str


def family_of(name: str) -> str:
    return next((fam for prefix, fam in FAMILY_PREFIXES if name.startswith(prefix)), "other")


def input_size(name: str, default: int = 64) -> int:
    return next((s for key, s in MIN_SIZE.items() if name.startswith(key)), default)


def build(name: str) -> nn.Module:
    """Seeded random weights, non-trivial BN statistics, eval mode (no aux heads)."""
    return build_model(name, norms=True, weights=family_of(name) in ZERO_INIT_FAMILIES)


def check_model(name: str, ratio: float = 0.4, size: int | None = None, exact: bool = True,
                peer: bool = True) -> Row:
    """Trace, kill floor(ratio*C) channels per group, prune, compare outputs; peer groups."""
    model, side = build(name), size or input_size(name)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    family = family_of(name)
    try:
        graph = trace(model, x)
    except Exception as exc:  # noqa: BLE001 - report any failure as a row: this is a survey
        return Row(family, name, f"no: {short_error(exc)}", "-", "-", "-")
    traced = f"yes, {len(graph.prunable)}/{len(graph.groups)} groups prunable" + (
        f", {len(graph.unsupported)} unsupported ops" if graph.unsupported else "")
    peer_text = "not run" if not peer else (
        f"not run: {PEER_SKIP[name]}" if name in PEER_SKIP else peer_groups(model, x, graph))
    dead = kill_channels(model, graph, ratio) if exact else {}
    with torch.no_grad():
        expected = model(x)
    try:
        result = prune(model, x, ratio=ratio)
        with torch.no_grad():
            got = result.model(x)
    except Exception as exc:  # noqa: BLE001 - a broken surgery is a finding, not a crash
        return Row(family, name, traced, f"no: {short_error(exc)}", "-", peer_text)
    kept = result.params_after / result.params_before
    pruned = f"yes, params {kept:.0%} kept" if kept < 1 else "no channel removed"
    if got.shape != expected.shape:
        return Row(family, name, traced, pruned, f"no: shape {tuple(got.shape)}", peer_text)
    err = relative_error(got, expected)
    if float(expected.abs().mean()) < 1e-3:
        return Row(family, name, traced, pruned, "vacuous: output ~ 0", peer_text)
    removed = {g.group: g.removed_channels for g in result.plan.groups}
    if not exact:
        verdict = f"n/a (runs, shape kept; rel err {err:.0e})"
    elif removed != dead:
        verdict = "NO: removed != killed"
    else:
        verdict = f"{'yes' if err <= EXACT_TOL else 'NO'} (rel err {err:.0e})"
    return Row(family, name, traced, pruned, verdict, peer_text)


def peer_groups(model: nn.Module, x: torch.Tensor, graph) -> str:
    """Compare our coupled (layer, role) positions with torch-pruning's group of each root layer."""
    try:
        theirs = torch_pruning_groups(model, x)
    except Exception as exc:  # noqa: BLE001 - the peer failing on a model is a result
        return f"torch-pruning fails: {short_error(exc, 80)}"
    ours = our_groups(graph)
    differ = [root for root, items in theirs.items() if ours.get(root, {}) != items]
    grouped = [r for r in differ if _only_grouped_conv_inputs(model, theirs[r], ours.get(r, {}))]
    if not differ:
        return f"same {len(theirs)} groups"
    other = len(differ) - len(grouped)
    return (f"{len(theirs) - len(differ)}/{len(theirs)} same; {len(grouped)} differ only in "
            f"grouped-conv input coordinates" + (f"; {other} differ otherwise" if other else ""))


def torch_pruning_groups(model: nn.Module, x: torch.Tensor) -> dict[str, dict]:
    """root layer -> {(layer, role): positions} from torch_pruning.DependencyGraph."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1:]
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    groups = {}
    for group in dg.get_all_groups(ignored_layers=last):
        items: dict[tuple[str, str], set[int]] = {}
        for dep, idxs in group:
            m = dep.target.module
            role = _role(dg, m, dep.handler)
            if role and m in names:
                items.setdefault((names[m], role), set()).update(int(i) for i in idxs)
        groups[names[group[0].dep.target.module]] = items
    return groups


def _role(dg, m: nn.Module, handler) -> str | None:
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        return OUT
    if isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels > 1:
        return OUT  # depthwise: we record it as passing channels through (out only)
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        return OUT if dg.is_out_channel_pruning_fn(handler) else "in"
    return None


def our_groups(graph) -> dict[str, dict]:
    """root layer -> {(layer, role): positions} over all our groups holding the root's outputs."""
    groups: dict[str, dict] = {}
    for group in graph.groups:
        for root in (m.module for m in group.members if m.role == OUT):
            items = groups.setdefault(root, {})
            for m in group.members:
                items.setdefault((m.module, m.role), set()).update(
                    p for c in m.indices for p in c)
    return groups


def _only_grouped_conv_inputs(model: nn.Module, theirs: dict, ours: dict) -> bool:
    """torch-pruning lists input tensor channels of a grouped conv; we list weight dim 1 positions."""
    keys = {k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k)}
    return all(role == "in" and getattr(model.get_submodule(name), "groups", 1) > 1
               for name, role in keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "survey.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.models or torchvision.models.list_models(module=torchvision.models)
    rows, start = [], time.perf_counter()
    for name in sorted(names, key=lambda n: (family_of(n), n)):
        t0 = time.perf_counter()
        rows.append(check_model(name, args.ratio, peer=not args.no_peer))
        print(" | ".join(astuple(rows[-1])), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    table = markdown_table(["family", "model", "traced", "pruned", "exact", "peer result"],
                           [list(astuple(r)) for r in rows])
    text = (f"# torchvision classifiers: trace, prune (ratio {args.ratio}), exactness oracle\n\n"
            f"Inputs 2x3x64x64 (inception_v3 75x75, ViT/MaxViT 224x224), random weights with "
            f"randomised BN statistics, eval mode; torch {torch.__version__}, torchvision "
            f"{torchvision.__version__}; {time.perf_counter() - start:.0f} s in all.\n\n{table}\n")
    write_text(Path(args.out), text)
    print(text)


if __name__ == "__main__":
    main()

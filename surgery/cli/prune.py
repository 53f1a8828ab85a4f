"""``surgery prune MODEL --ratio R --out DIR``: prune and write weights + plan (see save())."""

from __future__ import annotations

import argparse

from surgery.cli.common import (
    add_force_argument,
    add_model_arguments,
    add_run_arguments,
    check_out_folder,
    model_and_input,
    parse_count,
    prepare_out_folder,
    record_num_classes,
)
from surgery.errors import SurgeryError
from surgery.io.saving import save
from surgery.measure.flops import count_flops
from surgery.plan.latency_target import parse_latency
from surgery.prune import PruneResult, prune

HELP = "prune a model and write weights + plan"
DESCRIPTION = """\
Remove whole channels (conv filters, linear features, attention heads) from a model and write
the smaller model: DIR/model.safetensors (weights) and DIR/plan.json (which channels went, so
`surgery export`, `surgery finetune` and `surgery report` can rebuild it). Coupled layers
(residual adds, concatenations, norms, attention) are pruned together. Prints params and MACs
before and after. Give either --ratio or --target-macs."""
EPILOG = """\
examples:
  surgery prune lenet --ratio 0.5 --out out/lenet
  surgery prune resnet18 --ratio 0.3 --global --out out/r18
  surgery prune resnet18 --target-macs 1G --num-classes 10 --out out/r18_1g
  surgery prune timm:convnext_atto --ratio 0.25 --dry-run
  surgery prune my_net.py:build --input-shape 1,3,64,64 --ratio conv2=0.5,fc1=0.3 --out out/my
"""


def parse_ratio(text: str) -> float | dict[str, float]:
    """``"0.5"`` -> 0.5; ``"conv2=0.5,fc1=0.3"`` -> per-layer ratios.

    Example:
        >>> parse_ratio("0.5"), parse_ratio("conv2=0.5,fc1=0.3")
        (0.5, {'conv2': 0.5, 'fc1': 0.3})
    """
    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item]
        ratios = {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise SurgeryError(f"--ratio must be a number like 0.5 or per-layer ratios like "
                           f"conv2=0.5,fc1=0.3, got {text!r}") from None
    if len(ratios) != len(pairs):
        names = [name.strip() for name, _ in pairs]
        twice = next(n for n in names if names.count(n) > 1)
        raise SurgeryError(f"--ratio names {twice!r} twice")
    return ratios


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--ratio", help="fraction of each group's channels to remove, in [0, 1), "
                   "or per layer: conv2=0.5,fc1=0.3")
    p.add_argument("--target-macs", metavar="N",
                   help="prune until MACs <= N (lands within 2%% below): 1.5G, 800M, 8000000000")
    p.add_argument("--target-latency",
                   help="prune until the measured latency <= T (12ms, 0.012s; a number: ms)")
    p.add_argument("--backend", default="eager", help="latency backend: eager, onnxruntime, "
                   "compile")
    p.add_argument("--threads", type=int, default=1, help="threads for latency measurement")
    p.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank all channels together instead of per group")
    p.add_argument("--max-ratio", type=float, default=1.0, metavar="R",
                   help="remove at most this fraction of any group's channels (with --global "
                   "or --target-macs, keeps a layer from going down to one channel)")
    p.add_argument("--importance", default="l1", help="l1, l2, bn_scale or random")
    p.add_argument("--round-to", type=int, default=1, help="keep multiples of N channels")
    p.add_argument("--dry-run", action="store_true",
                   help="print channels per group and params/MACs before -> after; write nothing")
    p.add_argument("--out", help="output folder (required unless --dry-run)")
    add_force_argument(p)
    add_run_arguments(p)


def run(args: argparse.Namespace) -> None:
    if args.out is None and not args.dry_run:
        raise SurgeryError("--out DIR is required (or --dry-run to only print the plan)")
    out = None if args.dry_run else check_out_folder(args.out, args.force)
    ratio = None if args.ratio is None else parse_ratio(args.ratio)
    target_macs = None if args.target_macs is None else parse_count(args.target_macs)
    latency = None if args.target_latency is None else parse_latency(args.target_latency)
    model, x = model_and_input(args)
    result = prune(model, x, ratio=ratio, target_macs=target_macs,
                   global_ranking=args.global_ranking, max_ratio=args.max_ratio,
                   importance=args.importance, ignore=args.ignore, round_to=args.round_to,
                   target_latency_ms=latency, backend=args.backend, threads=args.threads)
    macs = count_flops(model, x).total, count_flops(result.model, x).total
    if args.dry_run:
        print("\n".join(group_lines(result)))
    print(result.summary())
    print(f"params before: {result.params_before:,}")
    print(f"params after:  {result.params_after:,}")
    print(f"MACs before:   {macs[0]:,}")
    print(f"MACs after:    {macs[1]:,} ({macs[1] / max(macs[0], 1):.1%} kept)")
    if args.dry_run:
        print("dry run: nothing written")
        return
    weights, plan = save(result, prepare_out_folder(out), base=args.model, input_shape=x.shape)
    record_num_classes(plan, args.num_classes)
    print(f"wrote {weights} and {plan}")


def group_lines(result: PruneResult) -> list[str]:
    """One line per prunable group: its layers and channels before -> after.

    Example:
        >>> import torch
        >>> from surgery.io.models import LeNet
        >>> group_lines(prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5))[0]
        'group 1 (conv1, conv2): 6 -> 3 channels'
    """
    lines = []
    for g in result.plan.groups:
        names = list(dict.fromkeys(m.module for m in g.members))
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
        lines.append(f"group {g.group} ({shown}): {g.channels} -> "
                     f"{g.channels - len(g.removed_channels)} channels")
    return lines

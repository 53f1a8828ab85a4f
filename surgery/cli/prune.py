"""``surgery prune MODEL --ratio R --out DIR``: prune and write weights + plan (see save())."""

from __future__ import annotations

import argparse
import warnings
from typing import TYPE_CHECKING

from surgery.cli.common import (
    CPUS,
    add_model_arguments,
    add_run_arguments,
    check_output,
    integer,
    model_and_input,
    number,
    parse_count,
    progress_mode,
    record_num_classes,
)
from surgery.cli.outputs import add_force_argument, check_out_folder, prepare_out_folder
from surgery.errors import SurgeryError

if TYPE_CHECKING:  # torch and the toolkit are imported to run, not for --help
    from surgery.plan.blocked import BlockedSummary
    from surgery.plan.plan import MemberPlan
    from surgery.prune import PruneResult

HELP = "prune a model and write weights + plan"
DESCRIPTION = """\
Remove whole channels (conv filters, linear features, attention heads) from a model and write
the smaller model: DIR/model.safetensors (weights) and DIR/plan.json (which channels went, so
`surgery export`, `surgery finetune` and `surgery report` can rebuild it). Coupled layers
(residual adds, concatenations, norms, attention) are pruned together. Prints params and MACs
before and after and, when less than half the channels are prunable or some layers are read by
no rule, the top reasons that block the rest. Give either --ratio or --target-macs."""
EPILOG = """\
examples:
  surgery prune lenet --ratio 0.5 --out out/lenet
  surgery prune resnet18 --ratio 0.3 --global --out out/r18
  surgery prune resnet18 --target-macs 1G --num-classes 10 --out out/r18_1g
  surgery prune timm:convnext_atto --ratio 0.25 --dry-run
  surgery prune hf:my-llama --ratio 0.5 --uniform --out out/llama   # a save_pretrained folder
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
            return _ratio(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item]
        ratios = {name.strip(): _ratio(value) for name, value in pairs}
    except ValueError:
        raise SurgeryError(f"--ratio must be in [0, 1): a number like 0.5 or per-layer ratios "
                           f"like conv2=0.5,fc1=0.3, got {text[:80]!r}") from None
    if len(ratios) != len(pairs):
        names = [name.strip() for name, _ in pairs]
        twice = next(n for n in names if names.count(n) > 1)
        raise SurgeryError(f"--ratio names {twice!r} twice")
    return ratios


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:  # NaN and 1e999 too
        raise ValueError(text)
    return value


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
    p.add_argument("--threads", type=integer(1, CPUS), default=1,
                   help=f"threads for latency measurement (1 to {CPUS})")
    p.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank all channels together instead of per group")
    p.add_argument("--max-ratio", type=number(0, 1, low_open=True), default=1.0, metavar="R",
                   help="remove at most this fraction of any group's channels (with --global "
                   "or --target-macs, keeps a layer from going down to one channel)")
    p.add_argument("--importance", default="l1", help="l1, l2, bn_scale or random")
    p.add_argument("--round-to", type=integer(1, 1 << 16), default=1,
                   help="keep multiples of N channels")
    p.add_argument("--uniform", action="store_true",
                   help="every layer of one role keeps the same width (every MLP, every "
                   "attention's heads): what a Hugging Face config can express")
    p.add_argument("--remove-blocks", type=integer(0, 1 << 16), default=None, metavar="K",
                   help="also remove the K least important residual blocks whole (each "
                   "becomes the identity of its stream)")
    p.add_argument("--depth", action="store_true",
                   help="with --target-macs or --target-latency: remove whole blocks where they "
                   "cost less importance per MAC (per ms) than channels")
    p.add_argument("--block-importance", default="weight", choices=("weight", "cosine"),
                   help="rank blocks by their last layers' weights, or by 1 - cos(input, "
                   "output) on the example input")
    p.add_argument("--dry-run", action="store_true",
                   help="print channels per group and params/MACs before -> after; write nothing")
    p.add_argument("--out", help="output folder (required unless --dry-run)")
    add_force_argument(p)
    add_run_arguments(p)


def run(args: argparse.Namespace) -> None:
    from surgery.io.example_inputs import main_shape
    from surgery.io.saving import save
    from surgery.measure.flops import count_flops
    from surgery.plan.blocked import BlockedWarning, blocked_summary
    from surgery.plan.latency_target import parse_latency
    from surgery.prune import prune

    if args.out is None and not args.dry_run:
        raise SurgeryError("--out DIR is required (or --dry-run to only print the plan)")
    out = None if args.dry_run else check_out_folder(args.out, args.force)
    ratio = None if args.ratio is None else parse_ratio(args.ratio)
    target_macs = None if args.target_macs is None else parse_count(args.target_macs)
    latency = None if args.target_latency is None else parse_latency(args.target_latency)
    model, x = model_and_input(args)
    check_output(model, x, args.model, failures=False)  # the trace reports failures
    with warnings.catch_warnings():  # printed below, with the command that shows all
        warnings.simplefilter("ignore", BlockedWarning)
        result = prune(model, x, importance=args.importance, ignore=args.ignore,
                       uniform=args.uniform, remove_blocks=block_removal(args),
                       **settings(args, ratio, target_macs, latency))
    macs = count_flops(model, x).total, count_flops(result.model, x).total
    found = blocked_summary(model, result.graph)
    lines = group_lines(result) if args.dry_run else []
    lines += count_lines(result, macs, found.fraction) + latency_lines(result)
    gone = result.plan.removed_blocks
    lines += [f"removed blocks ({len(gone)}): {', '.join(gone)}"] if gone else []
    lines += inexact_lines(result, args, top=None if args.dry_run else 5)
    print("\n".join(lines + blocked_lines(args, found)))
    if args.dry_run:
        print("dry run: nothing written")
        return
    weights, plan = save(result, prepare_out_folder(out), base=args.model,
                         input_shape=main_shape(x),  # None for token ids: not a float shape
                         overwrite=args.force)  # the folder passed check_out_folder
    record_num_classes(plan, args.num_classes)
    print(f"wrote {weights} and {plan}")


def count_lines(result: PruneResult, macs: tuple[int, int],
                prunable: float | None = None) -> list[str]:
    """Groups pruned (and the fraction of the channels inside the model that is prunable),
    then params and MACs before -> after, one line each.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> count_lines(prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5), (281640, 92220), 1)
        ['pruned 4 of 6 channel groups (2 not prunable); channels inside the model: 100.0% \
prunable, 0.0% blocked', 'params 44,426 -> 11,418 (25.7% kept)', 'MACs   281,640 -> 92,220 (32.7% kept)']
    """
    groups = result.graph.groups
    pruned = sum(1 for g in result.plan.groups if g.removed_channels)
    params = result.params_before, result.params_after
    blocked = len(groups) - len(result.graph.prunable)
    share = "" if prunable is None else \
        f"; channels inside the model: {prunable:.1%} prunable, {1 - prunable:.1%} blocked"
    return [f"pruned {pruned} of {len(groups)} channel groups ({blocked} not prunable){share}",
            f"params {params[0]:,} -> {params[1]:,} ({params[1] / max(params[0], 1):.1%} kept)",
            f"MACs   {macs[0]:,} -> {macs[1]:,} ({macs[1] / max(macs[0], 1):.1%} kept)"]


def latency_lines(result: PruneResult) -> list[str]:
    """With a latency target: where the search's measurement landed, or, when the dense model
    already meets the target, that nothing was pruned."""
    found = result.latency
    if found is None:
        return []
    if not any(g.removed_channels for g in result.plan.groups):
        return [(f"latency: the dense model already meets the target ({found.dense_ms:.2f} ms "
                 f"<= {found.target_ms:.2f} ms): nothing pruned")]
    return [str(found)]


def graph_command(args: argparse.Namespace) -> str:
    """The ``surgery graph`` command that shows every group of this model."""
    see = ["surgery graph", args.model]
    see += ["--input-shape", args.input_shape] if args.input_shape else []
    see += ["--num-classes", str(args.num_classes)] if args.num_classes else []
    see += ["--ignore", *args.ignore] if args.ignore else []
    return " ".join(see)


def blocked_lines(args: argparse.Namespace, found: BlockedSummary) -> list[str]:
    """When less than half the channels are prunable or some layers are read by no rule: the
    top 5 reasons (one source line each), untouched layers, and the command that shows all."""
    if not found.worrying:
        return []
    head, *rest = found.lines(top=5)
    return [f"blocked: {head}"] + [f"  {line}" for line in rest] + \
        [f"see all: {graph_command(args)}"]


def inexact_lines(result: PruneResult, args: argparse.Namespace,
                  top: int | None = None) -> list[str]:
    """The groups this plan cuts whose pruning is not exact (a norm over their channels),
    counted, with the reason (the first ``top``, None: all): their output changes even where
    the removed channels were dead."""
    inexact = {g.id: g.inexact for g in result.graph.groups if g.inexact}
    pruned = [g for g in result.plan.groups if g.removed_channels]
    cut = [g for g in pruned if g.group in inexact]
    if not cut:
        return []
    shown = cut if top is None else cut[:top]
    more = [f"  ... {len(cut) - len(shown)} more: {graph_command(args)} shows all"] \
        if len(shown) < len(cut) else []
    return [(f"not exact: {len(cut)} of the {len(pruned)} pruned groups (the output changes "
             f"even where the removed channels were dead):")] + [
        f"  group {g.group} ({_names(g.members)}): {inexact[g.group]}" for g in shown] + more


def settings(args: argparse.Namespace, ratio: float | dict | None, target_macs: int | None,
             latency: float | None) -> dict:
    """prune()'s ``budget=`` or ``latency=`` from the command line's options."""
    from surgery.plan.budget import Budget
    from surgery.plan.latency_target import LatencyTarget
    if ratio is None and target_macs is None and latency is None and args.remove_blocks:
        ratio = 0.0  # whole blocks only
    if latency is not None:
        Budget(target_latency_ms=latency, round_to=args.round_to, max_ratio=args.max_ratio,
               global_ranking=args.global_ranking)  # refuses the options a latency target sets
        return {"latency": LatencyTarget(latency, args.backend, threads=args.threads,
                                         progress=progress_mode(args), depth=args.depth)}
    return {"budget": Budget(ratio, args.global_ranking, target_macs, args.round_to,
                             max_ratio=args.max_ratio, depth=args.depth)}


def block_removal(args: argparse.Namespace) -> object:
    """prune()'s ``remove_blocks=``: a ``BlockRemoval`` when blocks are asked for, else None."""
    from surgery.plan.blocks import BlockRemoval
    if args.remove_blocks is None and not (args.depth and args.block_importance != "weight"):
        return None
    return BlockRemoval(args.remove_blocks or 0, args.block_importance)


def group_lines(result: PruneResult) -> list[str]:
    """One line per prunable group: its layers and channels before -> after.

    Example:
        >>> import torch
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> group_lines(prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5))[0]
        'group 1 (conv1, conv2): 6 -> 3 channels'
    """
    return [f"group {g.group} ({_names(g.members)}): {g.channels} -> "
            f"{g.channels - len(g.removed_channels)} channels" for g in result.plan.groups]


def _names(members: list[MemberPlan]) -> str:
    names = list(dict.fromkeys(m.module for m in members))
    return ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")

"""``surgery prune MODEL --ratio R --out DIR``: prune and write weights + plan (see save())."""

from __future__ import annotations

import argparse

from surgery.cli.common import (
    add_force_argument,
    add_model_arguments,
    check_out_folder,
    model_and_input,
    prepare_out_folder,
)
from surgery.errors import SurgeryError
from surgery.io.saving import save
from surgery.measure.flops import count_flops
from surgery.plan.latency_target import parse_latency
from surgery.prune import prune

HELP = "prune a model and write weights + plan"


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
    p.add_argument("--ratio", help="fraction in [0, 1), or per layer: conv2=0.5,fc1=0.3")
    p.add_argument("--target-macs", type=int, help="prune until MACs <= N (within 2%%)")
    p.add_argument("--target-latency",
                   help="prune until the measured latency <= T (12ms, 0.012s; a number: ms)")
    p.add_argument("--backend", default="eager", help="latency backend: eager, onnxruntime, "
                   "compile")
    p.add_argument("--threads", type=int, default=1, help="threads for latency measurement")
    p.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank all channels together instead of per group")
    p.add_argument("--importance", default="l1", help="l1, l2, bn_scale or random")
    p.add_argument("--round-to", type=int, default=1, help="keep multiples of N")
    p.add_argument("--out", required=True, help="output folder")
    add_force_argument(p)


def run(args: argparse.Namespace) -> None:
    out = check_out_folder(args.out, args.force)
    ratio = None if args.ratio is None else parse_ratio(args.ratio)
    latency = None if args.target_latency is None else parse_latency(args.target_latency)
    model, x = model_and_input(args)
    result = prune(model, x, ratio=ratio,
                   target_macs=args.target_macs, global_ranking=args.global_ranking,
                   importance=args.importance, ignore=args.ignore, round_to=args.round_to,
                   target_latency_ms=latency, backend=args.backend, threads=args.threads)
    weights, plan = save(result, prepare_out_folder(out), base=args.model, input_shape=x.shape)
    macs = count_flops(model, x).total, count_flops(result.model, x).total
    print(result.summary())
    print(f"params before: {result.params_before:,}")
    print(f"params after:  {result.params_after:,}")
    print(f"MACs before:   {macs[0]:,}")
    print(f"MACs after:    {macs[1]:,} ({macs[1] / max(macs[0], 1):.1%} kept)")
    print(f"wrote {weights} and {plan}")

"""``surgery prune MODEL --ratio R --out DIR``: prune and write weights + plan (see save())."""

from __future__ import annotations

import argparse

from surgery.cli.common import add_model_arguments, model_and_input
from surgery.prune import prune
from surgery.saving import save

HELP = "prune a model and write weights + plan"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--ratio", type=float, required=True, help="fraction in [0, 1)")
    p.add_argument("--importance", default="l1", help="l1, l2, bn_scale or random")
    p.add_argument("--round-to", type=int, default=1, help="keep multiples of N")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> None:
    model, x = model_and_input(args)
    result = prune(model, x, ratio=args.ratio, importance=args.importance,
                   ignore=args.ignore, round_to=args.round_to)
    weights, plan = save(result, args.out, base=args.model, input_shape=x.shape)
    print(result.summary())
    print(f"params before: {result.params_before:,}")
    print(f"params after:  {result.params_after:,}")
    print(f"wrote {weights} and {plan}")

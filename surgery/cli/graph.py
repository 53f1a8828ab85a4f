"""``surgery graph MODEL``: print the coupled channel groups and what blocks the others."""

from __future__ import annotations

import argparse

from surgery.cli.common import add_model_arguments, add_run_arguments, model_and_input

HELP = "print the coupled channel groups of a model"
DESCRIPTION = """\
Trace a model on an example input and print its channel groups: channels that must be
pruned together (a conv and the norm after it, all inputs of a residual add, the heads of an
attention layer), which groups can be pruned, and why the others cannot."""
EPILOG = """\
examples:
  surgery graph lenet
  surgery graph resnet18
  surgery graph timm:convnext_atto --num-classes 10
  surgery graph my_net.py:build --input-shape 1,3,32,32
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_run_arguments(p, device=False)  # --quiet: graph shows no progress; accepted for scripts


def run(args: argparse.Namespace) -> None:
    from graphs import trace
    from surgery.measure.flops import count_params

    model, x = model_and_input(args)
    print(trace(model, x, ignore=args.ignore))
    print(f"params: {count_params(model):,}")

"""``surgery graph MODEL``: print the coupled channel groups and what blocks the others."""

from __future__ import annotations

import argparse

from graphs import trace
from surgery.cli.common import add_model_arguments, model_and_input
from surgery.measure.flops import count_params

HELP = "print the coupled channel groups of a model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)


def run(args: argparse.Namespace) -> None:
    model, x = model_and_input(args)
    print(trace(model, x, ignore=args.ignore))
    print(f"params: {count_params(model):,}")

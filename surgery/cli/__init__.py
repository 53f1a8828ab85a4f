"""The ``surgery`` command line: one module per subcommand, dispatched from one table.

Every error prints one line ``error: ...`` and exits with code 2, never a traceback
(``--traceback`` shows one for an unexpected error; see ``surgery.cli.oneline``). The
subcommand modules import torch and the toolkit inside ``run()``, so that building the parser
(``--help``) takes a fraction of a second. ``DESCRIPTION`` and ``EPILOG`` are the top-level
help, written for users.

Example:
    $ surgery prune lenet --ratio 0.5 --out out/lenet
    $ surgery prune resnet18 --ratio 0.3 --input-shape 1,3,224,224 --out out/r18
    $ surgery graph my_model.py:build --input-shape 1,3,32,32
    $ surgery export out/r18 --format onnx --out r18.onnx
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from types import ModuleType

from surgery.cli import export, finetune, graph, prune, report, sparsify
from surgery.cli.oneline import OneLineParser, UsageError, error_line

DESCRIPTION = """\
Make a PyTorch model smaller by removing whole channels (conv filters, linear features,
attention heads): layers whose channels are coupled are pruned together, so the smaller model
still runs. Then measure it, fine-tune it and export it."""
EPILOG = """\
a first session:
  surgery graph resnet18                            # which channels can go, what blocks the rest
  surgery prune resnet18 --ratio 0.3 --out out/r18  # writes out/r18/model.safetensors, plan.json
  surgery report resnet18 --pruned out/r18          # params, MACs, latency before and after
  surgery export out/r18 --format onnx              # writes out/r18/model.onnx
  surgery prune lenet --ratio 0.5 --out out/lenet
  surgery finetune out/lenet --epochs 2 --out out/lenet-tuned  # recover accuracy on MNIST

MODEL is lenet, a torchvision classifier (resnet18), timm:NAME or path/to/file.py:factory.
`surgery COMMAND --help` shows a command's options, their defaults and examples. Every command
takes --quiet (results only: no progress). Errors print one line `error: ...` and exit with 2."""

# Each subcommand module defines HELP, add_arguments(parser) and run(args).
COMMANDS: dict[str, ModuleType] = {"prune": prune, "graph": graph, "export": export,
                                   "report": report, "finetune": finetune, "sparsify": sparsify}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option (unless none, or the help names it already);
    descriptions and example epilogs kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False \
                or action.default == [] or action.default == argparse.SUPPRESS:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subparser per entry of ``COMMANDS``.

    A subcommand module may add DESCRIPTION (what it does, for users) and EPILOG (examples).
    """
    parser = OneLineParser(prog="surgery", description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    for name, module in COMMANDS.items():
        command = sub.add_parser(
            name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None), formatter_class=_HelpFormatter)
        module.add_arguments(command)
        command.add_argument("--traceback", action="store_true",
                             help="on an unexpected error, print the traceback too")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; return 0, or 2 after printing one line ``error: ...`` (130 after
    Ctrl-C). Never raises, argparse errors included.

    Example:
        >>> main(["prune", "lenet", "--ratio", "1.5", "--out", "/tmp/x"])
        2
        >>> main(["prune", "lenet", "--seed", "-1"])
        2
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _fail(exc)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        COMMANDS[args.command].run(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `surgery graph resnet18 | head`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush cannot fail
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one guard: any failure becomes one line
        if args.traceback:
            traceback.print_exc()
        return _fail(exc)
    return 0


def _fail(exc: BaseException) -> int:
    print(f"error: {error_line(exc)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``surgery`` command line: one module per subcommand, dispatched from one table.

Bad input prints one line ``error: ...`` and exits with code 2, never a traceback.

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
from types import ModuleType

from graphs.errors import TraceError
from surgery.cli import export, finetune, graph, prune, report, sparsify
from surgery.errors import SurgeryError

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
    parser = argparse.ArgumentParser(
        prog="surgery", description=__doc__.split("\n")[0], formatter_class=_HelpFormatter,
        epilog="run `surgery COMMAND --help` for a command's options and examples\n\n"
               + __doc__.split("\n\n", 2)[2].replace("Example:", "examples:"))
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(
            name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None), formatter_class=_HelpFormatter))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; return 0, or 2 after printing ``error: ...`` for bad input.

    Example:
        >>> main(["prune", "lenet", "--ratio", "1.5", "--out", "/tmp/x"])
        2
    """
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command].run(args)
        sys.stdout.flush()
    except (SurgeryError, TraceError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        print(f"error: {'; '.join(lines) or type(exc).__name__}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `surgery graph resnet18 | head`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush cannot fail
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

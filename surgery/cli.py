"""The ``surgery`` command line: ``surgery prune MODEL --ratio 0.5 --out DIR``.

Bad input prints one line ``error: ...`` and exits with code 2, never a traceback.

Example:
    $ surgery prune lenet --ratio 0.5 --out out/lenet
    $ surgery prune resnet18 --ratio 0.3 --input-shape 1,3,224,224 --out out/r18
    $ surgery graph my_model.py:build --input-shape 1,3,32,32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from graphs import trace
from graphs.errors import TraceError
from surgery.errors import SurgeryError
from surgery.prune import count_params, prune
from surgery.zoo import load_weights, resolve_model


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise SurgeryError(f"--input-shape must be comma-separated integers like 1,3,224,224, "
                           f"got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise SurgeryError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def _model_and_input(args: argparse.Namespace):
    model, default_shape = resolve_model(args.model)
    if args.weights:
        load_weights(model, args.weights)
    shape = parse_shape(args.input_shape) if args.input_shape else default_shape
    return model.eval(), torch.randn(*shape)


def cmd_prune(args: argparse.Namespace) -> None:
    model, x = _model_and_input(args)
    result = prune(model, x, ratio=args.ratio, importance=args.importance,
                   ignore=args.ignore, round_to=args.round_to)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "plan.json").write_text(json.dumps(result.plan.to_json(), indent=1))
    print(result.summary())
    print(f"params before: {result.params_before:,}")
    print(f"params after:  {result.params_after:,}")
    print(f"wrote {out / 'model.safetensors'} and {out / 'plan.json'}")


def cmd_graph(args: argparse.Namespace) -> None:
    model, x = _model_and_input(args)
    print(trace(model, x, ignore=args.ignore))
    print(f"params: {count_params(model):,}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="surgery", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("prune", "prune a model and write weights + plan"),
                           ("graph", "print the coupled channel groups of a model")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("model", help="lenet, a torchvision model name, or path/to/file.py:factory")
        p.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224")
        p.add_argument("--weights", help="state dict (.safetensors or torch.save, weights only)")
        p.add_argument("--ignore", nargs="*", default=[], help="layers whose outputs stay")
        if name == "prune":
            p.add_argument("--ratio", type=float, required=True, help="fraction in [0, 1)")
            p.add_argument("--importance", default="l1", help="l1, l2, bn_scale or random")
            p.add_argument("--round-to", type=int, default=1, help="keep multiples of N")
            p.add_argument("--out", required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"prune": cmd_prune, "graph": cmd_graph}[args.command](args)
    except (SurgeryError, TraceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

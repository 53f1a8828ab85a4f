"""``surgery export DIR --format hf``: a folder pruned from ``hf:DIR`` as a transformers folder.

The pruned model is rebuilt from the base plan.json records (``hf:DIR``, built from that
folder's config only; ``--base hf:DIR`` loads your own), written with ``save_pretrained`` and
a config of its widths (``surgery.io.hf``), then loaded back with ``from_pretrained`` and run
against the pruned model on the config's example inputs.

Example:
    $ surgery prune hf:my-llama --ratio 0.5 --uniform --out out/llama
    $ surgery export out/llama --format hf --out out/llama-hf
"""

from __future__ import annotations

import argparse
from pathlib import Path

from surgery.cli.outputs import check_out_folder
from surgery.errors import SurgeryError
from surgery.io.hf import compare_hf, export_folder

DEFAULT_FOLDER = "hf"  # DIR/hf unless --out names a folder


def run_hf(args: argparse.Namespace) -> None:
    """Export ``args.dir`` to ``--out`` (default DIR/hf) and print what the reload gives."""
    if args.input_shape:
        raise SurgeryError("--format hf makes its example inputs from the model's config: "
                           "leave out --input-shape")
    # our own DIR/hf may be replaced; a folder the user names needs --force when not empty
    out = check_out_folder(args.out or str(Path(args.dir) / DEFAULT_FOLDER),
                           args.force or not args.out)
    model, inputs = export_folder(args.dir, out, base=args.base)
    error = compare_hf(out, model, inputs)
    files = sorted(p.name for p in out.iterdir())
    print(f"wrote {out}: {', '.join(files)} (transformers save_pretrained)")
    print(f"from_pretrained: no missing, unexpected or mismatched keys; largest difference "
          f"from the pruned model {error:.1e}")


__all__ = ["DEFAULT_FOLDER", "run_hf"]

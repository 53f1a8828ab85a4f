"""Export a pruned transformers model as a folder that plain ``from_pretrained`` loads.

``export_hf`` writes ``save_pretrained``'s folder with the config rewritten to the pruned
widths (``surgery.io.hf_config.pruned_config``), after checking on the meta device that the
class built from that config has exactly the pruned model's tensors and shapes: the folder
loads with no missing, unexpected or mismatched keys, or nothing is written. Widths that differ
between layers of one role are refused in one line (prune with ``uniform=True``; the
toolkit's own folders keep any widths: ``surgery.load``). ``export_folder`` does the same for a
folder written by ``surgery prune hf:DIR``, rebuilt from the base its plan.json records (built
from that base's config only, see ``surgery.io.hf_load``); ``compare_hf`` loads the export
back and returns its largest difference from the pruned model.

Example:
    >>> import tempfile, torch, transformers
    >>> from surgery import prune
    >>> config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32,
    ...     intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=50)
    >>> llama = transformers.LlamaForCausalLM(config).eval()
    >>> x = {"input_ids": torch.randint(0, 50, (1, 8)), "use_cache": False}
    >>> result = prune(llama, x, ratio=0.5, uniform=True)
    >>> folder = export_hf(result, tempfile.mkdtemp())
    >>> small = transformers.AutoModelForCausalLM.from_pretrained(folder)
    >>> small.config.hidden_size, small.config.num_key_value_heads, small.config.head_dim
    (16, 1, 8)
    >>> compare_hf(folder, result.model, x) < 1e-5
    True
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphs.inputs import call_model, output_leaves
from surgery.errors import SurgeryError
from surgery.io.bases import resolve_builtin
from surgery.io.example_inputs import example_inputs, hf_shape
from surgery.io.hf_config import is_hf_model, pruned_config
from surgery.io.hf_load import PREFIX, load_hf
from surgery.io.saving import load, read_plan_data


def export_hf(model_or_result: Any, directory: str | Path) -> Path:
    """Write the pruned transformers model (or ``PruneResult``) to ``directory`` with
    ``save_pretrained`` and a config of its widths; return the folder. See the module
    docstring."""
    model = model_or_result if isinstance(model_or_result, nn.Module) else \
        getattr(model_or_result, "model", None)  # a PruneResult
    if not isinstance(model, nn.Module) or not is_hf_model(model):
        raise SurgeryError(f"export_hf takes a transformers model or a PruneResult of one, "
                           f"not {type(model).__name__}")
    config = pruned_config(model)
    try:  # transformers' own checks of the config (strict configs), run again by saving it
        getattr(config, "validate", lambda: None)()
    except Exception as exc:  # the validators raise their own error types
        first = (str(exc).strip().splitlines() or [""])[-1].strip()[:160]
        raise SurgeryError(f"transformers refuses the pruned {config.model_type} config "
                           f"({first}): prune with uniform=True (--uniform), or reload the "
                           f"pruned folder with surgery.load") from exc
    check_tensors(model, config)
    clone = copy.copy(model)  # shares every layer; only the saved config differs
    clone.config = config
    clone.save_pretrained(directory)
    return Path(directory)


def check_tensors(model: nn.Module, config: Any) -> None:
    """SurgeryError unless ``type(model)`` built from ``config`` (on the meta device: shapes
    only) has exactly the tensors of ``model``'s state dict, of the same shapes."""
    with torch.device("meta"):
        fresh = type(model)(config).state_dict()
    own = model.state_dict()
    wrong = [f"{k} is {list(v.shape)} in the pruned model, {list(fresh[k].shape)} from the "
             f"config" for k, v in own.items() if k in fresh and fresh[k].shape != v.shape]
    wrong += [f"{k} is missing from the config's model" for k in own if k not in fresh]
    wrong += [f"{k} is only in the config's model" for k in fresh if k not in own]
    if wrong:
        raise SurgeryError(f"the rewritten {config.model_type} config does not describe the "
                           f"pruned model ({wrong[0]}; {len(wrong)} tensors differ): reload "
                           f"the pruned folder with surgery.load")


def compare_hf(directory: str | Path, model: nn.Module, inputs: Any) -> float:
    """Load an exported folder with its class's ``from_pretrained`` (local files only) and
    return the largest absolute difference of its output tensors from ``model``'s on
    ``inputs``; SurgeryError if any key is missing, unexpected or mismatched."""
    cls = type(model)
    loaded, info = cls.from_pretrained(directory, local_files_only=True,
                                       output_loading_info=True)
    keys = {k: sorted(map(str, info.get(k, ()))) for k in
            ("missing_keys", "unexpected_keys", "mismatched_keys")}
    bad = {k: v for k, v in keys.items() if v}
    if bad:
        kind, names = next(iter(bad.items()))
        raise SurgeryError(f"{directory} loads with {len(names)} {kind.replace('_', ' ')} "
                           f"(first: {names[0][:120]})")
    with torch.no_grad():
        ours, theirs = ([t for _, t in output_leaves(call_model(m.eval(), inputs))]
                       for m in (model, loaded))
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours, theirs)):
        raise SurgeryError(f"{directory} gives outputs of other shapes than the pruned model")
    return max((float((a.float() - b.float()).abs().max()) for a, b in zip(ours, theirs)),
               default=0.0)


def export_folder(folder: str | Path, out: str | Path,
                  base: str | None = None) -> tuple[nn.Module, Any]:
    """Rebuild the pruned model of a folder written by ``surgery prune hf:DIR`` and export it
    to ``out``; return it with the example inputs it was checked on. ``base`` (your own
    command line) is loaded as given; a base plan.json records is built from its config only,
    its parameters bounded first."""
    data = read_plan_data(folder)
    name = base or data.get("base")
    if not isinstance(name, str) or not name.startswith(PREFIX):
        raise SurgeryError(f"{folder}/plan.json records base {str(name)[:80]!r}: the hf format "
                           f"exports folders pruned from hf:DIR (or pass --base hf:DIR)")
    base_model, _ = load_hf(base) if base else resolve_builtin(name, f"{folder}/plan.json")
    inputs = example_inputs(base_model.eval(), hf_shape(base_model))
    model = load(folder, base_model, example_inputs=inputs).eval()
    export_hf(model, out)
    return model, inputs


__all__ = ["check_tensors", "compare_hf", "export_folder", "export_hf"]

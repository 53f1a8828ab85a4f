"""The models of ``coverage.py``: build one from its entry in ``coverage_models.json``.

An entry is ``{"source", "name", "build": {...}, "input": {...}}`` and an optional ``seed``
(default 0). ``build`` holds the builder's keyword arguments (``BUILDERS``: timm
``create_model``, torchvision ``get_model``, a Hugging Face config, an ultralytics yaml and task,
a diffusers class and config, a segmentation_models_pytorch architecture and encoder, a
hand-written model of ``hand_models_conv`` / ``_seq``); the input spec is ``{"kind": "image" | "images" |
"video" | "tokens" | "tensors", ...}`` (see ``make_input``). Every model has random weights
(``randomize_weights``, then ``randomize_norms``: non-trivial BatchNorm statistics), seeded,
eval mode; nothing is downloaded.

``python benchmarks/coverage_models.py --timm`` regenerates the timm part of the data file: one
model per module of ``timm.models`` that defines models, the smallest by parameter count
(counted on the meta device), with its pretrained config's input size when that is fixed.
The committed list was made that way for the modules up to ``regnet``; for the later ones, on a
loaded machine, among the 4 models per module whose names look smallest (tiny, nano, s0, 18...).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgery.atomic import write_text
from surgery.testing.oracle import randomize_norms, randomize_weights

HERE = Path(__file__).resolve().parent
DATA = HERE / "coverage_models.json"
SOURCES = ("timm", "torchvision-seg", "torchvision-det", "torchvision-video", "hf", "ultralytics",
           "hand", "diffusers", "smp", "hf-families", "ultralytics-tasks")


def load_entries(path: Path = DATA) -> list[dict]:
    """Every entry of the data file, in file order."""
    return json.loads(path.read_text())["models"]


def build(entry: dict) -> tuple[nn.Module, Any]:
    """(model, example inputs) for one entry: seeded random weights, eval mode."""
    torch.manual_seed(entry.get("seed", 0))
    source, options = entry["source"], dict(entry.get("build", {}))
    prefix = next((s for s in BUILDERS if source == s or source.startswith(s + "-")), None)
    if prefix is None:
        raise ValueError(f"unknown source {source!r}")
    model = BUILDERS[prefix](entry["name"], options)
    randomize_norms(randomize_weights(model, entry.get("seed", 0)), entry.get("seed", 0))
    return model.eval(), make_input(entry["input"])


def _timm(name: str, options: dict) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, **options)


def _torchvision(name: str, options: dict) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None, **options)


def _hf_model(name: str, options: dict) -> nn.Module:
    import transformers

    config = getattr(transformers, options.pop("config"))(**options.pop("config_args", {}))
    return getattr(transformers, options.pop("model"))(config)


def _ultralytics(name: str, options: dict) -> nn.Module:
    """A model from its yaml (no weights): ``task`` picks the class, detection by default."""
    from ultralytics.nn import tasks

    classes = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel,
               "pose": tasks.PoseModel, "obb": tasks.OBBModel,
               "classify": tasks.ClassificationModel, "rtdetr": tasks.RTDETRDetectionModel}
    model = classes[options.get("task", "detect")]
    return model(options.get("yaml", f"{name}.yaml"), verbose=False)


def _hand(name: str, options: dict) -> nn.Module:
    """A model of ``hand_models_conv`` or ``hand_models_seq``, by its name."""
    models = {**_sibling("hand_models_conv").CONV_MODELS,
              **_sibling("hand_models_seq").SEQUENCE_MODELS}
    return models[name](**options)


def _sibling(name: str) -> Any:
    """A module of benchmarks/, whether this one runs as a script or as ``benchmarks.*``."""
    return importlib.import_module(f"{__package__}.{name}" if __package__ else name)


def _diffusers(name: str, options: dict) -> nn.Module:
    import diffusers

    return getattr(diffusers, options["model"])(**options.get("config", {}))


def _smp(name: str, options: dict) -> nn.Module:
    """A segmentation_models_pytorch model with ``encoder_weights=None`` (nothing downloaded)."""
    import segmentation_models_pytorch as smp

    return getattr(smp, options.pop("arch"))(encoder_weights=None, **options)


# source (or the prefix before "-": "hf-families" is "hf") -> builder(name, build options)
BUILDERS: dict[str, Callable[[str, dict], nn.Module]] = {
    "timm": _timm, "torchvision": _torchvision, "hf": _hf_model, "ultralytics": _ultralytics,
    "hand": _hand, "diffusers": _diffusers, "smp": _smp,
}


def make_input(spec: dict) -> Any:
    """A seeded example input: ``image`` (1x3xSxS), ``images`` ([3xSxS], as detection models
    take), ``video`` (1x3xTxSxS), ``tokens`` ({"input_ids": 1xL, **extra}) or ``tensors``
    (positional ``args`` or keyword ``kwargs`` tensors, each ``{"shape", "vocab"}``: ids below
    ``vocab`` when given, else normal floats; ``extra`` keywords added)."""
    generator = torch.Generator().manual_seed(0)
    kind, size = spec["kind"], spec.get("size", 64)
    if kind == "image":
        return torch.randn(1, spec.get("channels", 3), size, size, generator=generator)
    if kind == "images":
        return [[torch.rand(3, size, size, generator=generator)]]
    if kind == "video":
        return torch.randn(1, 3, spec.get("frames", 8), size, size, generator=generator)
    if kind == "tokens":
        ids = torch.randint(0, spec.get("vocab", 100), (1, spec.get("length", 8)),
                            generator=generator)
        return {"input_ids": ids, **spec.get("extra", {})}
    if kind == "tensors":
        return _tensors(spec, generator)
    raise ValueError(f"unknown input kind {kind!r}")


def _tensors(spec: dict, generator: torch.Generator) -> Any:
    """One tensor, a tuple of positional tensors, or a dict of keyword tensors (+ extra)."""
    def make(t: dict) -> torch.Tensor:
        if "vocab" in t:
            return torch.randint(0, t["vocab"], t["shape"], generator=generator)
        return torch.randn(t["shape"], generator=generator)

    if "kwargs" in spec:
        return {**{k: make(t) for k, t in spec["kwargs"].items()}, **spec.get("extra", {})}
    args = tuple(make(t) for t in spec["args"])
    return args[0] if len(args) == 1 else args


def timm_entries() -> list[dict]:
    """One entry per module of ``timm.models`` that defines models: its smallest model."""
    import timm
    import timm.models

    entries = []
    modules = sorted(m.name for m in pkgutil.iter_modules(timm.models.__path__)
                     if not m.name.startswith("_"))
    for module in modules:
        sizes = [s for s in map(_meta_size, timm.list_models(module=module)) if s]
        if sizes:
            params, name, cfg = min(sizes, key=lambda s: (s[0], s[1]))
            entries.append(_timm_entry(module, name, params, cfg))
            print(module, name, f"{params:,}", flush=True)
    return entries


def _meta_size(name: str) -> tuple[int, str, dict] | None:
    import timm

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is not picked
        return None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return sum(p.numel() for p in model.parameters()), name, cfg


def _timm_entry(module: str, name: str, params: int, cfg: dict) -> dict:
    side = (cfg.get("input_size") or (3, 224, 224))[-1]
    fixed = bool(cfg.get("fixed_input_size"))
    size = side if fixed else 64
    build_args: dict = {"num_classes": 10}
    if fixed and side > 64 and "img_size" in _create_args(name):
        build_args["img_size"], size = 64, 64
    return {"source": "timm", "name": name, "module": module, "params": params,
            "build": build_args, "input": {"kind": "image", "size": size}}


def _create_args(name: str) -> set[str]:
    """Keyword names the model's constructor is known to take (img_size for most ViTs)."""
    import timm

    try:
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, img_size=64)
    except Exception:  # noqa: BLE001 - the model does not take img_size=64
        return set()
    return {"img_size"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm", action="store_true", help="regenerate the timm entries")
    args = parser.parse_args()
    if args.timm:
        data = json.loads(DATA.read_text()) if DATA.exists() else {"models": []}
        others = [e for e in data["models"] if e["source"] != "timm"]
        data["models"] = timm_entries() + others
        write_text(DATA, json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()

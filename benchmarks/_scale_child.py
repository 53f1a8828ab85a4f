"""One measurement of benchmarks/scale.py in a process of its own; prints one JSON line.

Usage (scale.py runs it):
    .venv/bin/python benchmarks/_scale_child.py MODEL time --repeats 5
    .venv/bin/python benchmarks/_scale_child.py MODEL memory --tool ours-inplace

``time``: paired repeats, each after ``gc.collect()``: one forward of the model, then prune
(ours with its default copy; ours in place and torch-pruning on a deepcopy made untimed). Wall
and thread CPU seconds; each prune is divided by the forward of its own repeat, and the
medians of those ratios are reported. ``memory``: ``scale_memory.torch_peak`` of one prune.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import time
import warnings

import torch
import torch_pruning as tp
import torchvision
from _common import last_linear, short_error
from scale_memory import torch_peak
from transformers import LlamaConfig, LlamaForCausalLM

from surgery import prune

# name -> (hidden, layers, heads, kv heads, intermediate); vocabulary 32000
LLAMAS = {"llama-0.1b": (768, 8, 12, 4, 2048), "llama-0.3b": (1024, 16, 16, 8, 2816),
          "llama-0.9b": (2048, 16, 16, 8, 5632),
          "llama-d4": (768, 4, 12, 4, 2048), "llama-d16": (768, 16, 12, 4, 2048)}
TOKENS = 32
RATIO = 0.5


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name in LLAMAS:
        hidden, layers, heads, kv, inter = LLAMAS[name]
        config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv,
                             intermediate_size=inter, vocab_size=32000)
        return LlamaForCausalLM(config).eval()
    return torchvision.models.get_model(name, weights=None).eval()


def inputs(name: str):
    generator = torch.Generator().manual_seed(0)
    if name in LLAMAS:
        return {"input_ids": torch.randint(0, 32000, (1, TOKENS), generator=generator)}
    return torch.randn(1, 3, 224, 224, generator=generator)


def forward(model, x):
    with torch.no_grad():
        return model(**x) if isinstance(x, dict) else model(x)


def tp_prune(model, x):
    """torch-pruning's L1 magnitude pruner, the classifier (or LM head) kept."""
    head = model.lm_head if hasattr(model, "lm_head") else last_linear(model)
    transform = (lambda out: out.logits) if isinstance(x, dict) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=RATIO,
            ignored_layers=[head], output_transform=transform)
        pruner.step()
    return model


TOOLS = {"forward": forward,  # for memory: the forward's own peak (activations), to compare
         "ours": lambda m, x: prune(m, x, ratio=RATIO).model,
         "ours-inplace": lambda m, x: prune(m, x, ratio=RATIO, inplace=True).model,
         "tp": tp_prune}


def timed(fn):
    gc.collect()
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return out, time.perf_counter() - wall, time.thread_time() - cpu


def time_model(name: str, repeats: int, tools: list[str]) -> dict:
    model, x = build(name), inputs(name)
    forward(model, x)  # warm-up, untimed
    rows: dict[str, list] = {t: [] for t in ["forward", *tools]}
    errors: dict[str, str] = {}
    for _ in range(repeats):
        rows["forward"].append(timed(lambda: forward(model, x))[1:])
        for tool in tools:
            if tool in errors:
                continue
            target = model if tool == "ours" else copy.deepcopy(model)
            try:
                pruned, wall, cpu = timed(lambda t=target, f=TOOLS[tool]: f(t, x))
                forward(pruned, x)  # the pruned model must run
            except Exception as exc:  # noqa: BLE001 - a tool that fails is a result
                errors[tool] = short_error(exc, 100)
                continue
            rows[tool].append((wall, cpu))
            del pruned, target
    fwd = rows["forward"]
    result = {"forward_s": statistics.median(w for w, _ in fwd),
              "forward_cpu_s": statistics.median(c for _, c in fwd), "errors": errors}
    for tool in tools:
        pairs = list(zip(rows[tool], fwd))
        if pairs:
            result[f"{tool}_s"] = statistics.median(w for (w, _), _ in pairs)
            result[f"{tool}_fwd"] = statistics.median(w / f for (w, _), (f, _) in pairs)
            result[f"{tool}_fwd_cpu"] = statistics.median(c / g for (_, c), (_, g) in pairs)
    return result


def memory(name: str, tool: str) -> dict:
    x = inputs(name)
    try:
        peak = torch_peak(lambda: build(name), lambda m: TOOLS[tool](m, x))
    except Exception as exc:  # noqa: BLE001 - a tool that fails is a result
        return {"error": short_error(exc, 100)}
    return {"model_bytes": peak.model_bytes, "peak_bytes": peak.peak_bytes, "ratio": peak.ratio}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("what", choices=["time", "memory"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tools", nargs="+", default=["ours", "ours-inplace", "tp"])
    p.add_argument("--tool", default="ours-inplace")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = time_model(args.model, args.repeats, args.tools) if args.what == "time" else \
        memory(args.model, args.tool)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

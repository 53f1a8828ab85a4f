"""count_flops, target_macs, report, latency and DynamicPruner take what prune takes: keyword
inputs, any pytree, models returning ModelOutput objects, caches and nested containers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from surgery import SurgeryError, prune
from surgery.measure.flops import count_flops
from surgery.measure.latency import measure_latency
from surgery.measure.paired import PairedTimer, compare_latency
from surgery.plan.budget import Budget
from surgery.recover.dynamic import DynamicPruner
from tests.hf_small import NAMES, keyword_inputs, small_model


class FirstOutput(nn.Module):
    """The reference: ``model`` called by keyword from one positional tensor, returning its
    first output tensor (what fvcore could trace before keyword inputs were taken)."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = {"pixel_values": x} if self.name == "vit" else {
            **keyword_inputs(self.name), "input_ids": x,
            "attention_mask": torch.ones_like(x)}
        return self.model(**inputs).logits


@pytest.fixture(scope="module")
def models():
    return {name: small_model(name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_keyword_count_equals_a_positional_wrapper_layer_by_layer(models, name):
    model, x = models[name], keyword_inputs(name)
    first = next(iter(x.values()))
    want = count_flops(FirstOutput(model, name), first)
    got = count_flops(model, x)
    assert got.total == want.total > 0
    assert got.by_module[""] == got.total
    for layer, n in got.by_module.items():
        if layer:
            assert want.by_module[f"model.{layer}"] == n, layer


def test_llama_macs_by_hand_and_a_positional_tensor_counts_the_same(models):
    llama, x = models["llama"], keyword_inputs("llama")
    c = llama.config
    hidden, inner, heads, kv, layers = (c.hidden_size, c.intermediate_size,
                                        c.num_attention_heads, c.num_key_value_heads,
                                        c.num_hidden_layers)
    head_dim, seq = hidden // heads, x["input_ids"].shape[1]
    projections = seq * hidden * (2 * hidden + 2 * kv * head_dim + 3 * inner)
    attention = 2 * heads * seq * seq * head_dim  # q @ k^T and weights @ v
    lm_head = seq * hidden * c.vocab_size
    assert count_flops(llama, x).total == layers * (projections + attention) + lm_head
    # positionally: the output holds a DynamicCache, dropped from the traced outputs
    assert count_flops(llama, x["input_ids"]).total == count_flops(llama, x).total


class Nested(nn.Module):
    """Keyword inputs nested in dicts and lists, a constant flag, nested outputs and a cache."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x, extra=None, double=False):
        y = self.a(x) + self.a(extra["more"][0])
        y = 2 * y if double else y
        return {"out": (self.b(y), [y]), "cache": object(), "none": None}


def test_nested_pytree_inputs_and_outputs_counted_by_hand():
    x = {"x": torch.zeros(2, 6), "extra": {"more": [torch.ones(2, 6)]}, "double": True}
    count = count_flops(Nested(), x)
    assert count.total == 2 * (2 * 6 * 4) + 2 * 4 * 3
    assert count.by_module == {"": 120, "a": 96, "b": 24}


def test_a_model_that_fails_under_the_tracer_is_a_one_line_surgery_error(models):
    with pytest.raises(SurgeryError, match="count_flops: BertForSequenceClassification failed under fvcore's JIT tracer") as info:
        count_flops(models["bert"], {"input_ids": torch.zeros(1, 99, dtype=torch.long)})
    assert "\n" not in str(info.value)
    with pytest.raises(SurgeryError, match="needs a tensor"):
        count_flops(models["bert"], {"use_cache": False})


@pytest.mark.parametrize("name", NAMES)
def test_target_macs_and_report_with_keyword_inputs(models, name):
    model, x = models[name], keyword_inputs(name)
    dense = count_flops(model, x).total
    target = int(0.7 * dense)
    result = prune(model, x, budget=Budget(target_macs=target))
    got = count_flops(result.model, x).total
    assert 0.98 * target <= got <= target
    report = result.report(x, original=model, timing=None)
    assert (report.before.macs, report.after.macs) == (dense, got)
    assert report.input_shapes == tuple(tuple(t.shape) for t in x.values()
                                        if isinstance(t, torch.Tensor))
    assert result.report(x, timing=None).after.macs == got


def test_latency_of_keyword_inputs_eager_paired_and_onnxruntime(models):
    pytest.importorskip("onnxruntime")
    bert, x = models["bert"], keyword_inputs("bert")
    for backend in ("eager", "onnxruntime"):
        lat = measure_latency(bert, x, runs=2, warmup=1, threads=1, backend=backend)
        assert lat.runs == 2 and lat.median_ms > 0 and lat.backend == backend
    llama = keyword_inputs("llama", mask=False)
    a, b = compare_latency([models["llama"], models["llama"]], llama, runs=2, warmup=1)
    assert a.median_ms > 0 and b.median_ms > 0
    assert PairedTimer(models["llama"], llama, runs=2, warmup=1).measure(models["llama"]) > 0


def test_dynamic_pruner_with_keyword_inputs_reaches_its_mac_target():
    llama, x = small_model("llama").train(), keyword_inputs("llama", mask=False)
    target = int(0.6 * count_flops(llama, x).total)
    opt = torch.optim.SGD(llama.parameters(), lr=0.01, momentum=0.9)
    pruner = DynamicPruner(llama, x, opt, target_macs=target, end=2, every=1)
    for step in range(2):
        batch = keyword_inputs("llama", batch=2, mask=False, seed=step)
        opt.zero_grad()
        pruner.model(**batch, labels=batch["input_ids"]).loss.backward()
        opt.step()
        pruner.step()
    assert [e.step for e in pruner.events] == [1, 2]
    assert 0.98 * target <= pruner.events[-1].macs <= target
    assert count_flops(llama, x).total == pruner.events[-1].macs

"""export_onnx / compare_onnx / export_program on models called with keyword inputs (Hugging
Face BERT, Llama with grouped-query attention, GPT-2, ViT from small configs) and on nested
pytree inputs and outputs: the exported models give the (pruned) model's outputs at other
batch sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from surgery import SurgeryError, prune
from surgery.io.export import compare_onnx, export_onnx, export_program
from tests.hf_small import NAMES, keyword_inputs, small_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def pruned():
    """name -> the small model pruned by half on its keyword inputs."""
    return {name: prune(small_model(name), keyword_inputs(name), ratio=0.5).model.eval()
            for name in NAMES}


def _names(path):
    graph = onnx.load(str(path)).graph
    return [i.name for i in graph.input], [o.name for o in graph.output]


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_onnx_of_keyword_inputs_named_by_keyword_matches_at_other_batches(tmp_path, pruned,
                                                                          name):
    model = pruned[name]
    path = export_onnx(model, keyword_inputs(name), tmp_path / "m.onnx")
    assert _names(path) == (["input_ids", "attention_mask"], ["logits"])
    batch = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    for size in (1, 3):
        assert compare_onnx(path, model, keyword_inputs(name, size, seed=size)) < 1e-4
    assert compare_onnx(path, small_model(name), keyword_inputs(name)) > 1e-2


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["gpt2", "vit"])
def test_onnx_of_gpt2_and_vit_keyword_inputs(tmp_path, pruned, name):
    path = export_onnx(pruned[name], keyword_inputs(name), tmp_path / "m.onnx")
    assert compare_onnx(path, pruned[name], keyword_inputs(name, 3, seed=3)) < 1e-4


def test_onnx_of_a_decoder_without_a_mask_says_to_pass_one(tmp_path, pruned):
    with pytest.raises(SurgeryError, match="pass one among the inputs") as info:
        export_onnx(pruned["llama"], keyword_inputs("llama", mask=False), tmp_path / "m.onnx")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_program_of_keyword_inputs_is_called_by_keyword_at_other_batches(tmp_path, pruned,
                                                                         name):
    model = pruned[name]
    path = export_program(model, keyword_inputs(name), tmp_path / "m.pt2")
    program = torch.export.load(str(path)).module()
    for size in (1, 3):
        x = keyword_inputs(name, size, seed=size)
        with torch.no_grad():
            got, want = program(**x), model(**x)
        assert type(got) is type(want)
        torch.testing.assert_close(got["logits"], want["logits"], rtol=1e-4, atol=1e-5)


def test_program_of_a_decoder_returning_its_cache_returns_its_tensors(tmp_path, pruned):
    model, x = pruned["llama"], {**keyword_inputs("llama"), "use_cache": True}
    program = torch.export.load(str(export_program(model, x, tmp_path / "m.pt2"))).module()
    x = {**keyword_inputs("llama", 3, seed=3), "use_cache": True}
    got = program(**x)  # a dict without the DynamicCache, which torch.export cannot return
    assert list(got) == ["logits"]
    with torch.no_grad():
        torch.testing.assert_close(got["logits"], model(**x).logits, rtol=1e-4, atol=1e-5)


class Nested(nn.Module):
    """Nested inputs (a dict holding a list), a constant flag; nested outputs and a cache."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x, extra=None, double=False):
        y = self.a(x) + self.a(extra["more"][0])
        y = 2 * y if double else y
        return {"out": (self.b(y), [y]), "cache": object(), "none": None}


def _nested_inputs(batch):
    return {"x": torch.randn(batch, 6), "extra": {"more": [torch.randn(batch, 6)]},
            "double": True}


def test_nested_pytree_inputs_and_outputs_export(tmp_path):
    model = Nested().eval()
    path = export_onnx(model, _nested_inputs(1), tmp_path / "m.onnx")
    assert _names(path) == (["x", "extra.more.0"], ["out.0", "out.1.0"])
    assert compare_onnx(path, model, _nested_inputs(4)) < 1e-4
    program = torch.export.load(str(export_program(model, _nested_inputs(1),
                                                   tmp_path / "m.pt2"))).module()
    x = _nested_inputs(3)
    x.pop("double")  # a constant of the program: given at export, not at call
    got, want = program(**x, double=True), model(**_nested_inputs(3) | x)
    torch.testing.assert_close(got["out"][0], want["out"][0])

"""Hugging Face round trip (issue 29): a model saved with save_pretrained is pruned from its
folder (hf:DIR), exported with a rewritten config, and plain from_pretrained loads it with no
missing, unexpected or mismatched keys and the pruned model's outputs. Tiny configs of BERT,
Llama with grouped-query attention, Qwen2, ViT and GPT-2; non-uniform widths are refused."""

from __future__ import annotations

import json

import pytest
import torch

from surgery import Budget, SurgeryError, prune, save
from surgery.io.example_inputs import example_inputs, hf_shape
from surgery.io.hf import compare_hf, export_folder, export_hf
from surgery.io.hf_load import hf_base, load_hf
from surgery.testing.oracle import randomize_weights

transformers = pytest.importorskip("transformers")


def _configs() -> dict:
    t = transformers
    return {
        "bert": (t.BertForSequenceClassification,
                 t.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, vocab_size=100, max_position_embeddings=32,
                              num_labels=3)),
        "llama": (t.LlamaForCausalLM,
                  t.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                max_position_embeddings=32)),
        "qwen2": (t.Qwen2ForCausalLM,
                  t.Qwen2Config(num_hidden_layers=2, hidden_size=64, intermediate_size=96,
                                num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                max_position_embeddings=32)),
        "vit": (t.ViTForImageClassification,
                t.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, image_size=32, patch_size=8, num_labels=10)),
        "gpt2": (t.GPT2LMHeadModel,
                 t.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32)),
    }


# config fields after prune(ratio=0.5, uniform=True): worked out from the groups each family
# has (tests/graphs: BERT's and GPT-2's heads follow their stream by the tie; GPT-2's heads
# stay blocked by the tracer, so its stream stays too)
EXPECTED = {
    "bert": {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32},
    "llama": {"hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 16, "intermediate_size": 64},
    "qwen2": {"hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 16, "intermediate_size": 48},
    "vit": {"hidden_size": 16, "num_attention_heads": 2, "head_dim": 8,
            "intermediate_size": 32},
    "gpt2": {"n_embd": 64, "n_head": 4, "n_inner": 128},
}


def _saved(name: str, folder) -> str:
    cls, config = _configs()[name]
    randomize_weights(cls(config)).save_pretrained(folder)
    return f"hf:{folder}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pruned_model_loads_back_with_from_pretrained(name, tmp_path):
    model, shape = load_hf(_saved(name, tmp_path / "base"))
    torch.manual_seed(0)
    x = example_inputs(model.eval(), shape)
    result = prune(model, x, ratio=0.5, uniform=True)
    assert result.params_after < result.params_before
    export_hf(result, tmp_path / "small")
    config = json.loads((tmp_path / "small" / "config.json").read_text())
    assert {k: config[k] for k in EXPECTED[name]} == EXPECTED[name]
    loaded, info = type(model).from_pretrained(tmp_path / "small", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with torch.no_grad():
        ours, theirs = result.model(**x), loaded.eval()(**x)
    torch.testing.assert_close(theirs[0], ours[0], atol=1e-5, rtol=1e-5)
    assert compare_hf(tmp_path / "small", result.model, x) <= 1e-5


def test_non_uniform_widths_are_refused_naming_the_layers(tmp_path):
    model, shape = load_hf(_saved("llama", tmp_path / "base"))
    x = example_inputs(model.eval(), shape)
    result = prune(model, x, ratio={"model.layers.0.mlp.up_proj": 0.5})
    with pytest.raises(SurgeryError) as info:
        export_hf(result, tmp_path / "small")
    message = str(info.value)
    assert "\n" not in message and "surgery.load" in message and "uniform=True" in message
    assert "model.layers.0.mlp.up_proj keeps 64, model.layers.1.mlp.up_proj keeps 128" in message
    assert not (tmp_path / "small").exists()  # refused before anything is written


def test_a_global_ranking_made_uniform_exports(tmp_path):
    model, shape = load_hf(_saved("llama", tmp_path / "base"))
    x = example_inputs(model.eval(), shape)
    budget = Budget(ratio=0.4, global_ranking=True)
    with pytest.raises(SurgeryError, match="layers differ"):
        export_hf(prune(model, x, budget=budget), tmp_path / "ragged")
    result = prune(model, x, budget=budget, uniform=True)
    assert compare_hf(export_hf(result, tmp_path / "small"), result.model, x) <= 1e-5


def test_bert_heads_without_their_width_are_refused(tmp_path):
    """BERT's config derives the head size from hidden_size / heads: heads pruned alone (its
    stream is the model output here) cannot be written."""
    cls = transformers.BertModel
    model = randomize_weights(cls(_configs()["bert"][1]))
    x = example_inputs(model, (1, 8))
    with pytest.raises(SurgeryError, match="derives the head size"):
        export_hf(prune(model, x, ratio=0.5), tmp_path / "small")
    result = prune(model, x, ratio=0.5, uniform=True)  # the tie keeps every head
    assert result.model.encoder.layer[0].attention.self.query.out_features == 32
    assert compare_hf(export_hf(result, tmp_path / "small"), result.model, x) <= 1e-5


def test_a_saved_folder_is_rebuilt_from_its_base_config_and_exported(tmp_path):
    spec = _saved("vit", tmp_path / "base")
    model, shape = load_hf(spec)
    x = example_inputs(model.eval(), shape)
    result = prune(model, x, ratio=0.5, uniform=True)
    save(result, tmp_path / "pruned", base=spec)
    rebuilt, inputs = export_folder(tmp_path / "pruned", tmp_path / "small")
    with torch.no_grad():
        assert torch.equal(rebuilt(**x).logits, result.model(**x).logits)
    assert compare_hf(tmp_path / "small", rebuilt, inputs) <= 1e-5


def test_bases_are_built_from_transformers_classes_of_bounded_size(tmp_path):
    spec = _saved("gpt2", tmp_path / "base")
    model, shape = hf_base(spec, "plan.json", max_params=10**6)
    assert type(model).__name__ == "GPT2LMHeadModel" and shape == hf_shape(model) == (1, 8)
    with pytest.raises(SurgeryError, match="over the 1,000 a saved folder may ask for"):
        hf_base(spec, "plan.json", max_params=1000)
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    (tmp_path / "base" / "config.json").write_text(json.dumps(
        {**config, "architectures": ["os.system"]}))
    with pytest.raises(SurgeryError, match="not one transformers model class"):
        hf_base(spec, "plan.json", max_params=10**6)
    (tmp_path / "base" / "config.json").write_text(json.dumps(
        {**config, "auto_map": {"AutoConfig": "evil.Config"}, "model_type": "evil"}))
    with pytest.raises(SurgeryError, match="cannot read its config.json"):
        hf_base(spec, "plan.json", max_params=10**6)


def test_example_inputs_follow_the_model(tmp_path):
    model, shape = load_hf(_saved("llama", tmp_path / "llama"))
    x = example_inputs(model, shape)
    assert x["input_ids"].dtype == torch.long and x["use_cache"] is False
    assert int(x["input_ids"].max()) < 100
    vit, shape = load_hf(_saved("vit", tmp_path / "vit"))
    assert shape == (1, 3, 32, 32) and example_inputs(vit, shape)["pixel_values"].shape == shape
    with pytest.raises(SurgeryError, match="token ids"):
        example_inputs(vit, shape, "long")


def test_whole_blocks_and_uniform_widths_export_together(tmp_path):
    model, shape = load_hf(_saved("llama", tmp_path / "base"))
    torch.manual_seed(0)
    x = example_inputs(model.eval(), shape)
    result = prune(model, x, ratio=0.5, uniform=True, remove_blocks=1)
    assert len(result.plan.removed_blocks) == 1
    config = json.loads((export_hf(result, tmp_path / "small") / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"],
            config["num_attention_heads"], config["num_key_value_heads"]) == (1, 32, 64, 2, 1)
    _, info = type(model).from_pretrained(tmp_path / "small", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert compare_hf(tmp_path / "small", result.model, x) <= 1e-5

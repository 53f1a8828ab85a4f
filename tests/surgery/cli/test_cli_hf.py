"""The command line's Hugging Face round trip: ``surgery prune hf:DIR --uniform`` then
``surgery export DIR --format hf``; token ids as example inputs (``--input-dtype long``)."""

from __future__ import annotations

import json

import pytest
import torch

from surgery.cli import main
from surgery.io.example_inputs import example_inputs
from surgery.io.hf import compare_hf
from surgery.io.hf_load import load_hf
from surgery.io.saving import load
from surgery.testing.oracle import randomize_weights

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      vocab_size=100, max_position_embeddings=32)
    randomize_weights(transformers.LlamaForCausalLM(config)).save_pretrained(folder)
    return f"hf:{folder}"


def test_prune_uniform_and_export_load_with_from_pretrained(llama, tmp_path, capsys):
    out, small = tmp_path / "pruned", tmp_path / "small"
    assert main(["prune", llama, "--ratio", "0.5", "--uniform", "--out", str(out)]) == 0
    assert "params 86,848 -> 24,992 (28.8% kept)" in capsys.readouterr().out
    assert json.loads((out / "plan.json").read_text())["base"] == llama
    assert main(["export", str(out), "--format", "hf", "--out", str(small)]) == 0
    printed = capsys.readouterr().out
    assert "no missing, unexpected or mismatched keys" in printed
    config = json.loads((small / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["head_dim"]) == (32, 64, 2, 1, 16)
    base, shape = load_hf(llama)
    x = example_inputs(base.eval(), shape)
    assert compare_hf(small, load(out, base, example_inputs=x), x) <= 1e-5


def test_a_non_uniform_prune_is_refused_by_the_hf_export(llama, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", llama, "--ratio", "model.layers.1.mlp.up_proj=0.5",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(out), "--format", "hf", "--out", str(tmp_path / "small")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the config holds one intermediate_size")
    assert "model.layers.1.mlp.up_proj keeps 64" in err[0] and "surgery.load" in err[0]


def test_an_unknown_architecture_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama",
                                                      "architectures": ["Mystery"]}))
    assert main(["prune", f"hf:{tmp_path}", "--ratio", "0.5", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not one transformers model class" in err[0]


def test_token_ids_for_a_model_file(tmp_path, capsys):
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\n"
                   "def build():\n"
                   "    return nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 32), nn.ReLU(),\n"
                   "                         nn.Linear(32, 4))\n")
    args = ["prune", f"{src}:build", "--input-shape", "1,6", "--ratio", "0.5", "--dry-run"]
    assert main(args) == 2  # float inputs cannot index an embedding
    capsys.readouterr()
    assert main([*args, "--input-dtype", "long"]) == 0
    assert "group 1 (1, 3): 32 -> 16 channels" in capsys.readouterr().out
    assert torch.is_tensor(example_inputs(torch.nn.Embedding(5, 2), (1, 3), "long"))


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_a_text_model_folder_exports_with_token_ids(llama, tmp_path, capsys, fmt):
    """ONNX and torch.export of a folder pruned from hf:DIR run on token ids (with an
    attention mask, which transformers' decoders need in ONNX), not on floats."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
    out = tmp_path / "pruned"
    assert main(["prune", llama, "--ratio", "0.5", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(out), "--format", fmt]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and (out / ("model.onnx" if fmt == "onnx" else "model.pt2")).exists()
    if "onnxruntime vs PyTorch" in printed:
        assert float(printed.split("max relative error ")[1].split()[0]) < 1e-4

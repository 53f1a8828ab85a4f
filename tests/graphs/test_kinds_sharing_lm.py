"""Hugging Face language models with tied input and output embeddings (issue 24): the head is
traced as the module that calls it, the stream prunes with it, and they stay one tensor."""

from __future__ import annotations

import pytest
import torch

from surgery import load, prune, save
from surgery.testing.oracle import check, randomize_weights

transformers = pytest.importorskip("transformers")


def _gpt2():
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100,
                                     n_positions=32)
    return randomize_weights(transformers.GPT2LMHeadModel(config))


def _llama():
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      vocab_size=100, tie_word_embeddings=True,
                                      max_position_embeddings=32)
    return randomize_weights(transformers.LlamaForCausalLM(config))


TOKENS = {"input_ids": torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0)),
          "use_cache": False}


def test_gpt2_lm_head_is_traced_and_stays_tied():
    c = check(_gpt2(), TOKENS, 0.5)
    assert c.removed == c.dead and c.error <= 1e-5 and c.output_scale > 1e-6
    assert not c.graph.unsupported
    assert not any("tied weights" in g.reason or "called" in g.reason for g in c.graph.groups)
    assert any("lm_head" in g.modules() for g in c.graph.groups)
    model = c.result.model
    assert model.lm_head.weight is model.transformer.wte.weight


def test_gpt2_stream_prunes_with_its_tied_head_once_its_sizes_are_unambiguous():
    """The stream's last block is GPT-2's square attention ``c_proj`` (``nf == nx``), whose
    literal ``view`` size graphs.sizes cannot attribute; without ``nx`` it is ``nf``."""
    model = _gpt2()
    for m in model.modules():
        if type(m).__name__ == "Conv1D" and m.nf == m.nx:
            m.__dict__.pop("nx")
    result = prune(model, TOKENS, ratio=0.5)
    stream = next(g for g in result.graph.prunable if "transformer.wte" in g.modules())
    assert "layer_norm" in stream.inexact and stream.channels == 64
    assert {"lm_head.in", "transformer.wpe.out"} <= {m.short() for m in stream.members}
    small = result.model
    assert small.lm_head.weight is small.transformer.wte.weight
    assert small.transformer.wte.weight.shape == (100, 32) and small.lm_head.in_features == 32
    assert small(**TOKENS).logits.shape == (1, 8, 100)


def test_llama_with_tied_embeddings_prunes_its_stream(tmp_path):
    c = check(_llama(), TOKENS, 0.5)  # the exact groups (MLP units, heads) by the oracle
    assert c.removed == c.dead and c.error <= 1e-5 and c.output_scale > 1e-6
    result = prune(_llama(), TOKENS, ratio=0.5)
    stream = next(g for g in result.graph.prunable if "model.embed_tokens" in g.modules())
    assert "lm_head.in" in {m.short() for m in stream.members} and stream.inexact
    small = result.model
    assert small.lm_head.weight is small.model.embed_tokens.weight
    assert small.model.embed_tokens.weight.shape == (100, 32)
    save(result, tmp_path / "out")
    loaded = load(tmp_path / "out", _llama(), TOKENS)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(loaded(**TOKENS).logits, small(**TOKENS).logits)

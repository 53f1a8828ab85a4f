"""Hugging Face models from small configs (random weights, offline) and their keyword inputs:
BERT, Llama with grouped-query attention, GPT-2 and ViT, as users call them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

NAMES = ("bert", "llama", "gpt2", "vit")
VOCAB, SEQ = 64, 8


def small_model(name: str) -> nn.Module:
    """``name``'s model in eval mode, seeded: hidden 32, 2 layers, 4 heads (Llama: 2 key/value
    heads)."""
    torch.manual_seed(0)
    t = transformers
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4}
    if name == "bert":
        config = t.BertConfig(vocab_size=VOCAB, max_position_embeddings=32, **common)
        model = t.BertForSequenceClassification(config)
    elif name == "llama":
        config = t.LlamaConfig(vocab_size=VOCAB, max_position_embeddings=32,
                               num_key_value_heads=2, **common)
        model = t.LlamaForCausalLM(config)
    elif name == "gpt2":
        config = t.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                              n_inner=64, bos_token_id=0, eos_token_id=0)
        model = t.GPT2LMHeadModel(config)
    else:
        config = t.ViTConfig(image_size=16, patch_size=8, num_labels=5, **common)
        model = t.ViTForImageClassification(config)
    return model.eval()


def keyword_inputs(name: str, batch: int = 1, mask: bool = True, seed: int = 0) -> dict:
    """Example inputs by keyword: token ids (with an all-ones attention mask if ``mask``; no
    cache for the decoders), or ViT's pixel values."""
    gen = torch.Generator().manual_seed(seed)
    if name == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=gen)}
    ids = torch.randint(0, VOCAB, (batch, SEQ), generator=gen)
    inputs = {"input_ids": ids}
    if mask:
        inputs["attention_mask"] = torch.ones_like(ids)
    if name in ("llama", "gpt2"):
        inputs["use_cache"] = False
    return inputs

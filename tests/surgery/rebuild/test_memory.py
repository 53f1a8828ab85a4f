"""prune() holds no second copy of the model: peak torch CPU memory, counted exactly from the
allocator's events (benchmarks.scale_memory), above the model's own bytes. Not timed."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from benchmarks.scale_memory import torch_peak
from surgery import prune

transformers = pytest.importorskip("transformers")


def llama() -> nn.Module:
    """A Llama of 1.7 M parameters (grouped-query attention, gated MLP), random weights; as in
    a large one, no tensor is more than a tenth of the model (surgery holds one at a time)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=128, num_hidden_layers=8,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=352, vocab_size=1000)
    return transformers.LlamaForCausalLM(config).eval()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(layer for _ in range(8) for layer in (nn.Linear(256, 256), nn.ReLU())),
                         nn.Linear(256, 256)).eval()


def densenet() -> nn.Module:
    """DenseNet-121: its concatenations make a plain forward peak at 0.31x the model; the
    capture's norms of stand-ins are views (graphs.fastconv.batch_norm_view)."""
    torch.manual_seed(0)
    return torchvision.models.densenet121().eval()


TOKENS = {"input_ids": torch.arange(16).reshape(1, 16)}
CASES = [(llama, TOKENS), (mlp, torch.zeros(2, 256)), (densenet, torch.zeros(1, 3, 224, 224))]
IDS = ["llama", "mlp", "densenet121"]


@pytest.mark.parametrize(("build", "x"), CASES, ids=IDS)
def test_in_place_prune_holds_no_second_copy(build, x):
    peak = torch_peak(build, lambda m: prune(m, x, ratio=0.5, inplace=True))
    assert peak.peak_bytes <= 0.25 * peak.model_bytes
    # the old tensors went during the call (no reference cycle waits for a garbage collection)
    assert peak.end_bytes < -0.4 * peak.model_bytes


@pytest.mark.parametrize(("build", "x"), CASES, ids=IDS)
def test_pruned_copy_never_copies_the_cut_layers_whole(build, x):
    peak = torch_peak(build, lambda m: prune(m, x, ratio=0.5))
    assert peak.peak_bytes <= 0.6 * peak.model_bytes  # a whole copy first would be >= 1x


def test_pruned_copy_shares_no_memory_with_the_original():
    model = llama()
    small = prune(model, TOKENS, ratio=0.5).model
    theirs = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    assert not any(t.untyped_storage().data_ptr() in theirs
                   for t in small.state_dict().values() if t.numel())
    assert model.model.layers[0].mlp.up_proj.out_features == 352

"""nn.MultiheadAttention: heads, query, key and value streams and its output prune exactly.

Its ``embed_dim`` (a transformer's residual stream) used to be blocked, cross-attention and
separate k/v projections were unsupported, and ``nn.TransformerEncoderLayer`` failed lint once
its heads were pruned (``PrunedMultiheadAttention`` had no ``_qkv_same_embed_dim``).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from graphs import trace
from surgery import prune
from surgery.rebuild.attention import PrunedMultiheadAttention
from surgery.rebuild.attention import multihead_attention as rebuild_attention
from surgery.rebuild.lint import lint
from surgery.testing.oracle import check, randomize_weights, relative_error


class Block(nn.Module):
    """Linear embeddings -> attention (+ residual) -> Linear head: no norm, every group exact.
    ``cross``: key and value come from a second input through their own Linears."""

    def __init__(self, cross: bool = False, residual: bool = True, **options):
        super().__init__()
        kdim, vdim = options.get("kdim") or 16, options.get("vdim") or 16
        self.embed = nn.Linear(6, 16)
        if cross:
            self.key, self.value = nn.Linear(5, kdim), nn.Linear(5, vdim)
        self.attn = nn.MultiheadAttention(16, 4, **{"batch_first": True, **options})
        self.head = nn.Linear(16, 3)
        self.cross, self.residual = cross, residual

    def forward(self, x, y):  # x: (batch, tokens, 6), y: (batch, other tokens, 5)
        h = self.embed(x)
        k, v = (self.key(y), self.value(y)) if self.cross else (h, h)
        seq = not self.attn.batch_first
        q, k, v = (t.transpose(0, 1) if seq else t for t in (h, k, v))
        out = self.attn(q, k, v, need_weights=False)[0]
        out = out.transpose(0, 1) if seq else out
        return self.head(h + out if self.residual else out)


INPUTS = (torch.randn(2, 5, 6), torch.randn(2, 7, 5))
# (Block options, the prunable groups' channel counts, attention sizes after ratio 0.5:
#  (embed_dim, num_heads, kdim, vdim, out_proj.out_features))
CASES = [
    ({}, [4, 16], (8, 2, 8, 8, 8)),
    ({"batch_first": False}, [4, 16], (8, 2, 8, 8, 8)),
    ({"bias": False}, [4, 16], (8, 2, 8, 8, 8)),
    ({"add_bias_kv": True, "add_zero_attn": True}, [4, 16], (8, 2, 8, 8, 8)),
    ({"residual": False}, [4, 16, 16], (8, 2, 8, 8, 8)),
    ({"cross": True}, [4, 16], (8, 2, 8, 8, 8)),
    ({"cross": True, "kdim": 12, "vdim": 10}, [4, 10, 12, 16], (8, 2, 6, 5, 8)),
    ({"cross": True, "kdim": 12, "vdim": 10, "add_bias_kv": True, "batch_first": False},
     [4, 10, 12, 16], (8, 2, 6, 5, 8)),
]


@pytest.mark.parametrize("options, groups, sizes", CASES)
def test_attention_prunes_heads_and_streams_exactly(options, groups, sizes):
    torch.manual_seed(0)
    model = randomize_weights(Block(**options))
    c = check(model, INPUTS, 0.5)
    assert sorted(g.channels for g in c.graph.prunable) == groups
    assert all(not g.inexact for g in c.graph.prunable)
    assert c.removed == c.dead and c.shape_kept and c.output_scale > 1e-3
    assert c.error <= 1e-5
    attn = c.result.model.attn
    assert isinstance(attn, PrunedMultiheadAttention)
    assert (attn.embed_dim, attn.num_heads, attn.kdim, attn.vdim,
            attn.out_proj.out_features) == sizes
    assert lint(c.result.model, INPUTS) == []


def test_separate_key_and_value_columns_are_members_with_their_sizes():
    graph = trace(Block(cross=True, kdim=12, vdim=10), INPUTS)
    key = next(g for g in graph.prunable if g.channels == 12)
    assert {(m.module, m.role, m.dim, m.attr) for m in key.members} == {
        ("key", "out", 0, ""), ("attn", "in", 1, "k_proj_weight"), ("attn", "size", 0, "kdim")}
    heads = next(g for g in graph.prunable if g.channels == 4)
    rows = next(m for m in heads.members if m.module == "attn")
    assert rows.indices[1] == (4, 5, 6, 7)  # head 1's q rows of q_proj_weight alone


def test_only_the_key_stream_pruned_keeps_torch_multihead_attention():
    """No head and no query channel goes: the layer stays torch's, with fewer k columns."""
    torch.manual_seed(0)
    model, x = randomize_weights(Block(cross=True, kdim=12, vdim=10)), INPUTS
    key = next(g for g in trace(model, x).prunable if g.channels == 12)
    result = prune(model, x, ratio={key.id: 0.5})
    attn = result.model.attn
    assert type(attn) is nn.MultiheadAttention and attn.kdim == 6
    assert tuple(attn.k_proj_weight.shape) == (16, 6) and lint(result.model, x) == []


class Untraced(nn.Module):
    """Packed cross-attention whose key and value are the model input (no traced channels)."""

    def __init__(self, packed: bool = True):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True, kdim=None if packed else 5,
                                          vdim=None if packed else 5)
        self.head, self.packed = nn.Linear(16, 3), packed

    def forward(self, x, y):
        h = self.embed(x)
        y = nn.functional.pad(y, (0, 11)) if self.packed else y
        return self.head(h + self.attn(h, y, y, need_weights=False)[0])


def test_packed_key_without_traced_channels_blocks_the_query_stream():
    graph = trace(Untraced(), INPUTS)
    stream = next(g for g in graph.groups_of("embed") if g.channels == 16)
    assert not stream.prunable and "key input of attn carries no traced channels" in stream.reason
    assert [g.channels for g in graph.prunable] == [4]


def test_separate_key_without_traced_channels_blocks_only_the_key():
    graph = trace(Untraced(packed=False), INPUTS)
    assert sorted(g.channels for g in graph.prunable) == [4, 16]
    key = next(g for g in graph.groups_of("attn") if any(m.attr == "kdim" for m in g.members))
    assert not key.prunable and "key input of attn carries no traced channels" in key.reason


class Layers(nn.Module):
    """Linear embedding -> a torch transformer layer (or stack) -> Linear head."""

    def __init__(self, layer: nn.Module, batch_first: bool = True):
        super().__init__()
        self.embed, self.memory = nn.Linear(6, 16), nn.Linear(5, 16)
        self.layer, self.head, self.batch_first = layer, nn.Linear(16, 3), batch_first

    def forward(self, x, y):
        h, m = self.embed(x), self.memory(y)
        if not self.batch_first:
            h, m = h.transpose(0, 1), m.transpose(0, 1)
        decoder = isinstance(self.layer, nn.TransformerDecoderLayer)
        out = self.layer(h, m) if decoder else self.layer(h)
        return self.head(out if self.batch_first else out.transpose(0, 1))


def encoder_layer(batch_first=True, norm_first=False):
    return nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first,
                                      norm_first=norm_first)


LAYERS = {
    **{f"encoder_layer-bf{bf}-nf{nf}": (lambda bf=bf, nf=nf: Layers(encoder_layer(bf, nf), bf))
       for bf in (True, False) for nf in (False, True)},
    "decoder_layer": lambda: Layers(nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0,
                                                               batch_first=True)),
    "encoder": lambda: Layers(nn.TransformerEncoder(encoder_layer(), 2,
                                                    enable_nested_tensor=False)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_torch_transformer_layers_prune_exactly_and_pass_lint(name):
    """Heads and feed-forward widths by the oracle; the stream (LayerNorm: inexact) prunes too."""
    torch.manual_seed(0)
    model = randomize_weights(LAYERS[name]())
    c = check(model, INPUTS, 0.5)
    assert c.removed == c.dead and len(c.dead) >= 2 and c.shape_kept
    assert c.error <= 1e-5 and c.output_scale > 1e-3
    assert lint(c.result.model, INPUTS) == []
    stream = next(g for g in c.graph.prunable if "embed" in g.modules())
    assert "layer_norm" in stream.inexact
    assert ("memory" in stream.modules()) == (name == "decoder_layer")  # packed cross-attention
    whole = prune(model, INPUTS, ratio=0.5).model
    assert whole(*INPUTS).shape == model(*INPUTS).shape and lint(whole, INPUTS) == []
    attn = next(m for m in whole.modules() if isinstance(m, PrunedMultiheadAttention))
    assert (attn.embed_dim, attn.num_heads, attn._qkv_same_embed_dim) == (8, 2, False)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_transformer_encoder_fast_path_with_padding_runs_the_pruned_layers():
    """nn.TransformerEncoder drops padding into a nested tensor in eval: the pruned attention
    runs it padded and nests its output again."""
    torch.manual_seed(0)
    model = randomize_weights(Layers(nn.TransformerEncoder(encoder_layer(), 2)))
    small = prune(model, INPUTS, ratio=0.5).model
    x = small.embed(INPUTS[0])
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    plain = copy.deepcopy(small.layer)
    plain.use_nested_tensor = False
    with torch.no_grad():
        nested = small.layer(x, src_key_padding_mask=pad)
        padded = plain(x, src_key_padding_mask=pad)
    assert relative_error(nested[~pad], padded[~pad]) <= 1e-5


@pytest.mark.parametrize("options", [{}, {"kdim": 6, "vdim": 4}, {"add_bias_kv": True},
                                     {"add_zero_attn": True, "batch_first": False}])
def test_pruned_attention_keeping_everything_equals_torch(options):
    torch.manual_seed(0)
    mha = randomize_weights(nn.MultiheadAttention(8, 4, **{"batch_first": True, **options}))
    same = rebuild_attention(mha, {1: torch.arange(8)})
    q = torch.randn(4, 4, 8)  # batch = tokens: one mask fits either layout
    k, v = torch.randn(4, 4, mha.kdim), torch.randn(4, 4, mha.vdim)
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    pad = torch.zeros(4, 4, dtype=torch.bool)
    pad[1, -1] = True
    for kwargs in ({}, {"attn_mask": mask}, {"key_padding_mask": pad},
                   {"attn_mask": mask.float().repeat(16, 1, 1) * -1e4},
                   {"need_weights": False, "attn_mask": mask},
                   {"average_attn_weights": False}):
        with torch.no_grad():
            want, want_w = mha(q, k, v, **kwargs)
            got, got_w = same(q, k, v, **kwargs)
        assert relative_error(got, want) <= 1e-5
        assert (got_w is None) == (want_w is None)
        assert got_w is None or relative_error(got_w, want_w) <= 1e-5


@pytest.mark.filterwarnings("ignore:Unwrapped parameters detected")  # ViT's class token
def test_vit_removes_at_least_what_torch_pruning_removes():
    """The issue's measure (it removed 0.66 of torch-pruning's share on vit_b_16): a small
    torchvision ViT at ratio 0.5. torch-pruning prunes the stream too (its pruned ViT does not
    run: the patch embedding's reshape names hidden_dim); we also drop whole heads."""
    torch.manual_seed(0)
    model = randomize_weights(VisionTransformer(32, 16, 2, 4, 64, 128))
    x = torch.randn(1, 3, 32, 32)
    ours = prune(copy.deepcopy(model), x, ratio=0.5)
    theirs = copy.deepcopy(model)
    tp.pruner.MagnitudePruner(theirs, x, importance=tp.importance.MagnitudeImportance(p=1),
                              pruning_ratio=0.5, ignored_layers=[theirs.heads.head]).step()
    kept_theirs = sum(p.numel() for p in theirs.parameters()) / ours.params_before
    kept_ours = ours.params_after / ours.params_before
    assert kept_ours <= kept_theirs and kept_ours < 0.45
    assert lint(ours.model, x) == [] and ours.model(x).shape == (1, 1000)
    assert ours.model.encoder.layers[0].self_attention.embed_dim == 32

"""Coupling rules for transformer blocks: multi-head attention, functional LayerNorm, Swin helpers.

* ``nn.MultiheadAttention`` (self-attention, packed q/k/v): each *head* is one channel. Head h
  owns rows ``h*d..(h+1)*d`` of each of the q, k and v blocks of ``in_proj_weight`` and the same
  columns of ``out_proj``; removing a head removes all of them (``surgery.rebuild.attention``).
  This is exact: a head whose v rows and out_proj columns are zero adds nothing to the output,
  whatever its softmax. Its ``embed_dim`` (input and output width) is not pruned.
* ``F.layer_norm`` over the channel dim (ConvNeXt's ``LayerNorm2d`` permutes to channels last and
  calls it with its own weight and bias): the channels pass through; the owner's affine is a member.
* torchvision Swin: ``shifted_window_attention`` derives the head width from its input width
  (``C // num_heads``) and reads a per-head relative position bias, so neither its input/output
  width nor its heads are pruned; ``_patch_merging_pad`` stacks four copies of the channels.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> class Block(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    ...     def forward(self, x):  # x: (batch, 8 channels, tokens)
    ...         x = x.transpose(1, 2)
    ...         return self.attn(x, x, x, need_weights=False)[0]
    >>> heads = trace(Block(), torch.zeros(1, 8, 3)).prunable[0]
    >>> heads.channels, [m.short() for m in heads.members]
    (2, ['attn.out x12', 'attn.out_proj.in x4'])
"""

from __future__ import annotations

import operator

import numpy as np
import torch.nn.functional as F
from torch import fx, nn

from graphs.channels import Flow
from graphs.context import TraceContext
from graphs.model import IN, OUT


def _arg(node: fx.Node, index: int, name: str, default=None):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def head_rows(num_heads: int, head_dim: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element ids of packed q/k/v rows (3*H*d) and of out_proj columns (H*d), one id per head.

    Example:
        >>> rows, cols = head_rows(2, 1, np.array([7, 9]))
        >>> rows.tolist(), cols.tolist()
        ([7, 9, 7, 9, 7, 9], [7, 9])
    """
    per_head = np.repeat(ids[:num_heads], head_dim)
    return np.tile(per_head, 3), per_head


def multihead_attention(ctx: TraceContext, node: fx.Node):
    """Self-attention with packed q, k, v: heads are prunable, embed_dim is blocked."""
    m, name = ctx.module(node), str(node.target)
    query, key, value = (_arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
    x, shape = ctx.flow(query), ctx.shape(query)
    if x is None or shape is None or len(shape) != 3 or x.dim != 2:
        return ctx.reject(node, "MultiheadAttention", "embedding is not the last of 3 dims")
    if not (query is key is value) or m.in_proj_weight is None or m.bias_k is not None \
            or m.add_zero_attn:
        return ctx.reject(node, "MultiheadAttention",
                          "only self-attention with packed q, k, v and no bias_k/zero_attn")
    out_proj = name + ".out_proj"
    ctx.calls[name] += 1
    ctx.calls[out_proj] += 1
    width = f"embed_dim of {name} is both its input and output width: not pruned (its heads are)"
    ctx.sets.record(name, IN, 1, x.ids)
    ctx.sets.block(x.ids, width)
    out = ctx.sets.fresh(m.embed_dim)
    ctx.sets.record(out_proj, OUT, 0, out)
    ctx.sets.block(out, width)
    heads = ctx.sets.fresh(m.num_heads)
    rows, cols = head_rows(m.num_heads, m.head_dim, heads)
    ctx.sets.record(name, OUT, 0, rows)
    ctx.sets.record(out_proj, IN, 1, cols)
    why = _heads_not_prunable(node)
    if why:
        ctx.sets.block(heads, f"heads of {name}: {why}")
    return Flow(out, 2), None


def _heads_not_prunable(node: fx.Node) -> str:
    mask = _arg(node, 5, "attn_mask")
    if isinstance(mask, fx.Node) and len(mask.meta.get("tensor_meta").shape) == 3:
        return "a per-head attn_mask is passed"
    for user in node.users:
        if user.target is operator.getitem and user.args[1] == 1 and user.users:
            return "the attention weights (averaged over heads) are used"
    return ""


def functional_layer_norm(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """F.layer_norm over the channel dim with one module's weight and bias (e.g. LayerNorm2d)."""
    x, shape = ctx.flow(node.args[0]), ctx.shape(node.args[0])
    if x is None or shape is None:
        return None
    normalized = _arg(node, 1, "normalized_shape", ())
    if len(normalized) != 1 or x.dim != len(shape) - 1:
        return ctx.reject(node, "layer_norm", "normalises more than the channel dimension")
    weight, bias = _arg(node, 2, "weight"), _arg(node, 3, "bias")
    owner = affine_owner(weight, bias)
    if owner is None:
        return ctx.reject(node, "layer_norm", "affine tensors are not one module's weight, bias")
    if owner:
        ctx.calls[owner] += 1
        ctx.sets.record(owner, OUT, 0, x.ids)
    return x


def affine_owner(weight, bias) -> str | None:
    """The module whose ``weight``/``bias`` attributes both tensors are; "" without affine."""
    owners = set()
    for arg, attr in ((weight, "weight"), (bias, "bias")):
        if arg is None:
            continue
        if not (isinstance(arg, fx.Node) and arg.op == "get_attr"):
            return None
        owner, _, leaf = arg.target.rpartition(".")
        if leaf != attr:
            return None
        owners.add(owner)
    return owners.pop() if len(owners) == 1 else ("" if not owners else None)


def shifted_window_attention(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Swin attention: head width is ``C // num_heads`` of its input, so nothing here is pruned."""
    reason = (f"torchvision shifted_window_attention at node {node.name} derives its head width "
              f"from its input width and has a per-head position bias: not pruned")
    return ctx.block_through(node, reason)


def relative_position_bias(ctx: TraceContext, node: fx.Node) -> None:
    """Swin's per-head bias table lookup: heads are not pruned, so its channels are blocked."""
    for f in ctx.input_flows(node):
        ctx.sets.block(f.ids, f"per-head relative position bias at node {node.name}")


def patch_merging_pad(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """Swin patch merging: pads H, W and stacks 4 strided views on the last (channel) dim."""
    x, shape = ctx.flow(node.args[0]), ctx.shape(node.args[0])
    if x is None or shape is None:
        return None
    if x.dim != len(shape) - 1:
        return ctx.reject(node, "_patch_merging_pad", "channels are not the last dim")
    return Flow(np.tile(x.ids, 4), x.dim)


def register_all(table) -> None:
    from torchvision.models import swin_transformer as swin

    table.register(nn.MultiheadAttention, multihead_attention)
    table.register(F.layer_norm, functional_layer_norm)
    table.register(swin.shifted_window_attention, shifted_window_attention)
    table.register(swin._get_relative_position_bias, relative_position_bias)
    table.register(swin._patch_merging_pad, patch_merging_pad)

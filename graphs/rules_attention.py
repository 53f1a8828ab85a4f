"""Coupling rules for attention layers.

* ``nn.MultiheadAttention`` (self-attention, packed q/k/v): each *head* is one channel. Head h
  owns rows ``h*d..(h+1)*d`` of each of the q, k and v blocks of ``in_proj_weight`` and the same
  columns of ``out_proj``; removing a head removes all of them (``surgery.rebuild.attention``).
  This is exact: a head whose v rows and out_proj columns are zero adds nothing to the output,
  whatever its softmax. Its ``embed_dim`` (input and output width) is not pruned.

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
from torch import fx, nn

from graphs.channels import Flow
from graphs.context import TraceContext, arg
from graphs.datamodel import IN, OUT


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
    query, key, value = (arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
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
    mask = arg(node, 5, "attn_mask")
    if isinstance(mask, fx.Node) and len(mask.meta.get("tensor_meta").shape) == 3:
        return "a per-head attn_mask is passed"
    for user in node.users:
        if user.target is operator.getitem and user.args[1] == 1 and user.users:
            return "the attention weights (averaged over heads) are used"
    return ""


def packed_attention(module: nn.Module) -> bool:
    """What ``nn.MultiheadAttention`` holds: packed q/k/v rows, heads, an ``out_proj`` Linear.

    Example:
        >>> packed_attention(nn.MultiheadAttention(8, 2)), packed_attention(nn.Linear(2, 2))
        (True, False)
    """
    return (hasattr(module, "in_proj_weight") and isinstance(getattr(module, "num_heads", None),
                                                             int)
            and isinstance(getattr(module, "head_dim", None), int)
            and isinstance(getattr(module, "out_proj", None), nn.Linear))


"""Coupling rule for attention layers: ``nn.MultiheadAttention`` (captured whole).

What is prunable, all of it exactly (a dead channel changes nothing):

* *heads*: each head is one channel. Head h owns rows ``h*d..(h+1)*d`` of each of the q, k and
  v blocks of the packed ``in_proj_weight`` (of ``q_proj_weight``, ``k_proj_weight`` and
  ``v_proj_weight`` when they are separate; the group names the q rows, the surgeon cuts all
  three), the same slice of ``bias_k`` / ``bias_v`` and the same columns of ``out_proj``. A head
  whose v rows and out_proj columns are zero adds nothing to the output, whatever its softmax.
  Heads stay when the (head-averaged) attention weights are used or a per-head mask is passed.
* the *query stream*: the query's channels are the columns of the layer's reference tensor
  (``in_proj_weight`` or ``q_proj_weight``, weight dim 1; the new width is ``embed_dim``).
  With a packed ``in_proj_weight`` the key and value share those columns: their channels are
  coupled with the query's (one stream, as in self-attention or a decoder reading an encoder of
  the same width); when key or value carries no traced channels on its last dim the query
  stream is blocked, with that reason.
* *key and value streams* of separate projections (``kdim`` / ``vdim`` != ``embed_dim``):
  ``k_proj_weight`` / ``v_proj_weight`` columns (members naming the parameter, cut by
  ``surgery.rebuild.apply.cut_parameter``) and the ``kdim`` / ``vdim`` SIZE members.
* the *output*: ``out_proj``'s rows (and bias) are new channels the output carries (a
  transformer's residual add couples them with the query stream).

``bias_k``/``bias_v`` and ``add_zero_attn`` live in the heads' inner width: they follow the kept
heads. Only batched inputs (3 dims, channels last) are traced.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> class Block(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Linear(4, 8)
    ...         self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    ...     def forward(self, x):  # x: (batch, tokens, 4)
    ...         h = self.embed(x)
    ...         return h + self.attn(h, h, h, need_weights=False)[0]
    >>> graph = trace(Block(), torch.zeros(1, 3, 4))
    >>> [(g.channels, [m.short() for m in g.members]) for g in graph.prunable]
    [(2, ['attn.out x12', 'attn.out_proj.in x4'])]
    >>> stream = graph.groups_of("attn.out_proj")[0]
    >>> [m.short() for m in stream.members], stream.reason
    (['embed.out', 'attn.in', 'attn.out_proj.out'], 'touches the model output')
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from graphs.channels import Flow
from graphs.context import TraceContext, arg
from graphs.datamodel import IN, OUT, SIZE

SEPARATE = (("key", "k_proj_weight", "kdim"), ("value", "v_proj_weight", "vdim"))
"""(input, its projection weight, its width attribute) of the separate key and value."""


def head_rows(num_heads: int, head_dim: int, ids: np.ndarray,
              blocks: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Element ids of the projection rows (``blocks`` * H*d: q, k, v packed; 1: q alone) and of
    out_proj columns (H*d), one id per head.

    Example:
        >>> rows, cols = head_rows(2, 1, np.array([7, 9]))
        >>> rows.tolist(), cols.tolist()
        ([7, 9, 7, 9, 7, 9], [7, 9])
        >>> head_rows(2, 2, np.array([7, 9]), blocks=1)[0].tolist()
        [7, 7, 9, 9]
    """
    per_head = np.repeat(ids[:num_heads], head_dim)
    return np.tile(per_head, blocks), per_head


def multihead_attention(ctx: TraceContext, node: fx.Node):
    """Heads, the query stream, separate key/value streams and out_proj's rows (see above)."""
    m, name = ctx.module(node), str(node.target)
    query, key, value = (arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
    shape = ctx.shape(query)
    if shape is None or len(shape) != 3:
        return ctx.reject(node, "MultiheadAttention", "only batched (3-dim) inputs are traced")
    out_proj = name + ".out_proj"
    ctx.calls[name] += 1
    ctx.calls[out_proj] += 1
    packed = m.in_proj_weight is not None
    q = input_channels(ctx, node, query, "query", reference(m).shape[1])
    ctx.sets.record(name, IN, 1, q)
    for role, t, (_, weight, size) in zip(("key", "value"), (key, value), SEPARATE):
        if packed and t is not query:
            ctx.sets.union(q, input_channels(ctx, node, t, role, q.shape[0]))
        elif not packed:
            ids = q if t is query else input_channels(ctx, node, t, role,
                                                      getattr(m, weight).shape[1])
            ctx.sets.record(name, IN, 1, ids, weight)
            ctx.sets.record(name, SIZE, 0, ids, size)
    heads = ctx.sets.fresh(m.num_heads)
    rows, cols = head_rows(m.num_heads, m.head_dim, heads, 3 if packed else 1)
    ctx.sets.record(name, OUT, 0, rows)
    ctx.sets.record(out_proj, IN, 1, cols)
    why = _heads_not_prunable(node)
    if why:
        ctx.sets.block(heads, f"heads of {name}: {why}")
    out = ctx.sets.fresh(m.out_proj.out_features)
    ctx.sets.record(out_proj, OUT, 0, out)
    return Flow(out, len(shape) - 1), None


def input_channels(ctx: TraceContext, node: fx.Node, t: Any, role: str,
                   width: int) -> np.ndarray:
    """The channel ids on the last dim of the ``role`` input ``t`` (query, key or value); when it
    carries none there, new ids blocked with that reason (and its own channels blocked: they
    sit on a dim attention does not keep apart)."""
    f, shape = ctx.flow(t), ctx.shape(t)
    if f is not None and shape is not None and f.dim == len(shape) - 1 and f.size == width:
        return f.ids
    why = f"the {role} input of {node.target} carries no traced channels on its last dim"
    if f is not None:
        ctx.sets.block(f.ids, why)
    fresh = ctx.sets.fresh(width)
    ctx.sets.block(fresh, why)
    return fresh


def _heads_not_prunable(node: fx.Node) -> str:
    mask = arg(node, 5, "attn_mask")
    if isinstance(mask, fx.Node) and len(mask.meta.get("tensor_meta").shape) == 3:
        return "a per-head attn_mask is passed"
    for user in node.users:
        if user.target is operator.getitem and user.args[1] == 1 and user.users:
            return "the attention weights (averaged over heads) are used"
    return ""


def packed_attention(module: nn.Module) -> bool:
    """What ``nn.MultiheadAttention`` holds: ``in_proj_weight`` (packed q, k, v rows, or None
    beside separate ``q_proj_weight``...), heads and an ``out_proj`` Linear.

    Example:
        >>> packed_attention(nn.MultiheadAttention(8, 2)), packed_attention(nn.Linear(2, 2))
        (True, False)
        >>> packed_attention(nn.MultiheadAttention(8, 2, kdim=4))
        True
    """
    return (hasattr(module, "in_proj_weight") and isinstance(getattr(module, "num_heads", None),
                                                             int)
            and isinstance(getattr(module, "head_dim", None), int)
            and isinstance(getattr(module, "out_proj", None), nn.Linear))


def reference(module: nn.Module) -> torch.Tensor:
    """The tensor the attention layer's members index: packed ``in_proj_weight`` (3*H*d rows),
    else ``q_proj_weight`` (H*d rows); the columns are the query's channels.

    Example:
        >>> tuple(reference(nn.MultiheadAttention(8, 2, kdim=4)).shape)
        (8, 8)
    """
    packed = module.in_proj_weight
    return packed if packed is not None else module.q_proj_weight


def attention_sizes(m: nn.Module, w: torch.Tensor) -> list[tuple[str, Any]]:
    """(size attribute, the value the tensors imply) of an attention layer, for lint.

    Example:
        >>> mha = nn.MultiheadAttention(8, 2, vdim=4)
        >>> attention_sizes(mha, reference(mha))
        [('embed_dim', 8), ('head_dim', 4), ('kdim', 8), ('vdim', 4)]
    """
    packed = m.in_proj_weight is not None
    inner = w.shape[0] // (3 if packed else 1)
    found = [("embed_dim", w.shape[1]), ("head_dim", inner // max(m.num_heads, 1))]
    for _, weight, size in SEPARATE:
        found.append((size, w.shape[1] if packed else getattr(m, weight).shape[1]))
    return found

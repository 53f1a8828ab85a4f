"""Surgeons for transformer layers: remove whole heads of ``nn.MultiheadAttention``.

``nn.MultiheadAttention`` ties its inner width to ``embed_dim`` (q, k, v and out_proj are all
embed_dim wide), so an attention layer that lost heads becomes a ``PrunedMultiheadAttention``:
same parameters (``in_proj_weight`` rows of the kept heads, ``out_proj`` columns), same call
signature and the same maths, with ``num_heads * head_dim`` smaller than ``embed_dim``.

Example:
    >>> mha = nn.MultiheadAttention(8, 4, batch_first=True)
    >>> keep = {0: torch.tensor([0, 1, 6, 7, 8, 9, 14, 15, 16, 17, 22, 23])}  # heads 0 and 3
    >>> small = multihead_attention(mha, keep)
    >>> small.num_heads, small.head_dim, tuple(small.in_proj_weight.shape)
    (2, 2, (12, 8))
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from surgery.errors import SurgeryError
from surgery.rebuild.respawn import Keep, carry_hooks


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (packed q, k, v) whose heads need not fill ``embed_dim``."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float = 0.0,
                 bias: bool = True, batch_first: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim, device=device,
                                                       dtype=dtype))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * inner, device=device, dtype=dtype)) \
            if bias else None
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias, device=device, dtype=dtype)
        self.bias_k = self.bias_v = None  # as nn.MultiheadAttention: the tracer's rule reads them
        self.add_zero_attn = False

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = (self._project(t, part) for part, t in enumerate((query, key, value)))
        mask = _additive_mask(attn_mask, key_padding_mask, q)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
            attn = F.softmax(scores if mask is None else scores + mask, dim=-1)
            out = F.dropout(attn, p) @ v
            weights = attn.mean(dim=1) if average_attn_weights else attn
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=is_causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _project(self, t: torch.Tensor, part: int) -> torch.Tensor:
        """q (part 0), k (1) or v (2) of ``t``, as (batch, heads, tokens, head_dim)."""
        inner = self.num_heads * self.head_dim
        rows = slice(part * inner, (part + 1) * inner)
        b = self.in_proj_bias[rows] if self.in_proj_bias is not None else None
        t = F.linear(t, self.in_proj_weight[rows], b)
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)


def _additive_mask(attn_mask, key_padding_mask, q: torch.Tensor):
    """MultiheadAttention's masks (True = masked out) as one float mask added to the scores."""
    mask = None
    for m, shape in ((attn_mask, None), (key_padding_mask, (q.shape[0], 1, 1, -1))):
        if m is None:
            continue
        if m.dtype == torch.bool:
            m = torch.zeros_like(m, dtype=q.dtype).masked_fill(m, float("-inf"))
        m = m.reshape(shape) if shape is not None else m
        mask = m if mask is None else mask + m
    return mask


def kept_heads(rows: list[int], num_heads: int, head_dim: int) -> list[int]:
    """Heads whose q, k and v rows are all kept; SurgeryError when rows split a head.

    Example:
        >>> kept_heads([2, 3, 6, 7, 10, 11], 2, 2)
        [1]
    """
    inner = num_heads * head_dim
    heads = sorted({r // head_dim for r in rows if r < inner})
    expected = [part * inner + h * head_dim + i for part in range(3) for h in heads
                for i in range(head_dim)]
    if sorted(rows) != expected:
        raise SurgeryError("in_proj_weight rows to keep do not form whole heads (q, k and v)")
    return heads


def multihead_attention(m: nn.Module, keep: Keep) -> nn.Module:
    """whole heads: a `PrunedMultiheadAttention` with the kept heads' q, k, v rows.

    out_proj is copied as it is (its input columns are a member of their own); hooks are kept.
    """
    if set(keep) - {0} or m.in_proj_weight is None or getattr(m, "bias_k", None) is not None:
        raise SurgeryError(f"only whole heads of self-attention are pruned, not dims {set(keep)}")
    head_dim = m.head_dim
    heads = kept_heads(keep[0].tolist(), m.num_heads, head_dim)
    w = m.in_proj_weight
    new = PrunedMultiheadAttention(m.embed_dim, len(heads), head_dim, m.dropout,
                                   m.in_proj_bias is not None, m.batch_first,
                                   device=w.device, dtype=w.dtype)
    rows = keep[0].to(w.device)
    with torch.no_grad():
        new.in_proj_weight.copy_(w.index_select(0, rows))
        if m.in_proj_bias is not None:
            new.in_proj_bias.copy_(m.in_proj_bias.index_select(0, rows))
    new.out_proj = copy.deepcopy(m.out_proj)
    return carry_hooks(m, new.train(m.training))

"""Surgeon for attention layers: whole heads and input channels of ``nn.MultiheadAttention``.

``nn.MultiheadAttention`` ties its inner width (num_heads * head_dim) to ``embed_dim``, its
query width, so an attention layer that lost heads or query channels becomes a
``PrunedMultiheadAttention``: the same parameters (projection rows of the kept heads, columns
of the kept channels, ``bias_k``/``bias_v`` of the kept heads), the same call signature, the
same maths and the same attributes, so ``nn.TransformerEncoderLayer`` and friends take it as
their ``self_attn``. Its ``_qkv_same_embed_dim`` is False, which keeps those layers off
torch's fused fast path (it assumes the inner width is ``embed_dim``). ``out_proj`` is an
``nn.Linear`` child rebuilt by its own members; the separate ``k_proj_weight`` /
``v_proj_weight`` columns and ``kdim`` / ``vdim`` are members of their own too.

Example:
    >>> mha = nn.MultiheadAttention(8, 4, batch_first=True)
    >>> keep = {0: torch.tensor([0, 1, 6, 7, 8, 9, 14, 15, 16, 17, 22, 23]),  # heads 0 and 3
    ...         1: torch.tensor([0, 2, 4, 5, 6, 7])}  # query channels 1 and 3 go
    >>> small = multihead_attention(mha, keep)
    >>> small.num_heads, small.head_dim, small.embed_dim, tuple(small.in_proj_weight.shape)
    (2, 2, 6, (12, 6))
    >>> small.out_proj.in_features  # out_proj's columns: a member of their own (the linear surgeon)
    8
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from surgery.errors import SurgeryError
from surgery.rebuild.respawn import Keep, carry_hooks

PROJECTIONS = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (same constructor, call and attributes) whose heads need not
    fill ``embed_dim``: ``head_dim`` may be given, q, k and v are ``num_heads * head_dim`` wide.
    ``packed`` (default: as torch, when kdim == vdim == embed_dim) holds ``in_proj_weight``,
    else ``q/k/v_proj_weight``. The output width is ``out_proj``'s.

    Example:
        >>> attn = PrunedMultiheadAttention(6, 2, head_dim=2, kdim=4, vdim=4)
        >>> attn.in_proj_weight is None, tuple(attn.k_proj_weight.shape), attn.out_proj
        (True, (4, 4), Linear(in_features=4, out_features=6, bias=True))
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, device=None, dtype=None, *, head_dim=None,
                 packed=None) -> None:
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = head_dim or embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self._qkv_same_embed_dim = False  # never torch's fused path: it assumes inner=embed_dim
        self.dropout, self.batch_first, self.add_zero_attn = dropout, batch_first, add_zero_attn
        inner, like = num_heads * self.head_dim, {"device": device, "dtype": dtype}
        packed = self.kdim == self.vdim == embed_dim if packed is None else packed
        self.register_parameter("in_proj_weight", nn.Parameter(
            torch.empty(3 * inner, embed_dim, **like)) if packed else None)
        for name, width in zip(PROJECTIONS, (embed_dim, self.kdim, self.vdim)):
            self.register_parameter(name, None if packed else nn.Parameter(
                torch.empty(inner, width, **like)))
        self.register_parameter("in_proj_bias", nn.Parameter(torch.zeros(3 * inner, **like))
                                if bias else None)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias, **like)
        self.bias_k, self.bias_v = (nn.Parameter(torch.zeros(1, 1, inner, **like))
                                    for _ in range(2)) if add_bias_kv else (None, None)
        for p in (self.in_proj_weight, *(getattr(self, n) for n in PROJECTIONS)):
            if p is not None:
                nn.init.xavier_uniform_(p)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if query.is_nested:
            return self._nested(query, key, value, attn_mask), None
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = self._attend(query, key, value, key_padding_mask, need_weights,
                                    attn_mask, average_attn_weights, is_causal)
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _attend(self, query, key, value, key_padding_mask, need_weights, attn_mask,
                average_attn_weights, is_causal):
        """The attention of batch-first inputs: (output, weights or None)."""
        q, k, v = (self._project(t, part) for part, t in enumerate((query, key, value)))
        k, v, extra = self._extra_keys(k, v)
        mask = _additive_mask(attn_mask, key_padding_mask, q, extra)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
            attn = F.dropout(F.softmax(scores if mask is None else scores + mask, dim=-1), p)
            out = attn @ v
            weights = attn.mean(dim=1) if average_attn_weights else attn
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=is_causal and mask is None)
        return self.out_proj(out.transpose(1, 2).flatten(2)), weights

    def _nested(self, query, key, value, attn_mask) -> torch.Tensor:
        """Self-attention over a nested tensor (``nn.TransformerEncoder``'s fast path drops
        padding so): run padded, with the padding masked, and nest the output again."""
        if key is not query or value is not query:
            raise RuntimeError("PrunedMultiheadAttention takes a nested tensor only for "
                               "self-attention (query is key is value)")
        lengths = [t.shape[0] for t in query.unbind()]
        x = torch.nested.to_padded_tensor(query, 0.0)
        pad = torch.arange(x.shape[1], device=x.device) >= torch.tensor(
            lengths, device=x.device)[:, None]
        out, _ = self._attend(x, x, x, pad, False, attn_mask, True, False)
        return torch.nested.as_nested_tensor([o[:n] for o, n in zip(out, lengths)])

    def _project(self, t: torch.Tensor, part: int) -> torch.Tensor:
        """q (part 0), k (1) or v (2) of ``t``, as (batch, heads, tokens, head_dim)."""
        inner = self.num_heads * self.head_dim
        rows = slice(part * inner, (part + 1) * inner)
        b = self.in_proj_bias[rows] if self.in_proj_bias is not None else None
        w = self.in_proj_weight[rows] if self.in_proj_weight is not None else \
            getattr(self, PROJECTIONS[part])
        t = F.linear(t, w, b)
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _extra_keys(self, k: torch.Tensor, v: torch.Tensor):
        """k and v with ``bias_k``/``bias_v`` and a zero key/value appended, as torch does;
        the number of keys appended."""
        extra = 0
        tails = [(self.bias_k, self.bias_v)] if self.bias_k is not None else []
        tails += [(None, None)] if self.add_zero_attn else []
        for tail_k, tail_v in tails:
            shape = (k.shape[0], self.num_heads, 1, self.head_dim)
            k, v = (torch.cat([t, t.new_zeros(shape) if b is None else
                               b.reshape(1, self.num_heads, 1, self.head_dim).expand(shape)], 2)
                    for t, b in ((k, tail_k), (v, tail_v)))
            extra += 1
        return k, v, extra


def _additive_mask(attn_mask, key_padding_mask, q: torch.Tensor, extra: int = 0):
    """MultiheadAttention's masks (True = masked out) as one float mask added to the scores
    (batch, heads, queries, keys); ``extra`` appended keys are never masked."""
    mask = None
    batch, heads = q.shape[:2]
    for m, shape in ((attn_mask, None), (key_padding_mask, (batch, 1, 1, -1))):
        if m is None:
            continue
        if m.dtype == torch.bool:
            m = torch.zeros_like(m, dtype=q.dtype).masked_fill(m, float("-inf"))
        if shape is None and m.dim() == 3:  # (batch * heads, queries, keys)
            shape = (batch, heads, *m.shape[1:])
        m = F.pad(m.reshape(shape) if shape is not None else m, (0, extra))
        mask = m if mask is None else mask + m
    return mask


def kept_heads(rows: list[int], num_heads: int, head_dim: int, blocks: int = 3) -> list[int]:
    """Heads whose rows are all kept, in each of ``blocks`` blocks (q, k and v packed: 3; a
    separate ``q_proj_weight``: 1); SurgeryError when rows split a head.

    Example:
        >>> kept_heads([2, 3, 6, 7, 10, 11], 2, 2)
        [1]
        >>> kept_heads([0, 1], 2, 2, blocks=1)
        [0]
    """
    inner = num_heads * head_dim
    heads = sorted({r // head_dim for r in rows if r < inner})
    if sorted(rows) != head_indices(heads, head_dim, inner, blocks).tolist():
        raise SurgeryError("projection rows to keep do not form whole heads (q, k and v)")
    return heads


def head_indices(heads: list[int], head_dim: int, inner: int = 0,
                 blocks: int = 1) -> torch.Tensor:
    """Rows of ``heads`` in each of ``blocks`` blocks of ``inner`` rows.

    Example:
        >>> head_indices([1], 2, inner=4, blocks=3).tolist()
        [2, 3, 6, 7, 10, 11]
    """
    one = (torch.tensor(heads, dtype=torch.long)[:, None] * head_dim
           + torch.arange(head_dim)).flatten()
    return torch.cat([one + part * inner for part in range(blocks)])


def multihead_attention(m: nn.Module, keep: Keep) -> nn.Module:
    """whole heads (dim 0) and query channels (dim 1): a `PrunedMultiheadAttention`.

    out_proj is copied as it is (its rows and columns are members of their own), and so are
    separate k/v projection columns; requires_grad and hooks are kept.
    """
    if set(keep) - {0, 1}:
        raise SurgeryError(f"attention layers have weight dims 0 (heads) and 1 (query "
                           f"channels), not {sorted(set(keep) - {0, 1})}")
    packed = m.in_proj_weight is not None
    weight = m.in_proj_weight if packed else m.q_proj_weight
    heads = kept_heads(keep[0].tolist(), m.num_heads, m.head_dim, 3 if packed else 1) \
        if 0 in keep else list(range(m.num_heads))
    cols = keep.get(1, torch.arange(weight.shape[1])).to(weight.device)
    width = len(cols)
    new = PrunedMultiheadAttention(
        width, len(heads), m.dropout, m.in_proj_bias is not None, m.bias_k is not None,
        m.add_zero_attn, width if packed else m.kdim, width if packed else m.vdim,
        m.batch_first, weight.device, weight.dtype, head_dim=m.head_dim, packed=packed)
    inner = m.num_heads * m.head_dim
    rows = head_indices(heads, m.head_dim).to(weight.device)
    packed_rows = head_indices(heads, m.head_dim, inner, 3).to(weight.device)
    cuts = {"in_proj_weight": (packed_rows, cols), "q_proj_weight": (rows, cols),
            "k_proj_weight": (rows, None), "v_proj_weight": (rows, None),
            "in_proj_bias": (packed_rows, None), "bias_k": (None, rows), "bias_v": (None, rows)}
    for name, (dim0, last) in cuts.items():
        _copy_cut(getattr(new, name), getattr(m, name), dim0, last)
    new.out_proj = copy.deepcopy(m.out_proj)
    return carry_hooks(m, new.train(m.training))


def _copy_cut(new: torch.Tensor | None, old: torch.Tensor | None, dim0, last) -> None:
    """Fill ``new`` with ``old`` cut to indices ``dim0`` along dim 0 and ``last`` along the
    last dim (None: whole); requires_grad follows ``old``."""
    if new is None or old is None:
        return
    t = old.detach()
    t = t.index_select(0, dim0) if dim0 is not None else t
    t = t.index_select(t.dim() - 1, last) if last is not None else t
    with torch.no_grad():
        new.copy_(t)
    new.requires_grad_(old.requires_grad)

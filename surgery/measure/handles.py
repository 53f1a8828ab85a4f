"""MAC formulas for the ops fvcore leaves out, and their thin fvcore (jit) adapters.

fvcore counts conv, linear, matmul, bmm, einsum, norms and 2-d upsampling. A fused
``nn.MultiheadAttention`` (``aten::_native_multi_head_attention``, the eval fast path) and
``F.scaled_dot_product_attention`` were left uncounted, so a pruned ViT whose attention runs
as explicit matmuls counted *more* MACs than the dense one. ``EXTRA_HANDLES`` counts them by
the same formulas as their explicit equivalents: the fused attention counts exactly what its
q/k/v projections (linear), q @ k^T and attn @ v (matmul) and output projection would.

Formulas take shapes (ints) and return MACs (one multiply-add counts 1, as in fvcore):

    >>> attention_macs((2, 4, 10, 16), (2, 4, 12, 16), (2, 4, 12, 8))  # 2*4*10*12*(16 + 8)
    23040
    >>> multihead_macs(batch=1, q_len=197, kv_len=197, embed=768, inner=768)
    524391936
    >>> sorted(EXTRA_HANDLES)[:3]
    ['aten::_native_multi_head_attention', 'aten::addbmm', 'aten::baddbmm']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod
from typing import Any

Handle = Callable[[list[Any], list[Any]], int]


def attention_macs(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """MACs of softmax(q @ k^T) @ v for shapes (..., L, E), (..., S, E), (..., S, Ev).

    Example:
        >>> attention_macs((1, 3, 5, 4), (1, 3, 7, 4), (1, 3, 7, 4))
        840
    """
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def matmul_macs(a: Sequence[int], b: Sequence[int]) -> int:
    """MACs of a (batched) a @ b for shapes (..., n, k), (..., k, m), as fvcore counts
    ``aten::matmul`` and ``aten::bmm``: every element of ``a`` meets ``m`` columns.

    Example:
        >>> matmul_macs((2, 3, 5, 4), (2, 3, 4, 7))  # 2*3*5*4*7
        840
    """
    return prod(a) * b[-1]


def multihead_macs(batch: int, q_len: int, kv_len: int, embed: int, inner: int) -> int:
    """MACs of multi-head attention: q, k, v projections, attention, output projection.

    ``inner`` is num_heads * head_dim (``embed`` for ``nn.MultiheadAttention``); the formula
    matches ``linear`` + ``matmul`` + ``linear`` counted one by one.

    Example:
        >>> multihead_macs(batch=2, q_len=3, kv_len=3, embed=8, inner=4)  # 2*(3*8*4*4 + 3*3*4*2)
        912
    """
    projections = (2 * q_len + 2 * kv_len) * embed * inner  # q, out (q_len); k, v (kv_len)
    return batch * (projections + 2 * q_len * kv_len * inner)


def _shape(value: Any) -> list[int] | None:
    """A jit value's complete tensor shape, or None (fvcore's get_shape)."""
    return value.type().sizes() if value.isCompleteTensor() else None


def sdpa_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::scaled_dot_product_attention(q, k, v, ...)``."""
    return attention_macs(*(_shape(v) for v in inputs[:3]))


def native_mha_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::_native_multi_head_attention(q, k, v, embed_dim, heads, qkv_w, qkv_b, out_w, ...)``
    with batch-first (B, L, E) inputs (or unbatched (L, E))."""
    q, k = _shape(inputs[0]), _shape(inputs[1])
    inner = _shape(inputs[7])[1]
    batch = prod(q[:-2])
    return multihead_macs(batch, q[-2], k[-2], q[-1], inner)


def baddbmm_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::baddbmm``/``aten::addbmm(self, b1, b2, ...)``: the batched product b1 @ b2."""
    b1, b2 = _shape(inputs[1]), _shape(inputs[2])
    return prod(b1) * b2[-1]


def output_scaled(per_output: int) -> Handle:
    """A handle counting ``per_output`` MACs per output element (interpolation weights).

    Example:
        >>> output_scaled(4).__name__
        'output_x4'
    """

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        return per_output * prod(_shape(outputs[0]))

    handle.__name__ = f"output_x{per_output}"
    return handle


def rms_norm_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::rms_norm(x, shape, weight, eps)``: 4 per element, 5 with a weight (as fvcore's
    layer_norm)."""
    return prod(_shape(inputs[0])) * (5 if _shape(inputs[2]) is not None else 4)


OpFormula = Callable[[Sequence[Sequence[int]]], int]

OP_FORMULAS: dict[str, OpFormula] = {
    "scaled_dot_product_attention": lambda shapes: attention_macs(*shapes[:3]),
    "matmul": lambda shapes: matmul_macs(*shapes[:2]),
    "__matmul__": lambda shapes: matmul_macs(*shapes[:2]),
    "bmm": lambda shapes: matmul_macs(*shapes[:2]),
}
"""Op name as the graph records it (``graphs.datamodel.OpSite.op``) -> MACs from its operand
shapes, by the formula its counter uses (``aten::matmul``/``bmm``: fvcore's; sdpa: ours)."""


EXTRA_HANDLES: dict[str, Handle] = {
    "aten::_native_multi_head_attention": native_mha_jit,
    "aten::scaled_dot_product_attention": sdpa_jit,
    "aten::baddbmm": baddbmm_jit,
    "aten::addbmm": baddbmm_jit,
    "aten::rms_norm": rms_norm_jit,
    "aten::upsample_nearest1d": output_scaled(1),
    "aten::upsample_nearest3d": output_scaled(1),
    "aten::upsample_linear1d": output_scaled(2),
    "aten::upsample_bicubic2d": output_scaled(16),
    "aten::upsample_trilinear3d": output_scaled(8),
}
"""Op name -> handle, added to fvcore's defaults by ``surgery.measure.flops.count_flops``."""

"""MAC formulas: shapes (ints) in, MACs out (one multiply-add counts 1, as in fvcore).

The maths shared by the counter's handles (``surgery.measure.handles``) and the analytic MAC
model of target_macs (``surgery.plan.target``), so both count an op by the same formula.

    >>> attention_macs((2, 4, 10, 16), (2, 4, 12, 16), (2, 4, 12, 8))  # 2*4*10*12*(16 + 8)
    23040
    >>> multihead_macs(batch=1, q_len=197, kv_len=197, embed=768, inner=768)
    524391936
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod


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


OpFormula = Callable[[Sequence[Sequence[int]]], int]

OP_FORMULAS: dict[str, OpFormula] = {
    "scaled_dot_product_attention": lambda shapes: attention_macs(*shapes[:3]),
    "matmul": lambda shapes: matmul_macs(*shapes[:2]),
    "__matmul__": lambda shapes: matmul_macs(*shapes[:2]),
    "bmm": lambda shapes: matmul_macs(*shapes[:2]),
}
"""Op name as the graph records it (``graphs.datamodel.OpSite.op``) -> MACs from its operand
shapes, by the formula its counter uses (``aten::matmul``/``bmm``: fvcore's; sdpa: ours)."""

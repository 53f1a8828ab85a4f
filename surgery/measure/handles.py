"""MAC formulas for the ops fvcore leaves out, and their thin fvcore (jit) adapters.

fvcore counts conv, linear, matmul, bmm, einsum, norms and 2-d upsampling. A fused
``nn.MultiheadAttention`` (``aten::_native_multi_head_attention``, the eval fast path) and
``F.scaled_dot_product_attention`` were left uncounted, so a pruned ViT whose attention runs
as explicit matmuls counted *more* MACs than the dense one. ``EXTRA_HANDLES`` counts them by
the same formulas as their explicit equivalents: the fused attention counts exactly what its
q/k/v projections (linear), q @ k^T and attn @ v (matmul) and output projection would.

The formulas (shapes in, MACs out) are in ``surgery.macs``; this module adapts them to jit values:

    >>> sorted(EXTRA_HANDLES)[:3]
    ['aten::_native_multi_head_attention', 'aten::addbmm', 'aten::baddbmm']
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod
from typing import Any

from graphs.kinds import KINDS
from surgery.macs import attention_macs, multihead_macs

Handle = Callable[[list[Any], list[Any]], int]


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


def kind_jit(formula: Callable[[int, list[tuple[int, ...]]], int]) -> Handle:
    """A handle for a layer kind's uncounted op (``graphs.kinds.LayerKind.mac_ops``): its
    ``macs(steps, weight shapes)`` with steps the input's positions (every dim but the
    features) and the shapes of its parameter list (``aten::lstm(input, hx, params, ...)``)."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        x = _shape(inputs[0])
        params = [_shape(v) for v in inputs[2].node().inputs()]
        return formula(prod(x[:-1]), [tuple(p) for p in params if p is not None])

    return handle


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
    **{op: kind_jit(kind.macs) for kind in KINDS for op in kind.mac_ops if kind.macs},
}
"""Op name -> handle, added to fvcore's defaults by ``surgery.measure.flops.count_flops``."""

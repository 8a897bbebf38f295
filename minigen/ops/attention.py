"""Scaled dot-product attention, fused.

.. math:: \\mathrm{Attention}(Q,K,V) = \\mathrm{softmax}\\!\\left(\\frac{QK^\\top}{\\sqrt d} + M\\right) V

The forward kernel returns the output and the row-wise log-sum-exp of the
scores; the backward kernel rebuilds the softmax from them instead of storing
the ``T x T`` attention matrix. Under ``create_graph=True`` the backward is
instead written with differentiable ops (the same formulas), so second
derivatives are exact too.
"""
from __future__ import annotations

import math

from .. import backend
from ..autograd import Function, Tensor, is_grad_enabled
from ._util import check_tensor, tensor_args


class ScaledDotProductAttention(Function):
    """O = softmax(S) V with S = QK^T * scale + M (M: -inf where masked or causal, or an additive mask).

    One fused kernel each way on ``(B, H, T, d)`` inputs. The backward rebuilds P = softmax(S) from the saved
    row-wise log-sum-exp: dV = P^T G, dS = P * (G V^T - rowsum(G * O)), dQ = dS K * scale, dK = dS^T Q * scale.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale):
        device = backend.device_of(q)
        out, lse = backend.get_kernel("attention_forward", device)(q, k, v, mask, causal, scale)
        ctx.lse = lse
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, mask, causal, scale = ctx.inputs
        mask_array = mask.data if isinstance(mask, Tensor) else mask
        if is_grad_enabled():  # create_graph=True: differentiable formulas
            dq, dk, dv = _attention_backward_differentiable(q, k, v, g, mask_array, causal, scale)
        else:
            kernel = backend.get_kernel("attention_backward", q.device)
            dq, dk, dv = kernel(q.data, k.data, v.data, ctx.output.data, ctx.lse, g.data,
                                mask_array, causal, scale)
            dq, dk, dv = Tensor._wrap(dq), Tensor._wrap(dk), Tensor._wrap(dv)
        from ._util import sum_to_shape

        return (sum_to_shape(dq, q.shape) if q.requires_grad else None,
                sum_to_shape(dk, k.shape) if k.requires_grad else None,
                sum_to_shape(dv, v.shape) if v.requires_grad else None,
                None, None, None)


def _masked_scores(q, k, mask, causal, scale):
    """S = QK^T * scale with masked entries at -inf (differentiable in q and k)."""
    from .elementwise import where

    s = (q @ k.transpose(-1, -2)) * scale
    xp = q.xp
    if causal:
        tq, tk = q.shape[-2], k.shape[-2]
        s = where(xp.tril(xp.ones((tq, tk), dtype=bool)), s, -math.inf)
    if mask is not None:
        s = where(mask, s, -math.inf) if mask.dtype == bool else s + Tensor._wrap(mask)
    return s


def _attention_backward_differentiable(q, k, v, g, mask, causal, scale):
    """The reference backward (see ``kernels/reference.py``) written with minigen ops."""
    from .activations import softmax
    from .elementwise import where

    s = _masked_scores(q, k, mask, causal, scale)
    p = softmax(s, dim=-1)
    p = where(p.xp.isnan(p.data), 0.0, p)  # fully masked rows
    out = p @ v
    dv = p.transpose(-1, -2) @ g
    dp = g @ v.transpose(-1, -2)
    ds = p * (dp - (g * out).sum(dim=-1, keepdim=True))
    return (ds @ k) * scale, (ds.transpose(-1, -2) @ q) * scale, dv


@tensor_args("query", "key", "value")
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    """PyTorch's ``F.scaled_dot_product_attention`` for ``(..., T, d)`` tensors.

    ``attn_mask`` is boolean (True = may attend) or additive, broadcastable to
    ``(..., T_q, T_k)``. Leading dims are folded into ``(B, H)`` for the kernel.
    """
    name = "scaled_dot_product_attention"
    for arg, t in (("query", query), ("key", key), ("value", value)):
        check_tensor(name, arg, t, ndim=(3, 4), floating=True)
    if not (query.ndim == key.ndim == value.ndim):
        raise ValueError(f"{name}: query, key and value must have the same number of dims, got "
                         f"{query.shape}, {key.shape}, {value.shape}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"{name}: query dim {query.shape[-1]} != key dim {key.shape[-1]} "
                         f"(shapes {query.shape}, {key.shape})")
    if key.shape[-2] != value.shape[-2] or key.shape[:-2] != value.shape[:-2]:
        raise ValueError(f"{name}: key {key.shape} and value {value.shape} must agree in all "
                         "dims but the last")
    if query.shape[:-2] != key.shape[:-2]:
        raise ValueError(f"{name}: batch dims of query {query.shape[:-2]} and key "
                         f"{key.shape[:-2]} differ")
    if dropout_p:
        raise NotImplementedError(f"{name}: attention dropout is not supported; use dropout_p=0")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    mask = None
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
        mask = query.xp.asarray(mask)
        if mask.dtype != bool:
            mask = mask.astype(query.dtype)
        try:
            mask = query.xp.broadcast_to(mask, query.shape[:-1] + (key.shape[-2],))
        except ValueError:
            raise ValueError(f"{name}: attn_mask of shape {tuple(mask.shape)} does not broadcast "
                             f"to {query.shape[:-1] + (key.shape[-2],)}") from None
    squeeze = query.ndim == 3
    if squeeze:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        mask = None if mask is None else mask[:, None]
    out = ScaledDotProductAttention.apply(query, key, value, mask, bool(is_causal), scale)
    return out.squeeze(1) if squeeze else out

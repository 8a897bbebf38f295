"""Multi-head attention (PyTorch's ``nn.MultiheadAttention``).

.. math::
    \\mathrm{head}_j = \\mathrm{softmax}\\!\\left(\\frac{(QW^Q_j)(KW^K_j)^\\top}{\\sqrt{d}} + M\\right) VW^V_j,
    \\qquad \\mathrm{MHA}(Q,K,V) = [\\mathrm{head}_1, \\dots, \\mathrm{head}_h]\\,W^O

with :math:`d = E/h`. The three input projections are packed like PyTorch's into
``in_proj_weight (3E, E)`` (rows: query, key, value) and ``in_proj_bias (3E,)``;
with ``kdim``/``vdim`` different from ``E`` they are separate
``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``. ``out_proj`` is a Linear.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..autograd import Tensor
from . import init
from .linear import Linear, _check_input
from ..ops._util import check_int
from .module import Module, _new_parameter


def _additive(mask, dtype, xp, name, arg):
    """A PyTorch MHA mask as an additive float array: boolean True means *masked out*
    (-inf), floats are added to the scores as they are."""
    m = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
    if m.dtype == bool:
        return xp.where(m, -np.inf, 0.0).astype(dtype)
    if m.dtype.kind != "f":
        raise TypeError(f"MultiheadAttention: {arg} must be bool or float, got {m.dtype}")
    return m.astype(dtype, copy=False)


class MultiheadAttention(Module):
    """Attention with ``num_heads`` heads of size ``embed_dim // num_heads``.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` takes
    ``(L, N, E)`` tensors (``(N, L, E)`` with ``batch_first``, or unbatched
    ``(L, E)``) and returns ``(output, weights)``; ``weights`` is ``(N, L, S)``
    averaged over heads (``(N, h, L, S)`` without averaging) or ``None`` when
    ``need_weights=False``, which takes the fused ``F.scaled_dot_product_attention``
    path. Masks follow PyTorch: boolean ``True`` = *not allowed*, floats are added;
    ``key_padding_mask`` is ``(N, S)``, ``attn_mask`` is ``(L, S)`` or ``(N*h, L, S)``.
    ``is_causal=True`` without ``attn_mask`` builds the causal mask (PyTorch requires
    the mask itself and treats the flag as a hint).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim=None, vdim=None, batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        embed_dim = check_int("MultiheadAttention", "embed_dim", embed_dim, minimum=1)
        num_heads = check_int("MultiheadAttention", "num_heads", num_heads, minimum=1)
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive "
                             f"multiple of num_heads ({num_heads})")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else int(kdim)
        self.vdim = embed_dim if vdim is None else int(vdim)
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.batch_first = float(dropout), batch_first
        kw = dict(device=device, dtype=dtype)
        if self._qkv_same_embed_dim:
            self.in_proj_weight = _new_parameter(3 * embed_dim, embed_dim, **kw)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = _new_parameter(embed_dim, embed_dim, **kw)
            self.k_proj_weight = _new_parameter(embed_dim, self.kdim, **kw)
            self.v_proj_weight = _new_parameter(embed_dim, self.vdim, **kw)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = _new_parameter(3 * embed_dim, **kw)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, **kw)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """PyTorch's: Xavier-uniform input projections, zero biases (out_proj's weight
        keeps Linear's initialisation)."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def _projections(self):
        """(W_q, W_k, W_v) and (b_q, b_k, b_v), slicing the packed tensors if needed."""
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            weights = (w[:E], w[E:2 * E], w[2 * E:])
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        b = self.in_proj_bias
        biases = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        return weights, biases

    def _check_inputs(self, query, key, value):
        name = "MultiheadAttention"
        for arg, t in (("query", query), ("key", key), ("value", value)):
            _check_input(name, t, ndim=(query.ndim,) if arg != "query" else (2, 3))
        for arg, t, dim in (("query", query, self.embed_dim), ("key", key, self.kdim),
                            ("value", value, self.vdim)):
            if t.shape[-1] != dim:
                raise ValueError(f"{name}: {arg} has {t.shape[-1]} features but expected {dim} "
                                 f"({arg} shape {t.shape})")
        batch_axis = 1 if not self.batch_first else 0
        if query.ndim == 3 and not (query.shape[batch_axis] == key.shape[batch_axis]
                                    == value.shape[batch_axis]):
            raise ValueError(f"{name}: query {query.shape}, key {key.shape} and value "
                             f"{value.shape} must have the same batch size")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"{name}: key {key.shape} and value {value.shape} must agree "
                             "in all dims but the last")

    def _mask(self, n, lq, s, key_padding_mask, attn_mask, is_causal, dtype, xp):
        """All masks merged into one additive ``(N, h or 1, L, S)`` array, or None."""
        name = "MultiheadAttention"
        total = None
        if attn_mask is not None:
            m = _additive(attn_mask, dtype, xp, name, "attn_mask")
            if m.shape == (lq, s):
                m = m[None, None]
            elif m.shape == (n * self.num_heads, lq, s):
                m = m.reshape(n, self.num_heads, lq, s)
            else:
                raise ValueError(f"{name}: attn_mask must have shape {(lq, s)} or "
                                 f"{(n * self.num_heads, lq, s)}, got {tuple(m.shape)}")
            total = m
        elif is_causal:
            total = xp.where(xp.tril(xp.ones((lq, s), dtype=bool)), 0.0, -np.inf)
            total = total.astype(dtype)[None, None]
        if key_padding_mask is not None:
            m = _additive(key_padding_mask, dtype, xp, name, "key_padding_mask")
            if m.shape != (n, s):
                raise ValueError(f"{name}: key_padding_mask must have shape {(n, s)}, got "
                                 f"{tuple(m.shape)}")
            m = m[:, None, None, :]
            total = m if total is None else total + m
        return total

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        self._check_inputs(query, key, value)
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = (key_padding_mask.unsqueeze(0)
                                    if isinstance(key_padding_mask, Tensor)
                                    else np.asarray(key_padding_mask)[None])
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        # now (N, L, E) / (N, S, kdim) / (N, S, vdim)
        n, lq, _ = query.shape
        s = key.shape[1]
        h, d = self.num_heads, self.head_dim
        (w_q, w_k, w_v), (b_q, b_k, b_v) = self._projections()

        def heads(x, w, b):  # (N, T, *) -> (N, h, T, d)
            return ops.linear(x, w, b).reshape(n, x.shape[1], h, d).transpose(1, 2)

        q, k, v = heads(query, w_q, b_q), heads(key, w_k, b_k), heads(value, w_v, b_v)
        mask = self._mask(n, lq, s, key_padding_mask, attn_mask, is_causal, query.dtype,
                          query.xp)
        dropout = self.dropout if self.training else 0.0
        if need_weights or dropout:
            scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
            if mask is not None:
                scores = scores + Tensor._wrap(mask)
            weights = ops.softmax(scores, dim=-1)
            out = ops.dropout(weights, dropout, True) @ v if dropout else weights @ v
        else:
            weights = None
            out = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.out_proj(out.transpose(1, 2).reshape(n, lq, self.embed_dim))

        if need_weights:
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if unbatched:
                weights = weights.squeeze(0)
        else:
            weights = None
        if unbatched:
            return out.squeeze(0), weights
        return (out if self.batch_first else out.transpose(0, 1)), weights

"""Dropout and embedding lookup."""
from __future__ import annotations

from ..autograd import Tensor
from ..random import generator
from .elementwise import where
from ._util import tensor_args


@tensor_args("input")
def dropout(input, p=0.5, training=True):  # noqa: A002
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted
    dropout), so the expectation is unchanged; identity when not training."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    keep = generator(input.device).random(input.shape) >= p
    return input * (keep.astype(input.dtype) / (1.0 - p))


@tensor_args("input", "weight")
def embedding(input, weight, padding_idx=None):  # noqa: A002
    """Rows of ``weight`` picked by integer ``input``; the row ``padding_idx``
    receives no gradient."""
    idx = input.data if isinstance(input, Tensor) else input
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: input must hold integer indices, got dtype {idx.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-d (num_embeddings, dim), got {weight.shape}")
    n = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"embedding: indices must lie in [0, {n}), got range "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    out = weight[idx]
    if padding_idx is not None:
        keep = (idx != padding_idx)[..., None]
        out = where(keep, out, out.detach())
    return out


@tensor_args("tensor")
def one_hot(tensor, num_classes=-1):
    """Integer classes -> int64 one-hot vectors along a new last dim."""
    idx = tensor.data
    xp = tensor.xp
    if num_classes < 0:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    return Tensor._wrap((idx[..., None] == xp.arange(num_classes)).astype("int64"))

"""Matrix products: matmul (batched, broadcasting), linear, einsum.

For :math:`C = AB`: :math:`\\bar A = \\bar C B^\\top` and :math:`\\bar B = A^\\top \\bar C`,
summed over any batch dims that broadcasting added.
"""
from __future__ import annotations

from ..autograd import Function, Tensor
from ._util import check_tensor, sum_to_shape, tensor_args


class MatMul(Function):
    """Batched matrix product of tensors with at least 2 dims."""

    @staticmethod
    def forward(ctx, a, b):
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        ga = sum_to_shape(g @ b.transpose(-1, -2), a.shape) if a.requires_grad else None
        gb = sum_to_shape(a.transpose(-1, -2) @ g, b.shape) if b.requires_grad else None
        return ga, gb


@tensor_args("a", "b")
def matmul(a, b):
    """``a @ b`` with PyTorch's rules: 1-d operands are promoted to matrices
    (and the added dim removed), leading dims broadcast."""
    a = a if isinstance(a, Tensor) else Tensor(a)
    b = b if isinstance(b, Tensor) else Tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both arguments need at least 1 dim, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
            f"({a.shape[-1]} columns vs {b.shape[-2 if b.ndim > 1 else 0]} rows)")
    if a.device != b.device:
        raise ValueError(f"matmul: operands are on different devices ({a.device}, {b.device})")
    squeeze = []
    if a.ndim == 1:
        a = a.reshape(1, -1)
        squeeze.append(-2)
    if b.ndim == 1:
        b = b.reshape(-1, 1)
        squeeze.append(-1)
    out = MatMul.apply(a, b)
    return out.squeeze(tuple(squeeze)) if squeeze else out


class Linear(Function):
    r""":math:`y = xW^\top + b` for a 2-d ``x`` in one op (the commonest layer, so
    it gets a node of its own): :math:`\bar x = \bar y W`,
    :math:`\bar W = \bar y^\top x`, :math:`\bar b = \sum_n \bar y_n`."""

    @staticmethod
    def forward(ctx, x, w, b):
        y = x @ w.T
        if b is not None:
            y += b
        return y

    @staticmethod
    def backward(ctx, g):
        x, w, b = ctx.inputs
        gx = g @ w if x.requires_grad else None
        gw = g.transpose(0, 1) @ x if w.requires_grad else None
        gb = g.sum(dim=0) if b is not None and b.requires_grad else None
        return gx, gw, gb


@tensor_args("input", "weight", "bias")
def linear(input, weight, bias=None):  # noqa: A002 - PyTorch's name
    """:math:`y = x W^\top + b` with ``weight`` of shape ``(out_features, in_features)``.

    Leading dims of ``input`` are folded into one batch dim so that the product
    is a single GEMM.
    """
    check_tensor("linear", "weight", weight, ndim=2)
    if input.shape[-1:] != weight.shape[1:]:
        raise ValueError(
            f"linear: input has {input.shape[-1] if input.ndim else 0} features but weight "
            f"expects {weight.shape[1]} (input shape {input.shape}, weight shape {weight.shape})")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    if input.ndim == 2:
        return Linear.apply(input, weight, bias)
    y = Linear.apply(input.reshape(-1, weight.shape[1]), weight, bias)
    return y.reshape(*input.shape[:-1], weight.shape[0])


@tensor_args("a", "b")
def bmm(a, b):
    """Batched matrix product of 3-d tensors, ``(B, n, m) @ (B, m, p) -> (B, n, p)`` (``torch.bmm``)."""
    check_tensor("bmm", "input", a, ndim=3)
    check_tensor("bmm", "mat2", b, ndim=3)
    return matmul(a, b)


@tensor_args("a", "b")
def outer(a, b):
    """Outer product ``out[i, j] = a[i] * b[j]`` (``torch.outer``; the inputs are flattened first)."""
    return a.reshape(-1, 1) * b.reshape(1, -1)


# --------------------------------------------------------------------------- einsum
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _parse_einsum(equation, shapes):
    """Split an einsum equation into explicit subscripts (ellipses expanded)."""
    equation = equation.replace(" ", "")
    if "->" in equation:
        lhs, rhs = equation.split("->")
    else:
        lhs, rhs = equation, None
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: equation {equation!r} has {len(terms)} operands, got {len(shapes)}")
    used = set(c for c in equation if c.isalpha())
    spare = [c for c in _LETTERS if c not in used]
    n_ellipsis = max((len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes)
                      if "..." in t), default=0)
    ell = "".join(spare[:n_ellipsis])
    expanded = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            k = len(s) - len(t.replace("...", ""))
            t = t.replace("...", ell[n_ellipsis - k:] if k else "")
        if len(t) != len(s):
            raise ValueError(f"einsum: subscripts {t!r} do not match an operand of shape {s}")
        if len(set(t)) != len(t):
            raise NotImplementedError(f"einsum: repeated subscripts within one operand ({t!r}) "
                                      "are not supported")
        expanded.append(t)
    if rhs is None:
        counts = {}
        for t in expanded:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        rhs = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        rhs = rhs.replace("...", ell)
    return expanded, rhs


class Einsum(Function):
    """Gradient of one operand: the einsum of the output gradient with the other
    operands, producing that operand's subscripts (broadcast over any subscript
    that only it carries)."""

    @staticmethod
    def forward(ctx, *arrays, terms, out):
        ctx.terms, ctx.out = terms, out
        xp = Tensor._wrap(arrays[0]).xp
        return xp.einsum(",".join(terms) + "->" + out, *arrays, optimize=len(arrays) > 2)

    @staticmethod
    def backward(ctx, g):
        grads = []
        for i, x in enumerate(ctx.inputs):
            if not (isinstance(x, Tensor) and x.requires_grad):
                grads.append(None)
                continue
            others = [t for j, t in enumerate(ctx.terms) if j != i]
            available = set(ctx.out).union(*others)
            target = "".join(c for c in ctx.terms[i] if c in available)
            operands = [g] + [t for j, t in enumerate(ctx.inputs) if j != i]
            gi = Einsum.apply(*operands, terms=[ctx.out] + others, out=target)
            if target != ctx.terms[i]:  # subscripts summed away in this operand alone
                shape = [x.shape[k] if c in available else 1 for k, c in enumerate(ctx.terms[i])]
                gi = gi.reshape(*shape).expand(*x.shape)
            grads.append(gi)
        return tuple(grads)


def einsum(equation, *operands):
    """Einstein summation, e.g. ``einsum('bhqd,bhkd->bhqk', q, k)``."""
    if not isinstance(equation, str):
        raise TypeError(f"einsum: equation must be a string like 'ij,jk->ik', got {equation!r}")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    operands = [o if isinstance(o, Tensor) else Tensor(o) for o in operands]
    terms, out = _parse_einsum(equation, [o.shape for o in operands])
    sizes = {}
    for t, o in zip(terms, operands):
        for c, n in zip(t, o.shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(
                    f"einsum: subscript {c!r} has size {sizes[c]} in one operand and {n} in another "
                    f"(shapes {[o.shape for o in operands]})")
    return Einsum.apply(*operands, terms=terms, out=out)

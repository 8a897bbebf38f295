"""Shape and indexing ops: reshape view transpose permute flatten squeeze unsqueeze
expand, indexing, gather, cat stack split chunk, pad, flip, repeat.

They move values without changing them, so each backward moves the gradient
back: reshape it back, permute it back, or add it into the positions it was
read from (:class:`IndexAdd`, the adjoint of indexing).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from ._util import check_int, check_tensor, normalize_dim, sum_to_shape, tensor_args


# --------------------------------------------------------------------------- views
class Reshape(Function):
    """Same values in a new shape; the gradient is reshaped back to the input's shape."""

    @staticmethod
    def forward(ctx, a, shape):
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.inputs[0].shape), None


class Permute(Function):
    """Axis reordering; the gradient is permuted back with the inverse permutation."""

    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return g.permute(*np.argsort(ctx.axes).tolist()), None


class Expand(Function):
    """Broadcasting copy; its gradient sums the copies (:func:`sum_to_shape`)."""

    @staticmethod
    def forward(ctx, a, shape):
        return backend.array_module(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return sum_to_shape(g, ctx.inputs[0].shape), None


def _resolve_shape(name, numel, shape):
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    unknown = [i for i, s in enumerate(shape) if s == -1]
    if len(unknown) > 1:
        raise ValueError(f"{name}: only one dimension can be -1, got shape {shape}")
    known = math.prod(s for s in shape if s != -1)
    if unknown:
        if known == 0 or numel % known:
            raise ValueError(f"{name}: shape {shape} is invalid for input of size {numel}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    if math.prod(shape) != numel:
        raise ValueError(f"{name}: shape {shape} is invalid for input of size {numel}")
    return shape


@tensor_args("x")
def reshape(x, *shape):
    """The same values in a new shape, given as ints or one tuple; one size may be -1 (inferred).

    Returns ``x`` itself when the shape does not change; raises ``ValueError`` when the sizes do not fit.
    """
    shape = _resolve_shape("reshape", x.numel(), shape)
    if shape == x.shape:
        return x
    return Reshape.apply(x, shape)


@tensor_args("x")
def view(x, *shape):
    """Same as :func:`reshape` (PyTorch's ``view``, without its contiguity requirement)."""
    return reshape(x, *shape)


@tensor_args("x")
def permute(x, *dims):
    """Reorder the dims, given as ints or one sequence (``torch.permute``); raises ``ValueError`` unless they are
    a permutation of all dims."""
    if len(dims) == 1 and not isinstance(dims[0], numbers.Integral):
        dims = tuple(dims[0])
    axes = tuple(normalize_dim("permute", d, x.ndim) for d in dims)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute: dims {dims} are not a permutation of {x.ndim} dimensions")
    return Permute.apply(x, axes)


@tensor_args("x")
def transpose(x, dim0, dim1):
    """Swap dims ``dim0`` and ``dim1`` (``torch.transpose``)."""
    axes = list(range(x.ndim))
    d0, d1 = normalize_dim("transpose", dim0, x.ndim), normalize_dim("transpose", dim1, x.ndim)
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return Permute.apply(x, tuple(axes))


@tensor_args("x")
def swapaxes(x, axis0, axis1):
    """Swap two dims (NumPy's name for :func:`transpose`)."""
    return transpose(x, axis0, axis1)


@tensor_args("x")
def movedim(x, source, destination):
    """Move dim ``source`` to position ``destination``, keeping the other dims in order (``torch.movedim``)."""
    axes = list(range(x.ndim))
    s = normalize_dim("movedim", source, x.ndim)
    d = normalize_dim("movedim", destination, x.ndim)
    axes.remove(s)
    axes.insert(d, s)
    return Permute.apply(x, tuple(axes))


@tensor_args("x")
def flatten(x, start_dim=0, end_dim=-1):
    """Merge dims ``start_dim`` to ``end_dim`` into one (``torch.flatten``); a 0-d tensor becomes 1-d."""
    if x.ndim == 0:
        return x.reshape(1)
    s = normalize_dim("flatten", start_dim, x.ndim)
    e = normalize_dim("flatten", end_dim, x.ndim)
    return x.reshape(*x.shape[:s], -1, *x.shape[e + 1:]) if s <= e else x


@tensor_args("x")
def unflatten(x, dim, sizes):
    """Split dim ``dim`` into dims of the given ``sizes`` (``torch.unflatten``)."""
    d = normalize_dim("unflatten", dim, x.ndim)
    return x.reshape(*x.shape[:d], *sizes, *x.shape[d + 1:])


@tensor_args("x")
def squeeze(x, dim=None):
    """Remove size-1 dims: all of them, or those among ``dim`` (an int or a tuple); listed dims of other sizes
    are kept, as in PyTorch."""
    if dim is None:
        return x.reshape(*[n for n in x.shape if n != 1])
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    dims = {normalize_dim("squeeze", d, x.ndim) for d in dims}
    return x.reshape(*[n for i, n in enumerate(x.shape) if not (i in dims and n == 1)])


@tensor_args("x")
def unsqueeze(x, dim):
    """Insert a size-1 dim at position ``dim`` (from ``-ndim-1`` to ``ndim``)."""
    d = normalize_dim("unsqueeze", dim, x.ndim, extra=1)
    return x.reshape(*x.shape[:d], 1, *x.shape[d:])


@tensor_args("x")
def expand(x, *shape):
    """Broadcast size-1 dims (and new leading dims) to ``shape``; -1 keeps a dim's size (``Tensor.expand``).

    The gradient sums the copies. Raises ``ValueError`` when a dim is neither 1 nor the target size.
    """
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        shape = tuple(shape[0])
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: cannot expand shape {x.shape} to fewer dims {shape}")
    for i, s in enumerate(shape):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < (-1 if i >= lead else 0):
            raise ValueError(f"expand: sizes must be non-negative ints (or -1 for an existing dim), got {shape}")
    target = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
    for i, n in enumerate(x.shape):
        if n != 1 and n != target[lead + i]:
            raise ValueError(
                f"expand: the size of dim {i} ({n}) must match the target {target[lead + i]} "
                f"or be 1 (expanding shape {x.shape} to {target})")
    if target == x.shape:
        return x
    return Expand.apply(x, target)


@tensor_args("x")
def broadcast_to(x, shape):
    """Broadcast ``x`` to ``shape`` (:func:`expand` with the shape as one tuple)."""
    return expand(x, *shape)


@tensor_args("x", "other")
def expand_as(x, other):
    """``x`` expanded to ``other``'s shape."""
    return expand(x, *other.shape)


@tensor_args("x", "other")
def view_as(x, other):
    """``x`` reshaped to ``other``'s shape."""
    return reshape(x, *other.shape)


@tensor_args("x", "other")
def reshape_as(x, other):
    """``x`` reshaped to ``other``'s shape."""
    return reshape(x, *other.shape)


# --------------------------------------------------------------------------- indexing
def _raw_index(index):
    """Replace Tensors and lists inside an index by arrays, and boolean masks by
    the integer arrays of their True positions (so the backward can use add.at)."""
    items = index if isinstance(index, tuple) else (index,)
    raw = []
    for item in items:
        if isinstance(item, Tensor):
            if item.dtype.kind not in "iub":
                raise IndexError(f"tensors used as indices must be integer or bool, got {item.dtype}")
            item = item.data
        elif isinstance(item, list):
            item = np.asarray(item)
        if getattr(item, "dtype", None) is not None and item.dtype == np.bool_ and item.ndim > 0:
            raw.extend(item.nonzero())
        else:
            raw.append(item)
    return tuple(raw) if isinstance(index, tuple) or len(raw) != 1 else raw[0]


def _is_basic(index) -> bool:
    """True for ints/slices/None/Ellipsis only: each element is read at most once."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (slice, numbers.Integral))
               for i in items)


class GetItem(Function):
    """``x[index]``. Backward: :class:`IndexAdd` scatters the gradient back."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.index = index
        return a[index]

    @staticmethod
    def backward(ctx, g):
        return IndexAdd.apply(g, ctx.index, ctx.inputs[0].shape), None


class IndexAdd(Function):
    """zeros(shape) with ``g`` added at ``index`` — the adjoint of indexing.

    Integer-array indices may repeat a position; ``np.add.at`` adds every
    contribution. Its own gradient is indexing again, so double backward works.
    """

    @staticmethod
    def forward(ctx, g, index, shape):
        xp = backend.array_module(g)
        out = xp.zeros(shape, dtype=g.dtype)
        if _is_basic(index):
            out[index] = g
        elif xp is np:
            np.add.at(out, index, g)
        else:
            import cupyx

            cupyx.scatter_add(out, index, g)
        return out

    @staticmethod
    def backward(ctx, gg):
        return gg[ctx.inputs[1]], None, None


@tensor_args("x")
def getitem(x, index):
    """``x[index]`` with NumPy's indexing: ints, slices, ``None``, ``...``, and integer or boolean tensors, arrays
    or lists.

    The gradient is scattered back (adding where an index repeats). Raises ``IndexError``, naming the shape,
    for an invalid index.
    """
    index = _raw_index(index)
    try:
        return GetItem.apply(x, index)
    except IndexError as err:
        raise IndexError(f"index {index!r} is invalid for a tensor of shape {x.shape}: {err}") from None


def index_add_to(g, index, shape):
    """Public face of :class:`IndexAdd` (``zeros(shape).index_put(index, g, accumulate=True)``)."""
    return IndexAdd.apply(g, _raw_index(index), tuple(shape))


def _along_axis_index(index, dim):
    """Turn a ``gather`` index array into a full advanced index for ``np.add.at``."""
    xp = backend.array_module(index)
    ndim = index.ndim                     # open grids, as np.indices(sparse=True) (which CuPy lacks)
    grids = [xp.arange(n).reshape([-1 if axis == d else 1 for axis in range(ndim)]) for d, n in enumerate(index.shape)]
    grids[dim] = index
    return tuple(grids)


@tensor_args("x")
def gather(x, dim, index):
    """``out[i][j] = x[i][index[i][j]]`` along ``dim`` (PyTorch's gather).

    Implemented as advanced indexing, so its backward is :class:`IndexAdd`.
    """
    d = normalize_dim("gather", dim, x.ndim)
    idx = index.data if isinstance(index, Tensor) else index
    if not hasattr(idx, "ndim"):
        raise TypeError(f"gather: index must be an integer Tensor, got {type(index).__name__}")
    if idx.ndim != x.ndim:
        raise ValueError(
            f"gather: index must have as many dims as input ({x.ndim}), got shape {tuple(idx.shape)}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"gather: index must be an integer tensor, got dtype {idx.dtype}")
    return GetItem.apply(x, _along_axis_index(idx, d))


@tensor_args("x")
def take_along_dim(x, indices, dim):
    """Values of ``x`` at ``indices`` along ``dim`` (``torch.take_along_dim``): :func:`gather` reordered."""
    return gather(x, dim, indices)


@tensor_args("x")
def masked_fill(x, mask, value):
    """``value`` where ``mask`` is True, ``x`` elsewhere (``mask`` broadcasts), as ``Tensor.masked_fill``."""
    from .elementwise import where

    return where(mask, value, x)


# --------------------------------------------------------------------------- joining
class Cat(Function):
    """Concatenation; the gradient is cut back into the input pieces."""

    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim = dim
        return backend.array_module(arrays[0]).concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        grads, start = [], 0
        for x in ctx.inputs:
            n = x.shape[ctx.dim]
            index = (slice(None),) * ctx.dim + (slice(start, start + n),)
            grads.append(g[index] if isinstance(x, Tensor) and x.requires_grad else None)
            start += n
        return tuple(grads)


def cat(tensors, dim=0):
    """Concatenate tensors along the existing dim ``dim`` (``torch.cat``).

    Raises ``ValueError`` for an empty list, mismatched shapes outside ``dim`` or mixed devices.
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    for i, t in enumerate(tensors):
        check_tensor("cat", f"tensors[{i}]", t)
    ref = tensors[0]
    d = normalize_dim("cat", dim, ref.ndim)
    for i, t in enumerate(tensors):
        if t.ndim != ref.ndim or any(a != b for k, (a, b) in enumerate(zip(t.shape, ref.shape))
                                     if k != d):
            raise ValueError(
                f"cat: tensors[{i}] has shape {t.shape} but tensors[0] has shape {ref.shape}; "
                f"all dims except dim {d} must match")
        if t.device != ref.device:
            raise ValueError(f"cat: tensors[{i}] is on {t.device} but tensors[0] is on {ref.device}")
    return Cat.apply(*tensors, dim=d)


concatenate = cat


def stack(tensors, dim=0):
    """Join tensors of one shape along a new dim ``dim`` (``torch.stack``)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    for i, t in enumerate(tensors):
        check_tensor("stack", f"tensors[{i}]", t)
        if t.shape != tensors[0].shape:
            raise ValueError(
                f"stack: tensors[{i}] has shape {t.shape} but tensors[0] has shape {tensors[0].shape}")
    d = normalize_dim("stack", dim, tensors[0].ndim, extra=1)
    return cat([unsqueeze(t, d) for t in tensors], dim=d)


@tensor_args("x")
def split(x, split_size_or_sections, dim=0):
    """Split into pieces of ``split_size`` (last may be smaller) or of the given sizes."""
    d = normalize_dim("split", dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, numbers.Integral):
        size = int(split_size_or_sections)
        if size <= 0:
            raise ValueError(f"split: split_size must be positive, got {size}")
        sizes = [min(size, n - s) for s in range(0, n, size)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not add up to dim {d} of size {n}")
    pieces, start = [], 0
    for s in sizes:
        pieces.append(x[(slice(None),) * d + (slice(start, start + s),)])
        start += s
    return tuple(pieces)


@tensor_args("x")
def chunk(x, chunks, dim=0):
    """Split into ``chunks`` pieces of equal size along ``dim`` (``torch.chunk``): the last may be smaller,
    and there may be fewer than ``chunks``."""
    d = normalize_dim("chunk", dim, x.ndim)
    chunks = check_int("chunk", "chunks", chunks, minimum=1)
    return split(x, max(1, math.ceil(x.shape[d] / chunks)), d)


@tensor_args("x")
def unbind(x, dim=0):
    """The slices along ``dim``, each without that dim, as a tuple of tensors (``torch.unbind``)."""
    d = normalize_dim("unbind", dim, x.ndim)
    return tuple(x[(slice(None),) * d + (i,)] for i in range(x.shape[d]))


@tensor_args("x")
def flip(x, dims):
    """Reverse the order of elements along the given dim or dims (``torch.flip``)."""
    dims = (dims,) if isinstance(dims, numbers.Integral) else tuple(dims)
    dims = {normalize_dim("flip", d, x.ndim) for d in dims}
    return x[tuple(slice(None, None, -1) if i in dims else slice(None) for i in range(x.ndim))]


@tensor_args("x")
def repeat(x, *sizes):
    """Tile ``x`` ``sizes[i]`` times along each dim (PyTorch's ``repeat``)."""
    if len(sizes) == 1 and not isinstance(sizes[0], numbers.Integral):
        sizes = tuple(sizes[0])
    if len(sizes) < x.ndim:
        raise ValueError(f"repeat: need at least {x.ndim} sizes, got {sizes}")
    x = x.reshape(*(1,) * (len(sizes) - x.ndim), *x.shape)
    # interleave a size-r axis before each dim, expand it, then merge
    inter = []
    for n in x.shape:
        inter += [1, n]
    expanded = x.reshape(*inter).expand(*[v for r, n in zip(sizes, x.shape) for v in (r, n)])
    return expanded.reshape(*[r * n for r, n in zip(sizes, x.shape)])


@tensor_args("x")
def repeat_interleave(x, repeats, dim=0):
    """Repeat each element ``repeats`` (an int) times in a row along ``dim`` (``torch.repeat_interleave``)."""
    d = normalize_dim("repeat_interleave", dim, x.ndim)
    shape = x.shape
    y = x.unsqueeze(d + 1).expand(*shape[:d + 1], repeats, *shape[d + 1:])
    return y.reshape(*shape[:d], shape[d] * repeats, *shape[d + 1:])


# --------------------------------------------------------------------------- padding
class ConstantPad(Function):
    """Pad with a constant; the gradient is the un-padded window of ``g``."""

    @staticmethod
    def forward(ctx, a, widths, value):
        ctx.window = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
        return backend.array_module(a).pad(a, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.window], None, None


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@tensor_args("x")
def pad(x, pad, mode="constant", value=0.0):  # noqa: A002 - PyTorch's name
    """Pad the last ``len(pad)//2`` dims; ``pad = (left, right, top, bottom, ...)``
    starts from the last dim, as in ``torch.nn.functional.pad``.

    ``reflect``, ``replicate`` and ``circular`` padding are integer-array indexing
    (each output reads one input position), so they need no backward of their own.
    """
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: pad must have an even length of at most 2*{x.ndim}, got {pad}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding is not supported, got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":
        return ConstantPad.apply(x, tuple(widths), value)
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be 'constant', 'reflect', 'replicate' or 'circular', "
                         f"got {mode!r}")
    index = []
    for axis, (lo, hi) in enumerate(widths):
        n = x.shape[axis]
        if mode == "reflect" and (lo >= n or hi >= n) and (lo or hi):
            raise ValueError(f"pad: reflect padding ({lo}, {hi}) must be smaller than the "
                             f"dimension size {n}")
        positions = np.pad(np.arange(n), (lo, hi), mode=_PAD_MODES[mode])
        shape = [1] * x.ndim
        shape[axis] = positions.size
        index.append(x.xp.asarray(positions.reshape(shape)))
    return GetItem.apply(x, tuple(index))

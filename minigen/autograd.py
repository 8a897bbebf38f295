"""Reverse-mode automatic differentiation: ``Tensor``, ``Function`` and the graph walk.

The whole engine in one page:

* A :class:`Tensor` wraps one array (NumPy on ``"cpu"``, CuPy on ``"cuda"``).
* An op is a :class:`Function` subclass. ``forward(ctx, *arrays)`` computes the
  result on raw arrays; ``backward(ctx, grad)`` returns one gradient per input.
* Backward formulas are written with minigen's own differentiable ops on
  Tensors. Normally they run under :func:`no_grad` (cheap); with
  ``create_graph=True`` they are recorded like any forward computation, which is
  all that higher-order gradients (gradient penalties, Hessian-vector products)
  need.
* ``backward()`` sorts the graph once (iteratively, so a 10,000-op chain is
  fine), then visits each node once in reverse topological order, summing the
  gradients that reach it — the multivariate chain rule
  :math:`\\bar v_i = \\sum_{j \\in \\text{children}(i)} \\bar v_j\\,\\partial v_j/\\partial v_i`.
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import numpy as np

from . import backend

# --------------------------------------------------------------------------- grad mode
_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether new operations are recorded for differentiation."""
    return getattr(_state, "grad_enabled", True)


def set_grad_enabled(mode: bool) -> None:
    """Turn recording of new operations on or off for this thread (see also :class:`no_grad`)."""
    _state.grad_enabled = bool(mode)


class _GradMode(contextlib.ContextDecorator):
    """Set grad mode inside a ``with`` block or a decorated function, then restore it."""

    mode = True

    def __enter__(self):
        self._previous = is_grad_enabled()
        set_grad_enabled(self.mode)

    def __exit__(self, *exc):
        set_grad_enabled(self._previous)
        return False


class no_grad(_GradMode):
    """Context manager / decorator: compute without recording a graph."""

    mode = False


class enable_grad(_GradMode):
    """Context manager / decorator: record a graph even inside ``no_grad``."""

    mode = True


# --------------------------------------------------------------------------- dtypes
DEFAULT_DTYPE = np.float32
_FLOAT_KINDS = "f"


def _as_array(data, dtype=None, device=None):
    """Turn Python data or an array into an array of the right dtype on the right device.

    Arrays keep their dtype (as ``torch.tensor(ndarray)`` does); Python floats
    become float32 and Python ints int64.
    """
    original = data
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.generic):  # NumPy scalar: keep its dtype
        data = np.asarray(data)
    if not (isinstance(data, np.ndarray) or backend.device_of(data) == "cuda"):
        data = np.asarray(data)
        if dtype is None and data.dtype.kind == "f":
            dtype = DEFAULT_DTYPE
        elif dtype is None and data.dtype.kind in "iu":
            dtype = np.int64
    if device is not None:
        data = backend.to_device(data, backend.check_device(device))
    if dtype is not None and data.dtype != np.dtype(dtype):
        data = data.astype(dtype)
    if data.dtype.kind not in "fiub" or data.dtype == np.float16:
        raise TypeError(_UNSUPPORTED.format(dtype=data.dtype, what=type(original).__name__))
    return data


_UNSUPPORTED = ("tensor: minigen computes with float32 and float64 (and integer and bool tensors for "
                "indices and masks); got data of dtype {dtype} (from {what}): pass numbers, or cast the "
                "array with .astype(np.float32)")


# --------------------------------------------------------------------------- Tensor
class Tensor:
    """An n-dimensional array that remembers how it was computed.

    Attributes
    ----------
    data : numpy.ndarray or cupy.ndarray
        The values. Never modify it in place while a graph holds the tensor.
    requires_grad : bool
        Leaves with ``requires_grad`` receive ``.grad`` from :meth:`backward`.
    grad : Tensor or None
        The accumulated gradient (leaves, and non-leaves after :meth:`retain_grad`).
    grad_fn : Context or None
        The node that produced this tensor; ``None`` for leaves.
    """

    __slots__ = ("data", "requires_grad", "grad", "grad_fn", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # make ``ndarray + Tensor`` call Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device=None):
        self.data = _as_array(data, dtype, device)
        if requires_grad and self.data.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.grad_fn = None
        self._retains_grad = False

    @classmethod
    def _wrap(cls, array) -> "Tensor":
        """Fast constructor for an array that is already correct (no checks, no copy)."""
        t = cls.__new__(cls)
        t.data = array
        t.requires_grad = False
        t.grad = None
        t.grad_fn = None
        t._retains_grad = False
        return t

    # ---- basic properties
    @property
    def shape(self) -> tuple:
        """The tensor's shape as a tuple of ints."""
        return tuple(self.data.shape)

    @property
    def dtype(self):
        """The NumPy dtype of the values."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self.data.ndim

    @property
    def device(self) -> str:
        """Where the values live: ``"cpu"`` or ``"cuda"``."""
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        """True unless a recorded op produced this tensor (``grad_fn`` is ``None``)."""
        return self.grad_fn is None

    @property
    def xp(self):
        """The array module of this tensor (numpy or cupy)."""
        return backend.array_module(self.data)

    @property
    def T(self) -> "Tensor":
        """All dims reversed (the matrix transpose for a 2-d tensor); differentiable."""
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        """The shape as a tuple, or the size of dimension ``dim`` (which may be negative)."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        """The number of elements."""
        return int(self.data.size)

    def dim(self) -> int:
        """The number of dimensions (same as :attr:`ndim`)."""
        return self.ndim

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self) -> str:
        body = np.array2string(backend.to_device(self.data, "cpu"), separator=", ", precision=4)
        extras = []
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype != DEFAULT_DTYPE and self.dtype.kind == "f":
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.fn.__name__}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous"
            )
        return bool(self.data)

    def __hash__(self):
        return id(self)

    # ---- conversion
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU if needed).

        Raises if the tensor requires grad, like PyTorch: call ``.detach()`` first.
        """
        if self.requires_grad:
            raise RuntimeError(
                "can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()"
            )
        return backend.to_device(self.data, "cpu")

    def item(self):
        """The value of a one-element tensor as a Python number; raises ``ValueError`` for any other size."""
        if self.data.size != 1:
            raise ValueError(
                f"item(): only one-element tensors can be converted to Python scalars, "
                f"got shape {self.shape}"
            )
        return self.data.reshape(()).item()

    def tolist(self):
        """The values as nested Python lists (a Python number for a 0-d tensor), copied from the GPU if needed."""
        return backend.to_device(self.data, "cpu").tolist()

    def detach(self) -> "Tensor":
        """A new leaf sharing the same data, cut from the graph."""
        return Tensor._wrap(self.data)

    def requires_grad_(self, mode: bool = True) -> "Tensor":
        """Set ``requires_grad`` in place and return the tensor.

        Raises ``TypeError`` for a non-floating dtype, and ``RuntimeError`` when switching it off on a
        non-leaf (use :meth:`detach`).
        """
        if mode and self.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        if not self.is_leaf and not mode:
            raise RuntimeError("requires_grad_(False) is only allowed on leaves; use .detach()")
        self.requires_grad = bool(mode)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this non-leaf tensor after backward."""
        self._retains_grad = True
        return self

    def to(self, device=None, dtype=None) -> "Tensor":
        """Move to a device and/or cast; differentiable (gradients flow back across)."""
        if isinstance(device, (np.dtype, type)) and dtype is None:
            device, dtype = None, device
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = ops.cast(out, np.dtype(dtype))
        if device is not None and backend.check_device(device) != self.device:
            out = ops.to_device(out, backend.check_device(device))
        return out

    def cpu(self) -> "Tensor":
        """This tensor on the CPU: a differentiable copy, or the tensor itself if it is already there."""
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        """This tensor on the GPU: a differentiable copy, or the tensor itself if it is already there."""
        return self.to("cuda")

    def float(self) -> "Tensor":
        """Cast to float32 (the tensor itself if it already is); differentiable."""
        return self.to(dtype=np.float32)

    def double(self) -> "Tensor":
        """Cast to float64 (the tensor itself if it already is); differentiable."""
        return self.to(dtype=np.float64)

    def long(self) -> "Tensor":
        """Cast to int64 (the tensor itself if it already is); the result carries no gradient."""
        return self.to(dtype=np.int64)

    def type_as(self, other: "Tensor") -> "Tensor":
        """Cast to ``other``'s dtype (the tensor itself if it already matches)."""
        return self.to(dtype=other.dtype)

    def clone(self) -> "Tensor":
        """A copy with its own memory that stays in the graph (gradients flow back to the original)."""
        return ops.clone(self)

    # ---- backward
    def backward(self, gradient=None, retain_graph: bool = False, create_graph: bool = False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is the vector in the vector-Jacobian product; it may be
        omitted only for a tensor with a single element.
        """
        backward([self], [gradient], retain_graph=retain_graph, create_graph=create_graph)

    # ---- operators and methods: thin wrappers, the math lives in minigen.ops
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __pow__(self, other): return ops.pow(self, other)
    def __rpow__(self, other): return ops.pow(other, self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __neg__(self): return ops.neg(self)
    def __abs__(self): return ops.abs(self)
    def __getitem__(self, index): return ops.getitem(self, index)
    def __lt__(self, other): return ops.compare("less", self, other)
    def __le__(self, other): return ops.compare("less_equal", self, other)
    def __gt__(self, other): return ops.compare("greater", self, other)
    def __ge__(self, other): return ops.compare("greater_equal", self, other)
    def __eq__(self, other): return ops.compare("equal", self, other)
    def __ne__(self, other): return ops.compare("not_equal", self, other)
    def __invert__(self): return ops.logical_not(self)
    def __and__(self, other): return ops.compare("logical_and", self, other)
    def __or__(self, other): return ops.compare("logical_or", self, other)

    def __setitem__(self, index, value):
        raise TypeError(
            "minigen tensors do not support item assignment (in-place writes would "
            "corrupt the autograd graph); build the result with mg.where, mg.cat or "
            "F.pad instead, or write into tensor.data under no_grad if you know why"
        )

    # Every other public op that takes a tensor first (x.exp(), x.sum(dim=1),
    # x.reshape(2, 3), ...) is installed as a method by minigen.ops.


# --------------------------------------------------------------------------- Function
class Context:
    """A graph node: what ``backward`` needs to know about one op application.

    ``inputs`` are the op's positional arguments as given (Tensors and
    constants); ``output`` is the tensor the op produced (held weakly, so saving
    it costs no reference cycle); anything else ``forward`` stores on ``ctx``
    (masks, indices, shapes) is a constant for the backward formula.
    """

    def __init__(self):
        self.fn = None
        self.inputs = ()
        self._output = None
        self.freed = False

    @property
    def output(self) -> Tensor:
        """The tensor the op produced; raises ``RuntimeError`` once it has been garbage-collected."""
        out = self._output() if self._output is not None else None
        if out is None:
            raise RuntimeError("the output of this op is no longer alive")
        return out

    @property
    def needs_input_grad(self) -> tuple:
        """One bool per input: whether it is a tensor that requires grad (as in PyTorch)."""
        return tuple(isinstance(t, Tensor) and t.requires_grad for t in self.inputs)

    def parents(self):
        """The inputs that are tensors requiring grad: the edges the backward pass follows."""
        return [t for t in self.inputs if isinstance(t, Tensor) and t.requires_grad]

    def free(self):
        """Drop saved values after a backward pass (unless ``retain_graph``)."""
        fn, output = self.fn, self._output
        self.__dict__.clear()
        self.fn, self.inputs, self._output, self.freed = fn, (), output, True


class Function:
    """Base class of every differentiable op.

    Subclasses implement two static methods::

        forward(ctx, *args, **kwargs) -> array     # args: arrays where tensors were given
        backward(ctx, grad) -> tuple               # grad: Tensor; one entry per positional arg

    ``backward`` returns Tensors (or ``None`` where an input needs no gradient)
    built from differentiable ops, so the same code serves first and higher
    derivatives. ``ctx.inputs`` holds the original input Tensors and
    ``ctx.output`` the result.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs) -> Tensor:
        """Run ``forward`` on the inputs' arrays and wrap the result in a Tensor.

        The application is recorded (the result gets a ``grad_fn``) only when grad mode is on, some input
        requires grad and the result is floating-point.
        """
        ctx = Context()
        arrays, record = [], False
        for a in args:
            if isinstance(a, Tensor):
                arrays.append(a.data)
                record = record or a.requires_grad
            else:
                arrays.append(a)
        prof = getattr(_state, "profiler", None)     # mg.autograd.profile(): time per op
        if prof is None:
            out = cls.forward(ctx, *arrays, **kwargs)
        else:
            start, out = prof.enter(), None
            try:
                out = cls.forward(ctx, *arrays, **kwargs)
            finally:
                prof.exit(cls.__name__, "forward", start, out)
        if isinstance(out, np.generic):  # NumPy returns scalars from 0-d math
            out = np.asarray(out)
        out = Tensor._wrap(out)
        if getattr(_state, "anomaly", False):   # mg.autograd.detect_anomaly(): where NaN/inf first appear
            anomaly.check_forward(cls, args, out, ctx)
        if record and out.data.dtype.kind == "f" and is_grad_enabled():
            ctx.fn = cls
            ctx.inputs = args
            ctx._output = weakref.ref(out)
            out.grad_fn = ctx
            out.requires_grad = True
        return out


def zero_grad(tensors, set_to_none: bool = True) -> None:
    """Reset the ``.grad`` of each tensor: to ``None``, or to a fresh zero array
    (never in place: a gradient array may be shared)."""
    for t in tensors:
        if t.grad is not None:
            t.grad = None if set_to_none else Tensor._wrap(t.xp.zeros_like(t.grad.data))


# --------------------------------------------------------------------------- graph walk
def _topological_order(roots):
    """Nodes (tensors with a grad_fn) reachable from ``roots``, outputs first.

    Iterative depth-first search with an explicit stack, so graph depth is
    limited only by memory.
    """
    order, seen = [], set()
    stack = [(t, False) for t in roots if t.grad_fn is not None]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        if tensor.grad_fn.freed:
            raise RuntimeError(
                "trying to backward through the graph a second time (or to use "
                "results after they were freed); pass retain_graph=True to the "
                "first backward() or autograd.grad() call if you need to"
            )
        for parent in tensor.grad_fn.parents():
            if parent.grad_fn is not None and id(parent) not in seen:
                stack.append((parent, False))
    order.reverse()  # post-order reversed = every node before its inputs
    return order


def _initial_gradient(output: Tensor, gradient) -> Tensor:
    if gradient is None:
        if output.data.size != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for scalar outputs; this output "
                f"has shape {output.shape}: pass gradient= (same shape) to backward()"
            )
        return Tensor._wrap(output.xp.ones_like(output.data))
    gradient = gradient if isinstance(gradient, Tensor) else Tensor(
        gradient, dtype=output.dtype, device=output.device)
    if gradient.shape != output.shape:
        raise ValueError(
            f"backward: gradient has shape {gradient.shape} but the output has shape {output.shape}"
        )
    return gradient


def _backward_of(ctx, g):
    """The op's backward formula, checked for NaN/inf under anomaly mode."""
    if getattr(_state, "anomaly", False):
        return anomaly.checked_backward(ctx, g)
    return ctx.fn.backward(ctx, g)


def _run_backward(outputs, gradients, retain_graph, create_graph, inputs=None):
    """Core of :func:`backward` and :func:`grad`.

    Returns the gradients reaching ``inputs`` (when given); otherwise
    accumulates into leaves' ``.grad``.
    """
    for out in outputs:
        if not out.requires_grad:
            raise RuntimeError(
                "element 0 of tensors does not require grad and does not have a grad_fn "
                "(did you create it under no_grad, or forget requires_grad=True?)"
            )
    grads: dict[int, Tensor] = {}
    # Arrays a leaf's .grad may not take over without a copy: the caller's own gradients, and every
    # array already handed to a leaf (an Add gives one gradient to both of its inputs).
    handed: set[int] = set()
    for out, g in zip(outputs, gradients):
        g = _initial_gradient(out, g)
        handed.add(id(g.data))
        grads[id(out)] = grads[id(out)] + g if id(out) in grads else g

    wanted = {id(t): t for t in inputs} if inputs is not None else None
    captured: dict[int, Tensor] = {}

    def deliver(tensor, g):
        """Hand a gradient to a tensor that is a graph end (leaf or requested input)."""
        if wanted is not None:
            if id(tensor) in wanted:
                captured[id(tensor)] = captured[id(tensor)] + g if id(tensor) in captured else g
            return
        if tensor.is_leaf or tensor._retains_grad:
            if create_graph:
                tensor.grad = g if tensor.grad is None else tensor.grad + g
            elif tensor.grad is None:
                # .grad must be an array of its own (optimizers and users write into it): a
                # fresh contiguous result of a backward formula is taken as it is — most are —
                # but a view (a broadcast, a reshape) or an array handed out before is copied.
                data = g.data
                if data.base is not None or not data.flags.c_contiguous or id(data) in handed:
                    data = g.xp.array(data, order="C", copy=True)
                handed.add(id(data))
                tensor.grad = Tensor._wrap(data)
            else:
                tensor.grad = Tensor._wrap(tensor.grad.data + g.data)

    order = _topological_order(outputs)
    prof = getattr(_state, "profiler", None)          # mg.autograd.profile(): time per op's backward
    with enable_grad() if create_graph else no_grad():
        for tensor in order:
            g = grads.pop(id(tensor), None)
            if g is None:
                continue
            if wanted is not None and id(tensor) in wanted:
                deliver(tensor, g)
            elif tensor._retains_grad:
                deliver(tensor, g)
            ctx = tensor.grad_fn
            if prof is None:
                input_grads = _backward_of(ctx, g)
            else:
                start = prof.enter()
                try:
                    input_grads = _backward_of(ctx, g)
                finally:
                    prof.exit(ctx.fn.__name__, "backward", start)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for inp, ig in zip(ctx.inputs, input_grads):
                if ig is None or not isinstance(inp, Tensor) or not inp.requires_grad:
                    continue
                if ig.dtype != inp.dtype:  # a float64 constant promoted the forward
                    ig = ig.to(dtype=inp.dtype)
                if ig.shape != inp.shape:
                    raise RuntimeError(
                        f"{ctx.fn.__name__}.backward returned a gradient of shape {ig.shape} "
                        f"for an input of shape {inp.shape}"
                    )
                if inp.grad_fn is None:
                    deliver(inp, ig)
                else:
                    grads[id(inp)] = grads[id(inp)] + ig if id(inp) in grads else ig
            if not retain_graph:
                ctx.free()
    # Leaves among the outputs themselves (x.backward() on a leaf).
    for out, g in zip(outputs, gradients):
        if out.grad_fn is None:
            g = _initial_gradient(out, g)
            handed.add(id(g.data))
            deliver(out, g)
    if wanted is not None:
        return [captured.get(id(t)) for t in inputs]
    return None


def backward(tensors, grad_tensors=None, retain_graph=False, create_graph=False):
    """Accumulate gradients of ``tensors`` into the leaves' ``.grad``."""
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    elif isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors]
    _run_backward(tensors, list(grad_tensors), retain_graph or create_graph, create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Return d(outputs)/d(inputs) without touching any ``.grad``.

    With ``create_graph=True`` the result is itself differentiable, e.g. for the
    gradient penalty :math:`\\lambda(\\lVert\\nabla_x D(x)\\rVert_2-1)^2`.
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise ValueError(f"grad: inputs[{i}] does not require grad")
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    if retain_graph is None:
        retain_graph = create_graph
    result = _run_backward(outputs, list(grad_outputs), retain_graph, create_graph, inputs)
    for i, (t, g) in enumerate(zip(inputs, result)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"grad: inputs[{i}] (shape {t.shape}) was not used to compute the "
                    "outputs; pass allow_unused=True to get None for it"
                )
    return tuple(result)


from . import anomaly, ops  # noqa: E402  (both import this module; Tensor methods use ops)
from .anomaly import AnomalyError, detect_anomaly, is_anomaly_enabled, set_detect_anomaly  # noqa: E402,F401
from .profiler import profile  # noqa: E402,F401

"""The public API under fuzz: one valid call of every functional op and every layer, the ways
hypothesis breaks it, and the judge of what comes back.

A *case* is a function returning ``(fn, args, kwargs)`` — a call that works. A *mutation* damages
one argument of it: a random shape, a zero-size dimension, one dimension more or less, another
dtype, NaN or ±inf among the values, a raw NumPy array, a Python list or ``None`` for a tensor; zero,
a negative, a fraction, a string, NaN or ``None`` for a number or an option. The call then has two
acceptable outcomes:

* it returns tensors whose shape (and, for the ops with a NumPy oracle, whose values, NaN and inf
  included) are what NumPy says, and whose gradients have the shapes of their inputs;
* it raises ``ValueError``, ``TypeError``, ``IndexError``, ``RuntimeError`` or
  ``NotImplementedError`` *from minigen's own code* (the innermost frame of the traceback is in
  ``minigen/`` or ``kernels/``, not deep inside NumPy or Numba), with a message.

Anything else — another exception type, an error thrown from inside NumPy, a wrong shape or value,
a crash — is a failure, reported with the call that caused it.
"""
from __future__ import annotations

import collections
import os
import traceback

import numpy as np

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(mg.__file__)))
OURS = (os.path.join(ROOT, "minigen") + os.sep, os.path.join(ROOT, "kernels") + os.sep)
CLEAN_ERRORS = (ValueError, TypeError, IndexError, RuntimeError, NotImplementedError)
#: what the fuzzed calls did, for the summary line ``pytest`` prints (see ``conftest.py``)
OUTCOMES = collections.Counter()

_rng = np.random.default_rng(0)


def f32(*shape):
    return mg.tensor(_rng.normal(size=shape).astype(np.float32))


def pos(*shape):
    return mg.tensor((np.abs(_rng.normal(size=shape)) + 0.1).astype(np.float32))


def prob(*shape):
    return mg.tensor(_rng.uniform(0.05, 0.95, size=shape).astype(np.float32))


def idx(high, *shape):
    return mg.tensor(_rng.integers(0, high, size=shape))


def mask(*shape):
    return mg.tensor(_rng.random(shape) < 0.5)


def unary(fn, make=f32):
    return lambda: (fn, (make(3, 4),), {})


def binary(fn, make=f32):
    return lambda: (fn, (make(3, 4), make(4)), {})


# --------------------------------------------------------------------------- valid calls
FUNCTIONAL = {
    "abs": unary(F.abs), "erf": unary(F.erf), "exp": unary(F.exp), "gelu": unary(F.gelu),
    "log": unary(F.log, pos), "neg": unary(F.neg), "relu": unary(F.relu), "sigmoid": unary(F.sigmoid),
    "silu": unary(F.silu), "softplus": unary(F.softplus), "sqrt": unary(F.sqrt, pos), "tanh": unary(F.tanh),
    "elu": lambda: (F.elu, (f32(3, 4),), {"alpha": 1.0}),
    "leaky_relu": lambda: (F.leaky_relu, (f32(3, 4),), {"negative_slope": 0.1}),
    "add": binary(F.add), "sub": binary(F.sub), "mul": binary(F.mul), "div": binary(F.div, pos),
    "maximum": binary(F.maximum), "minimum": binary(F.minimum), "pow": binary(F.pow, pos),
    "amax": lambda: (F.amax, (f32(3, 4),), {"dim": 1}),
    "amin": lambda: (F.amin, (f32(3, 4),), {"dim": 0, "keepdim": True}),
    "max": lambda: (F.max, (f32(3, 4),), {"dim": 1}),
    "min": lambda: (F.min, (f32(3, 4),), {"dim": 1}),
    "mean": lambda: (F.mean, (f32(3, 4),), {"dim": 0}),
    "sum": lambda: (F.sum, (f32(3, 4),), {"dim": 1}),
    "std": lambda: (F.std, (f32(3, 4),), {"dim": 1}),
    "var": lambda: (F.var, (f32(3, 4),), {"dim": 1}),
    "logsumexp": lambda: (F.logsumexp, (f32(3, 4),), {"dim": 1}),
    "softmax": lambda: (F.softmax, (f32(3, 4),), {"dim": -1}),
    "log_softmax": lambda: (F.log_softmax, (f32(3, 4),), {"dim": 1}),
    "cumsum": lambda: (F.cumsum, (f32(3, 4), 1), {}),
    "clamp": lambda: (F.clamp, (f32(3, 4),), {"min": -0.5, "max": 0.5}),
    "normalize": lambda: (F.normalize, (f32(3, 4),), {"dim": 1}),
    "matmul": lambda: (F.matmul, (f32(3, 4), f32(4, 5)), {}),
    "bmm": lambda: (F.bmm, (f32(2, 3, 4), f32(2, 4, 5)), {}),
    "linear": lambda: (F.linear, (f32(3, 4), f32(5, 4)), {"bias": f32(5)}),
    "einsum": lambda: (F.einsum, ("ij,jk->ik", f32(3, 4), f32(4, 5)), {}),
    "where": lambda: (F.where, (mask(3, 4), f32(3, 4), f32(4)), {}),
    "cat": lambda: (F.cat, ([f32(2, 3), f32(4, 3)],), {"dim": 0}),
    "stack": lambda: (F.stack, ([f32(3, 4), f32(3, 4)],), {"dim": 1}),
    "chunk": lambda: (F.chunk, (f32(6, 2), 3), {}),
    "split": lambda: (F.split, (f32(6, 2), 2), {}),
    "expand": lambda: (F.expand, (f32(1, 4), 3, 4), {}),
    "flatten": lambda: (F.flatten, (f32(2, 3, 4),), {"start_dim": 1}),
    "permute": lambda: (F.permute, (f32(2, 3, 4), 2, 0, 1), {}),
    "reshape": lambda: (F.reshape, (f32(2, 6), 3, 4), {}),
    "view": lambda: (F.view, (f32(2, 6), 12), {}),
    "squeeze": lambda: (F.squeeze, (f32(3, 1, 4),), {"dim": 1}),
    "unsqueeze": lambda: (F.unsqueeze, (f32(3, 4), 1), {}),
    "transpose": lambda: (F.transpose, (f32(2, 3, 4), 0, 2), {}),
    "gather": lambda: (F.gather, (f32(3, 4), 1, idx(4, 3, 2)), {}),
    "pad": lambda: (F.pad, (f32(2, 3, 4), (1, 2)), {}),
    "one_hot": lambda: (F.one_hot, (idx(5, 4),), {"num_classes": 5}),
    "embedding": lambda: (F.embedding, (idx(10, 3, 4), f32(10, 6)), {}),
    "dropout": lambda: (F.dropout, (f32(3, 4),), {"p": 0.3}),
    "bernoulli": lambda: (F.bernoulli, (prob(3, 4),), {}),
    "categorical": lambda: (F.categorical, (f32(3, 5),), {}),
    "multinomial": lambda: (F.multinomial, (prob(3, 5),), {"num_samples": 2}),
    "normal": lambda: (F.normal, (), {"mean": 0.0, "std": 1.0, "size": (3, 4)}),
    "conv2d": lambda: (F.conv2d, (f32(2, 3, 8, 8), f32(4, 3, 3, 3)), {"bias": f32(4), "padding": 1}),
    "conv_transpose2d": lambda: (F.conv_transpose2d, (f32(2, 3, 5, 5), f32(3, 4, 3, 3)),
                                 {"bias": f32(4), "stride": 2}),
    "avg_pool2d": lambda: (F.avg_pool2d, (f32(2, 3, 6, 6), 2), {}),
    "max_pool2d": lambda: (F.max_pool2d, (f32(2, 3, 6, 6), 2), {}),
    "interpolate": lambda: (F.interpolate, (f32(1, 2, 3, 3),), {"scale_factor": 2}),
    "batch_norm": lambda: (F.batch_norm, (f32(4, 3, 5, 5), mg.zeros(3), mg.ones(3)),
                           {"weight": f32(3), "bias": f32(3), "training": True}),
    "group_norm": lambda: (F.group_norm, (f32(2, 4, 3, 3), 2), {"weight": f32(4), "bias": f32(4)}),
    "instance_norm": lambda: (F.instance_norm, (f32(2, 3, 4, 4),), {}),
    "layer_norm": lambda: (F.layer_norm, (f32(3, 4), (4,)), {"weight": f32(4), "bias": f32(4)}),
    "scaled_dot_product_attention": lambda: (F.scaled_dot_product_attention,
                                             (f32(2, 2, 5, 4), f32(2, 2, 6, 4), f32(2, 2, 6, 3)), {}),
    "mse_loss": lambda: (F.mse_loss, (f32(3, 4), f32(3, 4)), {}),
    "l1_loss": lambda: (F.l1_loss, (f32(3, 4), f32(3, 4)), {}),
    "binary_cross_entropy": lambda: (F.binary_cross_entropy, (prob(3, 4), prob(3, 4)), {}),
    "binary_cross_entropy_with_logits": lambda: (F.binary_cross_entropy_with_logits,
                                                 (f32(3, 4), prob(3, 4)), {}),
    "cross_entropy": lambda: (F.cross_entropy, (f32(4, 5), idx(5, 4)), {}),
    "nll_loss": lambda: (F.nll_loss, (F.log_softmax(f32(4, 5), dim=1), idx(5, 4)), {}),
    "kl_div": lambda: (F.kl_div, (F.log_softmax(f32(4, 5), dim=1), F.softmax(f32(4, 5), dim=1)),
                       {"reduction": "batchmean"}),
}


def layer(make_module, *inputs):
    """A case that builds the module and calls it: ``args`` are the constructor's arguments followed by
    the inputs, so that both are fuzzed."""
    def case():
        ctor, ctor_args = make_module()
        n = len(ctor_args)

        def build_and_call(*args, **options):
            return ctor(*args[:n], **options)(*args[n:])
        return build_and_call, (*ctor_args, *[make() for make in inputs]), {}
    return case


LAYERS = {
    "Linear": layer(lambda: (nn.Linear, (4, 5)), lambda: f32(3, 4)),
    "Conv2d": layer(lambda: (nn.Conv2d, (3, 4, 3)), lambda: f32(2, 3, 6, 6)),
    "ConvTranspose2d": layer(lambda: (nn.ConvTranspose2d, (3, 4, 3, 2)), lambda: f32(2, 3, 4, 4)),
    "BatchNorm1d": layer(lambda: (nn.BatchNorm1d, (4,)), lambda: f32(3, 4)),
    "BatchNorm2d": layer(lambda: (nn.BatchNorm2d, (3,)), lambda: f32(2, 3, 4, 4)),
    "GroupNorm": layer(lambda: (nn.GroupNorm, (2, 4)), lambda: f32(2, 4, 3, 3)),
    "InstanceNorm2d": layer(lambda: (nn.InstanceNorm2d, (3,)), lambda: f32(2, 3, 4, 4)),
    "LayerNorm": layer(lambda: (nn.LayerNorm, (4,)), lambda: f32(3, 4)),
    "Embedding": layer(lambda: (nn.Embedding, (10, 6)), lambda: idx(10, 3, 4)),
    "LSTMCell": layer(lambda: (nn.LSTMCell, (4, 5)), lambda: f32(3, 4)),
    "LSTM": layer(lambda: (nn.LSTM, (4, 5)), lambda: f32(6, 3, 4)),
    "MultiheadAttention": layer(lambda: (nn.MultiheadAttention, (8, 2)),
                                lambda: f32(5, 2, 8), lambda: f32(6, 2, 8), lambda: f32(6, 2, 8)),
    "AvgPool2d": layer(lambda: (nn.AvgPool2d, (2,)), lambda: f32(2, 3, 6, 6)),
    "MaxPool2d": layer(lambda: (nn.MaxPool2d, (2,)), lambda: f32(2, 3, 6, 6)),
    "Upsample": layer(lambda: (nn.Upsample, (None, 2)), lambda: f32(1, 2, 3, 3)),
    "Dropout": layer(lambda: (nn.Dropout, (0.3,)), lambda: f32(3, 4)),
    "Flatten": layer(lambda: (nn.Flatten, (1,)), lambda: f32(2, 3, 4)),
    "Unflatten": layer(lambda: (nn.Unflatten, (1, (3, 4))), lambda: f32(2, 12)),
    "Softmax": layer(lambda: (nn.Softmax, (1,)), lambda: f32(3, 4)),
    "LogSoftmax": layer(lambda: (nn.LogSoftmax, (1,)), lambda: f32(3, 4)),
    "ELU": layer(lambda: (nn.ELU, (1.0,)), lambda: f32(3, 4)),
    "LeakyReLU": layer(lambda: (nn.LeakyReLU, (0.1,)), lambda: f32(3, 4)),
    "Softplus": layer(lambda: (nn.Softplus, (1.0,)), lambda: f32(3, 4)),
    "GELU": layer(lambda: (nn.GELU, ("tanh",)), lambda: f32(3, 4)),
    "ReLU": layer(lambda: (nn.ReLU, ()), lambda: f32(3, 4)),
    "SiLU": layer(lambda: (nn.SiLU, ()), lambda: f32(3, 4)),
    "Sigmoid": layer(lambda: (nn.Sigmoid, ()), lambda: f32(3, 4)),
    "Tanh": layer(lambda: (nn.Tanh, ()), lambda: f32(3, 4)),
    "MSELoss": layer(lambda: (nn.MSELoss, ("mean",)), lambda: f32(3, 4), lambda: f32(3, 4)),
    "L1Loss": layer(lambda: (nn.L1Loss, ("sum",)), lambda: f32(3, 4), lambda: f32(3, 4)),
    "BCELoss": layer(lambda: (nn.BCELoss, (None, "mean")), lambda: prob(3, 4), lambda: prob(3, 4)),
    "BCEWithLogitsLoss": layer(lambda: (nn.BCEWithLogitsLoss, (None, "mean")), lambda: f32(3, 4),
                               lambda: prob(3, 4)),
    "CrossEntropyLoss": layer(lambda: (nn.CrossEntropyLoss, (None, -100, "mean", 0.1)), lambda: f32(4, 5),
                              lambda: idx(5, 4)),
    "NLLLoss": layer(lambda: (nn.NLLLoss, (None, -100, "mean")), lambda: f32(4, 5), lambda: idx(5, 4)),
    "KLDivLoss": layer(lambda: (nn.KLDivLoss, ("batchmean",)), lambda: f32(4, 5), lambda: prob(4, 5)),
    "Sequential": layer(lambda: (lambda *a: nn.Sequential(nn.Linear(*a), nn.ReLU()), (4, 3)), lambda: f32(2, 4)),
}


# --------------------------------------------------------------------------- NumPy oracles
def _reduce(np_fn):
    """A NumPy reduction with PyTorch's arguments (a 0-d tensor reduces over dim 0 or -1 to itself)."""
    return lambda x, dim=None, keepdim=False: np_fn(x, axis=dim if np.ndim(x) else None, keepdims=keepdim)


ORACLES = {
    "abs": np.abs, "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "neg": np.negative,
    "relu": lambda x: np.where(np.isnan(x), x, np.maximum(x, 0)),
    "sigmoid": lambda x: 1 / (1 + np.exp(-np.asarray(x, np.float64))),
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum,
    "amax": _reduce(np.max), "amin": _reduce(np.min), "sum": _reduce(np.sum), "mean": _reduce(np.mean),
    "cumsum": lambda x, dim: np.cumsum(x, axis=dim),
    "clamp": lambda x, min=None, max=None: np.clip(x, min, max),
    "matmul": np.matmul, "where": np.where,
    "transpose": lambda x, a, b: np.swapaxes(x, a, b),
    "permute": lambda x, *dims: np.transpose(x, dims),
    "reshape": lambda x, *shape: np.reshape(x, shape), "view": lambda x, *shape: np.reshape(x, shape),
    "unsqueeze": lambda x, dim: np.expand_dims(x, dim),
    "cat": lambda ts, dim=0: np.concatenate(ts, axis=dim), "stack": lambda ts, dim=0: np.stack(ts, axis=dim),
}


# --------------------------------------------------------------------------- mutations
TENSOR_MUTATIONS = ("shape", "zero-size", "extra-dim", "fewer-dims", "int64", "bool", "float64", "uint8",
                    "nan", "inf", "numpy", "list", "none")
SCALAR_MUTATIONS = (0, -1, -3, 2.5, 7, float("nan"), "x", None)


def _mutate_tensor(t, how, draw_int):
    """``t`` damaged as ``how`` says (``draw_int(lo, hi)`` draws the random parts)."""
    a = t.numpy()
    if how == "shape":
        a = _rng.normal(size=tuple(draw_int(1, 4) for _ in range(draw_int(0, 4)))).astype(a.dtype)
    elif how == "zero-size" and a.ndim:
        shape = list(a.shape)
        shape[draw_int(0, a.ndim - 1)] = 0
        a = np.zeros(shape, a.dtype)
    elif how == "extra-dim":
        a = a[None]
    elif how == "fewer-dims" and a.ndim:
        a = a[0]
    elif how in ("int64", "bool", "float64", "uint8"):
        a = a.astype(how)
    elif how in ("nan", "inf") and a.dtype.kind == "f" and a.size:
        a = a.copy()
        a.flat[draw_int(0, a.size - 1)] = np.nan if how == "nan" else -np.inf
        a.flat[draw_int(0, a.size - 1)] = np.inf
    elif how == "numpy":
        return a
    elif how == "list":
        return a.tolist()
    elif how == "none":
        return None
    return mg.tensor(a)


def mutate(args, kwargs, draw_int, draw_choice):
    """Damage one argument of a valid call (a copy); returns ``(args, kwargs, description)``."""
    args = [list(a) if isinstance(a, list) else a for a in args]
    kwargs = dict(kwargs)
    slots = [(args, i) for i in range(len(args))] + [(kwargs, k) for k in kwargs]
    slots += [(a, j) for a in args if isinstance(a, list) for j in range(len(a))]
    if not slots:
        return args, kwargs, "no change"
    container, key = slots[draw_int(0, len(slots) - 1)]
    value = container[key]
    if isinstance(value, mg.Tensor):
        how = draw_choice(TENSOR_MUTATIONS)
        container[key] = _mutate_tensor(value, how, draw_int)
    elif isinstance(value, list):
        how = draw_choice(("empty-list", "none"))
        container[key] = [] if how == "empty-list" else None
    else:
        how = draw_choice(SCALAR_MUTATIONS)
        container[key] = how
    return args, kwargs, f"argument {key!r} -> {how!r}"


# --------------------------------------------------------------------------- the judge
def _tensors(result):
    """The tensors of a result (nested tuples like an LSTM's ``(out, (h, c))`` flattened), or None."""
    if isinstance(result, mg.Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        parts = [_tensors(r) for r in result]
        return None if any(p is None for p in parts) else [t for p in parts for t in p]
    return None


def _as_numpy(value):
    if isinstance(value, mg.Tensor):
        return value.data
    if isinstance(value, list) and value and all(isinstance(v, mg.Tensor) for v in value):
        return [v.data for v in value]
    return value


def judge(name, fn, args, kwargs, oracle=None) -> str | None:
    """Run ``fn(*args, **kwargs)``; ``None`` if the outcome is acceptable, else what went wrong."""
    problem, outcome = _judge(fn, args, kwargs, oracle)
    OUTCOMES[outcome if problem is None else "failures"] += 1
    return problem


def _judge(fn, args, kwargs, oracle):
    """``(problem or None, outcome)`` of one call: see :func:`judge`."""
    inputs = [a for a in list(args) + list(kwargs.values()) + [x for a in args if isinstance(a, list) for x in a]
              if isinstance(a, mg.Tensor) and a.dtype.kind == "f"]
    for t in inputs:
        t.requires_grad = True
    try:
        result = fn(*args, **kwargs)
    except CLEAN_ERRORS as err:
        return _judge_error(err), "documented errors"
    except Exception as err:  # noqa: BLE001 - any other exception is the finding
        return f"{type(err).__name__} (not a documented error): {err}", None
    tensors = _tensors(result)
    if tensors is None:
        return f"returned {type(result).__name__}, not tensors", None
    if oracle is not None:
        problem = _check_oracle(oracle, tensors, args, kwargs)
        if problem:
            return problem, None
    floating = [t for t in tensors if t.dtype.kind == "f" and t.requires_grad]
    if floating:
        try:
            sum(t.sum() for t in floating).backward()
        except CLEAN_ERRORS as err:
            return _judge_error(err, "backward"), "documented errors"
        except Exception as err:  # noqa: BLE001
            return f"backward: {type(err).__name__} (not a documented error): {err}", None
        for t in inputs:
            if t.grad is not None and t.grad.shape != t.shape:
                return f"gradient of shape {t.grad.shape} for an input of shape {t.shape}", None
    return None, ("checked results" if oracle is not None else "results")


def _judge_error(err, where="call") -> str | None:
    frames = traceback.extract_tb(err.__traceback__)
    innermost = os.path.abspath(frames[-1].filename) if frames else ""
    if not str(err).strip():
        return f"{where}: {type(err).__name__} without a message"
    if not innermost.startswith(OURS):
        return (f"{where}: {type(err).__name__} raised inside {os.path.relpath(innermost, ROOT)}:"
                f"{frames[-1].lineno}, not by minigen's checks: {str(err).splitlines()[0]}")
    return None


def _check_oracle(oracle, tensors, args, kwargs) -> str | None:
    with np.errstate(all="ignore"):
        try:
            expected = oracle(*[_as_numpy(a) for a in args], **{k: _as_numpy(v) for k, v in kwargs.items()})
        except Exception as err:  # noqa: BLE001
            return f"minigen accepted a call NumPy refuses ({type(err).__name__}: {err})"
    expected = np.asarray(expected)
    got = tensors[0].data
    if got.shape != expected.shape:
        return f"shape {got.shape}, NumPy says {expected.shape}"
    if expected.dtype.kind in "fc":
        tol = 1e-2 if got.dtype == np.float16 else 1e-4
        if not np.allclose(got.astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol, equal_nan=True):
            return f"values differ from NumPy's (NaN/inf included): got {got.ravel()[:6]}, NumPy {expected.ravel()[:6]}"
    elif not np.array_equal(got, expected):
        return "values differ from NumPy's"
    return None

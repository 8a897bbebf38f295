"""The op library: every differentiable operation, grouped by kind.

``minigen.nn.functional`` presents these under PyTorch's names; this package
also installs the ones that take a tensor first as ``Tensor`` methods, so
``x.exp()``, ``x.sum(dim=1)`` and ``x.reshape(2, 3)`` all work.
"""
from ..autograd import Tensor
from .activations import (elu, erf, gelu, leaky_relu, log_softmax, relu, sigmoid, silu,
                          softmax, softplus, tanh)
from .attention import scaled_dot_product_attention
from .conv import avg_pool2d, conv2d, conv_transpose2d, interpolate, max_pool2d
from .creation import (arange, as_tensor, bernoulli, categorical, empty, empty_like, eye,
                       from_numpy, full, full_like, linspace, multinomial, normal, ones,
                       ones_like, rand, rand_like, randint, randint_like, randn, randn_like,
                       randperm, tensor, zeros, zeros_like)
from .elementwise import (abs, add, allclose, cast, clamp, clip, clone, compare, cos, div, eq,
                          exp, isfinite, isinf, isnan, log, logical_not, maximum, minimum, mul,
                          neg, pow, reciprocal, rsqrt, sign, sin, sqrt, square, sub, to_device,
                          where)
from .linalg import bmm, einsum, linear, matmul, outer
from .losses import (bernoulli_log_likelihood, binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy,
                     kl_div, l1_loss, mse_loss, nll_loss)
from .normalization import batch_norm, group_norm, instance_norm, layer_norm, normalize
from .reductions import (all, amax, amin, any, argmax, argmin, cumsum, logsumexp, max, mean, min, std,
                         sum, var)
from .regularization import dropout, embedding, one_hot
from .shape import (broadcast_to, cat, chunk, concatenate, expand, expand_as, flatten, flip,
                    gather, getitem, index_add_to, masked_fill, movedim, pad, permute, repeat,
                    repeat_interleave, reshape, reshape_as, split, squeeze, stack, swapaxes,
                    take_along_dim, transpose, unbind, unflatten, unsqueeze, view, view_as)

#: Ops available as ``tensor.name(...)``.
TENSOR_METHODS = {
    "abs": abs, "add": add, "sub": sub, "mul": mul, "div": div, "pow": pow,
    "neg": neg, "exp": exp, "log": log, "sin": sin, "cos": cos, "sqrt": sqrt, "rsqrt": rsqrt, "square": square,
    "reciprocal": reciprocal, "clamp": clamp, "clip": clip, "sign": sign,
    "maximum": maximum, "minimum": minimum, "isnan": isnan, "isinf": isinf,
    "isfinite": isfinite, "masked_fill": masked_fill, "eq": eq,
    "sum": sum, "mean": mean, "var": var, "std": std, "max": max, "min": min,
    "amax": amax, "amin": amin, "logsumexp": logsumexp, "cumsum": cumsum, "argmax": argmax, "argmin": argmin,
    "all": all, "any": any,
    "reshape": reshape, "view": view, "permute": permute, "transpose": transpose,
    "swapaxes": swapaxes, "movedim": movedim, "flatten": flatten, "unflatten": unflatten,
    "squeeze": squeeze, "unsqueeze": unsqueeze, "expand": expand, "expand_as": expand_as,
    "broadcast_to": broadcast_to, "view_as": view_as, "reshape_as": reshape_as,
    "gather": gather, "split": split, "chunk": chunk, "unbind": unbind, "flip": flip,
    "repeat": repeat, "repeat_interleave": repeat_interleave,
    "matmul": matmul, "relu": relu, "sigmoid": sigmoid, "tanh": tanh,
    "softmax": softmax, "log_softmax": log_softmax,
}

for _name, _fn in TENSOR_METHODS.items():
    setattr(Tensor, _name, _fn)
del _name, _fn

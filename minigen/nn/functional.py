"""``minigen.nn.functional`` — every differentiable op under PyTorch's name and argument order.

The implementations live in :mod:`minigen.ops`, grouped by kind (element-wise,
reductions, shapes, linear algebra, activations, convolutions, attention,
normalisation, losses); this module is the one flat namespace a reader of
PyTorch code expects.
"""
from ..ops.activations import (elu, erf, gelu, leaky_relu, log_softmax, relu, sigmoid, silu,  # noqa: F401
                               softmax, softplus, tanh)
from ..ops.attention import scaled_dot_product_attention  # noqa: F401
from ..ops.conv import avg_pool2d, conv2d, conv_transpose2d, interpolate, max_pool2d  # noqa: F401
from ..ops.creation import bernoulli, categorical, multinomial, normal  # noqa: F401
from ..ops.elementwise import (abs, add, clamp, div, exp, log, maximum, minimum, mul, neg,  # noqa: F401,A004
                               pow, sqrt, sub, where)
from ..ops.linalg import bmm, einsum, linear, matmul  # noqa: F401
from ..ops.losses import (binary_cross_entropy, binary_cross_entropy_with_logits,  # noqa: F401
                          cross_entropy, kl_div, l1_loss, mse_loss, nll_loss)
from ..ops.normalization import (batch_norm, group_norm, instance_norm, layer_norm,  # noqa: F401
                                 normalize)
from ..ops.reductions import (amax, amin, cumsum, logsumexp, max, mean, min, std, sum, var)  # noqa: F401,A004
from ..ops.regularization import dropout, embedding, one_hot  # noqa: F401
from ..ops.shape import (cat, chunk, expand, flatten, gather, pad, permute, reshape, split,  # noqa: F401
                         squeeze, stack, transpose, unsqueeze, view)

"""Bad input gets a clear error naming the op, the argument and both shapes."""
import re

import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F


def raises(exc, *fragments):
    """pytest.raises whose message must contain every fragment (literally)."""
    return pytest.raises(exc, match="(?s)" + ".*".join(re.escape(f) for f in fragments))


def test_conv2d_channel_mismatch_message():
    x, w = mg.randn(2, 3, 8, 8), mg.randn(8, 1, 3, 3)
    with raises(ValueError, "conv2d: input has 3 channels but weight expects 1",
                "weight shape (8, 1, 3, 3)"):
        F.conv2d(x, w)


def test_conv2d_bad_ranks_and_sizes():
    with raises(ValueError, "conv2d: input must be 4-d, got shape (3, 8, 8)"):
        F.conv2d(mg.randn(3, 8, 8), mg.randn(4, 3, 3, 3))
    with raises(ValueError, "conv2d: input 2x2", "smaller than the dilated kernel 3x3"):
        F.conv2d(mg.randn(1, 1, 2, 2), mg.randn(1, 1, 3, 3))
    with raises(ValueError, "conv2d: stride and dilation must be >= 1"):
        F.conv2d(mg.randn(1, 1, 4, 4), mg.randn(1, 1, 3, 3), stride=0)
    with raises(TypeError, "conv2d: input dtype float64 != weight dtype float32"):
        F.conv2d(mg.randn(1, 1, 4, 4, dtype=np.float64), mg.randn(1, 1, 3, 3))
    with raises(ValueError, "conv2d: stride must be an int or a pair of ints"):
        F.conv2d(mg.randn(1, 1, 4, 4), mg.randn(1, 1, 3, 3), stride=(1, 2, 3))
    with raises(ValueError, "bias must have shape (2,), got (3,)"):
        F.conv2d(mg.randn(1, 1, 4, 4), mg.randn(2, 1, 3, 3), bias=mg.randn(3))


def test_conv_transpose2d_errors():
    with raises(ValueError, "conv_transpose2d: input has 4 channels but weight expects 3"):
        F.conv_transpose2d(mg.randn(1, 4, 3, 3), mg.randn(3, 2, 3, 3))
    with raises(ValueError, "output_padding (2, 2) must be smaller than stride (2, 2)"):
        F.conv_transpose2d(mg.randn(1, 3, 3, 3), mg.randn(3, 2, 3, 3), stride=2,
                           output_padding=2)


def test_matmul_and_linear_shapes():
    with raises(ValueError, "matmul: shapes (2, 3) and (4, 5) cannot be multiplied"):
        mg.randn(2, 3) @ mg.randn(4, 5)
    with raises(ValueError, "linear: input has 5 features but weight expects 4",
                "input shape (2, 5)", "weight shape (3, 4)"):
        F.linear(mg.randn(2, 5), mg.randn(3, 4))


def test_broadcasting_mismatch_names_shapes():
    with raises(ValueError, "add: shapes (2, 3) and (4,) cannot be broadcast together"):
        mg.randn(2, 3) + mg.randn(4)
    with raises(ValueError, "mul: shapes (2, 3) and (2,) cannot be broadcast together"):
        mg.randn(2, 3) * mg.randn(2)


def test_reshape_and_view_errors():
    with raises(ValueError, "reshape: shape (4, 4) is invalid for input of size 6"):
        mg.randn(2, 3).reshape(4, 4)
    with raises(ValueError, "only one dimension can be -1"):
        mg.randn(2, 3).reshape(-1, -1)
    with raises(IndexError, "transpose: dim 3 is out of range for a tensor with 2 dimensions"):
        mg.randn(2, 3).transpose(0, 3)
    with raises(ValueError, "expand: the size of dim 0 (2) must match the target 3"):
        mg.randn(2, 1).expand(3, 4)
    with raises(IndexError, "sum: dim 2 is out of range"):
        mg.randn(2, 3).sum(dim=2)


def test_cat_stack_errors():
    with raises(ValueError, "cat: tensors[1] has shape (2, 4) but tensors[0] has shape (2, 3)"):
        mg.cat([mg.randn(2, 3), mg.randn(2, 4)], dim=0)
    with raises(ValueError, "stack: tensors[1] has shape (3,)"):
        mg.stack([mg.randn(2), mg.randn(3)])
    with raises(ValueError, "cat: expected a non-empty list"):
        mg.cat([])


def test_indexing_errors():
    with raises(IndexError, "is invalid for a tensor of shape (2, 3)"):
        mg.randn(2, 3)[5]
    with raises(IndexError, "integer or bool"):
        mg.randn(3)[mg.randn(2)]


def test_loss_errors():
    with raises(ValueError, "mse_loss: input shape (2, 3) and target shape (3, 2) must match"):
        F.mse_loss(mg.randn(2, 3), mg.randn(3, 2))
    with raises(IndexError, "nll_loss: target values must lie in [0, 3)"):
        F.cross_entropy(mg.randn(2, 3), mg.tensor([0, 3]))
    with raises(TypeError, "target must hold integer class indices"):
        F.nll_loss(mg.randn(2, 3), mg.tensor(np.array([0.0, 1.0], np.float32)))
    with raises(ValueError, "binary_cross_entropy: input must be probabilities",
                "binary_cross_entropy_with_logits"):
        F.binary_cross_entropy(mg.randn(4) * 5, mg.rand(4))
    with raises(ValueError, "reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        F.mse_loss(mg.randn(2), mg.randn(2), reduction="avg")


def test_attention_errors():
    q = mg.randn(2, 4, 5, 8)
    with raises(ValueError, "query dim 8 != key dim 4"):
        F.scaled_dot_product_attention(q, mg.randn(2, 4, 5, 4), mg.randn(2, 4, 5, 8))
    with raises(ValueError, "attn_mask of shape (3, 3) does not broadcast to (2, 4, 5, 5)"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=mg.ones(3, 3, dtype=bool))


def test_norm_errors():
    with raises(ValueError, "batch_norm: weight must have shape (3,) for an input with 3 "
                "channels, got (4,)"):
        F.batch_norm(mg.randn(2, 3, 4), mg.zeros(3), mg.ones(3), weight=mg.ones(4),
                     training=True)
    with raises(ValueError, "expected more than 1 value per channel when training"):
        F.batch_norm(mg.randn(1, 3), mg.zeros(3), mg.ones(3), training=True)
    with raises(ValueError, "group_norm: 6 channels are not divisible by num_groups=4"):
        F.group_norm(mg.randn(2, 6, 3), 4)
    with raises(ValueError, "layer_norm: input shape (2, 3) does not end with normalized_shape (4,)"):
        F.layer_norm(mg.randn(2, 3), 4)


def test_pad_errors():
    with raises(ValueError, "pad: mode must be 'constant', 'reflect', 'replicate' or 'circular'"):
        F.pad(mg.randn(1, 1, 3, 3), (1, 1), mode="mirror")
    with raises(ValueError, "reflect padding (3, 3) must be smaller than the dimension size 3"):
        F.pad(mg.randn(1, 1, 3, 3), (3, 3), mode="reflect")


def test_random_errors():
    with raises(ValueError, "bernoulli: probabilities must lie in [0, 1]"):
        mg.bernoulli(mg.tensor([0.5, 1.5]))
    with raises(ValueError, "multinomial: cannot draw 5 samples without replacement from 3"):
        mg.multinomial(mg.ones(3), 5)
    with raises(ValueError, "randint: need low < high"):
        mg.randint(3, 3, (2,))
    with raises(ValueError, "manual_seed: seed must be a non-negative int"):
        mg.manual_seed(-1)


def test_dropout_and_embedding_errors():
    with raises(ValueError, "dropout: p must be in [0, 1], got 1.5"):
        F.dropout(mg.randn(3), 1.5)
    with raises(IndexError, "embedding: indices must lie in [0, 4), got range [0, 7]"):
        F.embedding(mg.tensor([0, 7]), mg.randn(4, 2))


def test_cuda_request_without_gpu_is_explained():
    if mg.cuda_available():
        pytest.skip("a GPU is present")
    with raises(RuntimeError, "device 'cuda' requested but CuPy or a GPU is not available",
                "pip install minigen[gpu]"):
        mg.zeros(3, device="cuda")


def test_unsupported_data_is_refused_when_the_tensor_is_made():
    for data, dtype in ((None, "object"), ("abc", "<U3"), (np.ones(2, np.float16), "float16"), ([1 + 2j], "complex128")):
        with raises(TypeError, f"tensor: minigen computes with float32 and float64", f"dtype {dtype}"):
            mg.tensor(data)


def test_non_tensor_arguments_are_named():
    with raises(TypeError, "exp: x must be a Tensor, got list (wrap data with mg.tensor(...))"):
        F.exp([1.0, 2.0])
    with raises(TypeError, "linear: weight must be a Tensor, got a NumPy array of shape (2, 3)"):
        F.linear(mg.randn(4, 3), np.ones((2, 3)))
    with raises(TypeError, "add: b must be a Tensor, a number or an array, got NoneType"):
        mg.randn(3) + None
    with raises(TypeError, "cat: tensors[1] must be a Tensor, got list"):
        F.cat([mg.randn(2), [1.0]])
    with raises(TypeError, "batch_norm: running_var must be a Tensor or None, got list"):
        F.batch_norm(mg.randn(4, 3), mg.zeros(3), [1.0, 1.0, 1.0], training=True)


def test_sizes_and_options_are_checked_before_they_divide_by_zero():
    with raises(ValueError, "max_pool2d: kernel_size must be >= 1, got (0, 0)"):
        F.max_pool2d(mg.randn(1, 1, 4, 4), 0)
    with raises(ValueError, "chunk: chunks must be >= 1, got 0"):
        F.chunk(mg.randn(4), 0)
    with raises(ValueError, "group_norm: num_groups must be >= 1, got 0"):
        F.group_norm(mg.randn(2, 4, 3, 3), 0)
    with raises(ValueError, "interpolate: scale_factor must be a positive number"):
        F.interpolate(mg.randn(1, 1, 3, 3), scale_factor=0)
    with raises(TypeError, "sum: keepdim must be True or False, got 2.5"):
        F.sum(mg.randn(3, 4), dim=1, keepdim=2.5)
    with raises(ValueError, "amax: cannot reduce over an empty dimension (shape (3, 0))"):
        F.amax(mg.randn(3, 0), dim=1)
    with raises(ValueError, "Linear: out_features must be >= 1, got -1"):
        mg.nn.Linear(4, -1)
    with raises(TypeError, "Conv2d: in_channels must be an int, got 2.5"):
        mg.nn.Conv2d(2.5, 4, 3)


def test_fuzz_findings_that_were_silently_wrong():
    """Two results the fuzz found wrong without any error: min of unsigned integers (computed as
    −max(−x), which wraps around) and ``where`` with None (which became an object array)."""
    u = mg.tensor(np.array([3, 200], np.uint8))
    assert mg.minimum(u, mg.tensor(np.array([5.0, 7.0]))).numpy().tolist() == [3.0, 7.0]
    assert F.amin(u).item() == 3 and F.min(u, dim=0).values.item() == 3
    with raises(TypeError, "where: a must be a Tensor, a number or an array, got NoneType"):
        F.where(mg.tensor([True, False]), None, mg.randn(2))
    scalar = mg.tensor(2.0, requires_grad=True)
    assert F.softmax(scalar, dim=0).item() == 1.0 and F.sum(scalar, dim=0).item() == 2.0

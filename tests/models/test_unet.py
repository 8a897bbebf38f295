"""The U-Net (Eq. DIF-15): time embedding, attention, shapes, conditioning and gradients."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigen as mg
from minigen.gradcheck import gradcheck
from minigen.models.unet import AttentionBlock, ResBlock, UNet, timestep_embedding

from model_helpers import randomize


def tiny_unet(**kw):
    mg.manual_seed(0)
    args = dict(in_channels=1, channels=4, channel_mults=(1, 2), blocks=1, attention_levels=(1,), heads=2, groups=2)
    args.update(kw)
    return UNet(**args)


@pytest.mark.equation("DIF-15")
def test_distinct_steps_get_distinct_embeddings():
    emb = timestep_embedding(np.arange(1, 1001), 64, dtype="float64").detach().numpy()
    assert emb.shape == (1000, 64)
    gaps = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1)) + np.eye(1000) * 1e9
    assert gaps.min() > 1e-3                                    # every pair of the 1000 steps differs
    np.testing.assert_allclose((emb[:, :32] ** 2 + emb[:, 32:] ** 2), 1.0)     # cos² + sin² per frequency
    with pytest.raises(ValueError, match="even number"):
        timestep_embedding([1], 7)


@pytest.mark.equation("DIF-15")
def test_attention_rows_sum_to_one_and_the_fused_kernel_applies_them():
    block = randomize(AttentionBlock(8, heads=2, groups=4), seed=1, scale=0.3)
    x = mg.tensor(np.random.default_rng(0).standard_normal((2, 8, 3, 5)))
    weights = block.attention_weights(x).detach().numpy()
    assert weights.shape == (2, 2, 15, 15) and np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-12)
    _, _, v = block._qkv(x)
    by_hand = (weights @ v.detach().numpy()).transpose(0, 1, 3, 2).reshape(2, 8, 3, 5)
    expected = x.detach().numpy() + block.out(mg.tensor(by_hand)).detach().numpy()
    np.testing.assert_allclose(block(x).detach().numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.equation("DIF-15")
@settings(max_examples=8, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.sampled_from([1, 3]))
def test_output_shape_equals_input_shape_for_any_divisible_size(n, a, b, channels):
    net = tiny_unet(in_channels=channels, channel_mults=(1, 2, 2), attention_levels=(2,))
    x = mg.randn(n, channels, 4 * a, 4 * b)                  # three levels: sides divisible by 4
    assert net(x, np.arange(1, n + 1)).shape == x.shape
    assert tiny_unet(in_channels=channels, learned_variance=True)(mg.randn(n, channels, 2 * a, 2 * b),
                                                                  [1] * n).shape == (n, 2 * channels, 2 * a, 2 * b)


def test_bad_inputs_are_refused():
    net = tiny_unet(channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match=r"divisible by 4 \(3 levels\), got \(6, 8\)"):
        net(mg.randn(1, 1, 6, 8), [1])
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 1, H, W\)"):
        net(mg.randn(1, 3, 8, 8), [1])
    with pytest.raises(ValueError, match="attention_levels must lie in 0..1"):
        UNet(channel_mults=(1, 2), attention_levels=(2,))


@pytest.mark.equation("DIF-15")
@pytest.mark.parametrize("scale_shift", [True, False])
def test_time_and_class_reach_the_output(scale_shift):
    """Both ways of feeding the time (scale-shift norm, addition) and the class embedding change the output."""
    net = randomize(tiny_unet(scale_shift=scale_shift, num_classes=3), seed=2, scale=0.3)
    x = mg.tensor(np.random.default_rng(1).standard_normal((1, 1, 4, 4)))
    outs = [net(x, [t], [0]).detach().numpy() for t in (1, 2, 500)] + [net(x, [2], [1]).detach().numpy(), net(x, [2]).detach().numpy()]
    for i in range(len(outs)):
        for j in range(i):
            assert np.abs(outs[i] - outs[j]).max() > 1e-6, (i, j)


@pytest.mark.equation("DIF-15")
def test_unet_gradient_matches_finite_differences():
    net = randomize(tiny_unet(channel_mults=(1, 2), attention_levels=(0, 1)), seed=3, scale=0.3)
    x = mg.tensor(np.random.default_rng(2).standard_normal((1, 1, 4, 4)), requires_grad=True)
    gradcheck(lambda x: net(x, [7]), [x])


def test_blocks_start_as_the_identity():
    mg.manual_seed(0)
    x = mg.randn(2, 8, 4, 4)
    np.testing.assert_array_equal(ResBlock(8, 8, emb_dim=16, groups=4)(x, mg.randn(2, 16)).detach().numpy(), x.detach().numpy())
    np.testing.assert_array_equal(AttentionBlock(8, 2, 4)(x).detach().numpy(), x.detach().numpy())
    assert np.all(tiny_unet()(mg.randn(2, 1, 4, 4), [1, 2]).detach().numpy() == 0)      # the output layer starts at 0

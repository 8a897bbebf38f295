"""2-D toy densities: samples and log_prob describe the same normalised density."""
import math
import re

import numpy as np
import pytest

from minigen.data import TOY_DATASETS, DataError, Grid25, Ring8, get_toy, load_toy, toy_dataset

NAMES = sorted(TOY_DATASETS)
# grid step for the numerical integrals: half the smallest length scale of each density
STEP = {"ring8": 0.005, "grid25": 0.025, "moons": 0.05, "swissroll": 0.1, "checkerboard": 0.05}


def raises(exc, *fragments):
    return pytest.raises(exc, match="(?s)" + ".*".join(re.escape(f) for f in fragments))


def grid(density, step):
    """Cell midpoints covering density.bounds, and the cell area."""
    (x0, x1), (y0, y1) = density.bounds
    xs, ys = np.arange(x0 + step / 2, x1, step), np.arange(y0 + step / 2, y1, step)
    return np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2), step * step


@pytest.mark.parametrize("name", NAMES)
def test_samples_shape_dtype_and_seeding(name):
    x = load_toy(name, 500, seed=1)
    assert x.shape == (500, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_array_equal(x, load_toy(name, 500, seed=1))
    assert not np.array_equal(x, load_toy(name, 500, seed=2))
    assert load_toy(name, 0).shape == (0, 2)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_integrates_to_one_and_matches_sample_moments(name):
    density = get_toy(name)
    pts, area = grid(density, STEP[name])
    lp = density.log_prob(pts)
    assert lp.dtype == np.float64 and lp.shape == (len(pts),)
    p = np.exp(lp) * area
    assert abs(p.sum() - 1) < 1e-3
    mean = p @ pts
    cov = (pts - mean).T @ ((pts - mean) * p[:, None])
    x = load_toy(name, 20000, seed=0).astype(np.float64)
    # sample moments agree with the density's within ~5 standard errors
    se = np.sqrt(np.diag(cov) / len(x))
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.05 * np.abs(cov).max())
    assert np.isfinite(density.log_prob(x)).all()  # every sample lies where the density lives


@pytest.mark.parametrize("density", [Ring8(), Ring8(radius=2.0, std=0.1, modes=5), Grid25()])
def test_gaussian_mixture_log_prob_is_the_mixture_formula(density, rng):
    centers, s = density.mode_centers, density.mode_std
    x = centers[rng.integers(len(centers), size=50)] + 2 * s * rng.standard_normal((50, 2))
    d2 = ((x[:, None] - centers[None]) ** 2).sum(-1)
    expected = np.log(np.mean(np.exp(-d2 / (2 * s * s)) / (2 * np.pi * s * s), axis=1))
    np.testing.assert_allclose(density.log_prob(x), expected, rtol=1e-12)


def test_mode_centers():
    ring = Ring8()
    assert ring.mode_centers.shape == (8, 2) and ring.mode_std == 0.01
    np.testing.assert_allclose(np.hypot(*ring.mode_centers.T), 1.0)
    grid25 = Grid25()
    assert grid25.mode_centers.shape == (25, 2) and grid25.mode_std == 0.05
    assert sorted(set(grid25.mode_centers.ravel())) == [-4, -2, 0, 2, 4]
    # a sample lies within 3 std of its mode (the PacGAN "high quality" criterion)
    x = ring.sample(1000, np.random.default_rng(0)).astype(np.float64)
    nearest = np.sqrt(((x[:, None] - ring.mode_centers[None]) ** 2).sum(-1)).min(1)
    assert (nearest < 3 * ring.mode_std).mean() > 0.98


@pytest.mark.parametrize("name", ["moons", "swissroll"])
def test_curve_quadrature_has_converged(name):
    density = get_toy(name)
    x, _ = grid(density, 0.1)  # the whole plotting box, deep tails included
    coarse = density.log_prob(x)
    density.quadrature_scale = 4.0
    np.testing.assert_allclose(coarse, density.log_prob(x), rtol=0, atol=1e-8)


def test_checkerboard_support():
    board = get_toy("checkerboard")
    x = load_toy("checkerboard", 5000).astype(np.float64)
    cell = np.floor((x + 4) / 2).astype(int)  # board cell indices 0..3
    assert ((cell >= 0) & (cell <= 3)).all() and ((cell.sum(1) % 2) == 0).all()
    np.testing.assert_allclose(board.log_prob(x), -math.log(32))
    white = np.array([[-3.0, -1.0], [1.0, -1.0], [5.0, 0.0], [-1.0, -3.0]])
    assert np.isneginf(board.log_prob(white)).all()


def test_errors():
    with raises(DataError, "unknown toy dataset 'ring9'", "ring8"):
        load_toy("ring9", 10)
    with raises(DataError, "n: expected an integer >= 0, got -1"):
        load_toy("moons", -1)
    with raises(DataError, "x must have shape (n, 2), got (3,)"):
        Ring8().log_prob(np.zeros(3))
    with raises(DataError, "std must be > 0, got 0"):
        Ring8(std=0)


def test_toy_datasets_for_training_are_fixed_disjoint_draws():
    train, test = toy_dataset("moons", "train"), toy_dataset("moons", "test")
    assert (len(train), len(test)) == (50000, 10000) and train.image_shape == (2,)
    assert train.labels is None and train.images.dtype == np.float32
    np.testing.assert_array_equal(test.images, toy_dataset("moons", "test").images)
    shared = {tuple(p) for p in train.images.tolist()} & {tuple(p) for p in test.images.tolist()}
    assert not shared                                                     # different seeds: no shared points
    with raises(DataError, "moons: unknown split 'valid'"):
        toy_dataset("moons", "valid")

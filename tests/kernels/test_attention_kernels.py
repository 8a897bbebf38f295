"""Fused scaled-dot-product attention kernels against the NumPy reference.

* the reference backward against finite differences of the reference forward (float64);
* the Numba CPU kernels against the reference on hypothesis-drawn shapes and masks
  (none / boolean / additive / causal / fully masked rows), float64 tight, float32 ~1e-4;
* the CuPy kernels likewise, on a GPU (``@pytest.mark.gpu``, skipped without one); without a GPU
  the CuPy module's products still run here (``cuda_on_cpu``: cuBLAS carried out by NumPy on the
  same pointers and strides), with its two CUDA kernels replaced by NumPy twins.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cuda_on_cpu
from minigen import backend
from minigen.kernels import reference as ref
from minigen.kernels.cpu import attention as cpu

MASKS = ("none", "bool", "additive", "causal", "causal+bool", "dead-rows", "key-padding")
TOL = {np.float64: dict(rtol=1e-10, atol=1e-11), np.float32: dict(rtol=1e-4, atol=2e-5)}


# --------------------------------------------------------------------------- helpers


def make_case(rng, b, h, tq, tk, d, dv, kind, dtype):
    """q, k, v, grad_out, mask, causal for one test case (mask already broadcast)."""
    q = rng.standard_normal((b, h, tq, d)).astype(dtype)
    k = rng.standard_normal((b, h, tk, d)).astype(dtype)
    v = rng.standard_normal((b, h, tk, dv)).astype(dtype)
    g = rng.standard_normal((b, h, tq, dv)).astype(dtype)
    full = (b, h, tq, tk)
    mask, causal = None, False
    if kind == "bool":
        mask = rng.random(full) < 0.7
    elif kind == "additive":
        m = rng.standard_normal(full)
        m[rng.random(full) < 0.2] = -np.inf
        mask = m.astype(dtype)
    elif kind == "causal":
        causal = True
    elif kind == "causal+bool":  # a read-only broadcast view with zero strides
        causal = True
        mask = np.broadcast_to(rng.random((1, 1, tq, tk)) < 0.8, full)
    elif kind == "dead-rows":  # some query rows see no key at all
        m = rng.random(full) < 0.6
        m[..., rng.random(tq) < 0.4, :] = False
        m[0, 0, 0, :] = False
        mask = m
    elif kind == "key-padding":  # additive (B, 1, 1, Tk) padding mask, broadcast
        pad = np.where(rng.random((b, 1, 1, tk)) < 0.3, -np.inf, 0.0).astype(dtype)
        mask = np.broadcast_to(pad, full)
    return q, k, v, g, mask, causal


def assert_close(actual, expected, dtype, what):
    tol = TOL[dtype]
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale,
                               err_msg=what)


def assert_lse_close(actual, expected, dtype):
    dead = np.isneginf(expected)
    assert np.array_equal(np.isneginf(actual), dead), "fully masked rows must give lse = -inf"
    assert_close(np.where(dead, 0, actual), np.where(dead, 0, expected), dtype, "lse")


def check_against_reference(impl, q, k, v, g, mask, causal, scale=None, asnumpy=np.asarray,
                            to_device=lambda a: a):
    dtype = q.dtype.type
    out_r, lse_r = ref.attention_forward(q, k, v, mask, causal, scale)
    grads_r = ref.attention_backward(q, k, v, out_r, lse_r, g, mask, causal, scale)

    dev = [None if a is None else to_device(a) for a in (q, k, v, g, mask)]
    out, lse = impl.attention_forward(dev[0], dev[1], dev[2], dev[4], causal, scale)
    out, lse = asnumpy(out), asnumpy(lse)
    for a, name in ((out, "out"), (lse, "lse")):
        assert a.dtype == q.dtype and a.flags.c_contiguous, name
    assert out.shape == out_r.shape and lse.shape == lse_r.shape
    assert_close(out, out_r, dtype, "out")
    assert_lse_close(lse, lse_r, dtype)

    grads = impl.attention_backward(dev[0], dev[1], dev[2], to_device(out_r), to_device(lse_r),
                                    dev[3], dev[4], causal, scale)
    for a, e, name in zip(grads, grads_r, ("dq", "dk", "dv")):
        a = asnumpy(a)
        assert a.dtype == q.dtype and a.flags.c_contiguous and a.shape == e.shape, name
        assert_close(a, e, dtype, name)


# --------------------------------------------------------------------------- reference


def _loss(q, k, v, g, mask, causal):
    return float(np.sum(ref.attention_forward(q, k, v, mask, causal)[0] * g))


@pytest.mark.parametrize("kind,tq,tk", [("none", 3, 4), ("bool", 4, 4), ("additive", 2, 5),
                                        ("causal", 5, 3), ("dead-rows", 3, 4)])
def test_reference_backward_matches_finite_differences(kind, tq, tk):
    rng = np.random.default_rng(7)
    q, k, v, g, mask, causal = make_case(rng, 1, 2, tq, tk, 3, 2, kind, np.float64)
    out, lse = ref.attention_forward(q, k, v, mask, causal)
    analytic = ref.attention_backward(q, k, v, out, lse, g, mask, causal)
    eps = 1e-6
    for x, dx in zip((q, k, v), analytic):
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            saved = x[idx]
            x[idx] = saved + eps
            up = _loss(q, k, v, g, mask, causal)
            x[idx] = saved - eps
            down = _loss(q, k, v, g, mask, causal)
            x[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- CPU kernels


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), tq=st.integers(1, 17), tk=st.integers(1, 17),
       d=st.integers(1, 9), dv=st.integers(1, 9), kind=st.sampled_from(MASKS),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**31 - 1))
def test_cpu_matches_reference(b, h, tq, tk, d, dv, kind, dtype, seed):
    rng = np.random.default_rng(seed)
    check_against_reference(cpu, *make_case(rng, b, h, tq, tk, d, dv, kind, dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,tq,tk", [("none", 131, 150), ("causal", 150, 140),
                                        ("key-padding", 3, 200), ("dead-rows", 129, 129)])
def test_cpu_long_rows(dtype, kind, tq, tk):
    """Rows of >= LONG keys take the dot-product form of P V and dS K."""
    assert max(tq, tk) >= cpu.LONG
    rng = np.random.default_rng(3)
    check_against_reference(cpu, *make_case(rng, 1, 2, tq, tk, 5, 7, kind, dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_explicit_scale_layouts_and_leading_dims(dtype):
    rng = np.random.default_rng(5)
    q, k, v, g, mask, _ = make_case(rng, 2, 3, 6, 9, 4, 5, "bool", dtype)
    # transposed (non-contiguous) views of (B, T, H, d) storage, as a model produces them
    qt, kt, vt, gt = (np.ascontiguousarray(a.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
                      for a in (q, k, v, g))
    assert not qt.flags.c_contiguous
    check_against_reference(cpu, qt, kt, vt, gt, mask, False, scale=0.3)
    # any number of leading dims, like the reference
    check_against_reference(cpu, q[0], k[0], v[0], g[0], mask[0], True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_finite_large_negative_mask_is_not_treated_as_masked(dtype):
    """-1e9 (a common 'mask' value) stays a finite score: every row keeps its softmax."""
    rng = np.random.default_rng(11)
    q, k, v, g, _, _ = make_case(rng, 1, 1, 4, 5, 3, 3, "none", dtype)
    mask = np.full((1, 1, 4, 5), -1e9, dtype)
    mask[0, 0, 1, 2] = 0
    check_against_reference(cpu, q, k, v, g, mask, False)


def test_backend_dispatches_to_cpu_kernels(monkeypatch):
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    assert backend.get_kernel("attention_forward", "cpu") is cpu.attention_forward
    assert backend.get_kernel("attention_backward", "cpu") is cpu.attention_backward


# --------------------------------------------------------------------------- the GPU module, on the CPU


def _softmax_on_host(dtype):
    """NumPy twin of the row-softmax kernel: in place, with the row's lse; no visible key: P = 0, -inf."""
    def launch(grid, block, args):
        s, lse, tq, tk, causal = args
        rows, flat_lse = s.reshape(-1, int(tk)), lse.reshape(-1)
        visible = _visible(rows.shape[0], int(tq), int(tk), bool(causal))
        shown = np.where(visible, rows, -np.inf)
        m = shown.max(axis=1, initial=-np.inf)
        dead = np.isneginf(m)
        e = np.where(visible & ~dead[:, None], np.exp(shown - np.where(dead, 0, m)[:, None]), 0)
        total = np.where(dead, 1, e.sum(axis=1))
        rows[...] = e / total[:, None]
        flat_lse[...] = np.where(dead, -np.inf, m + np.log(total))
    return launch


def _visible(n_rows, tq, tk, causal):
    query = np.arange(n_rows)[:, None] % tq
    return np.arange(tk)[None, :] <= query if causal else np.ones((n_rows, tk), bool)


def _backward_ds_on_host(s, dp, lse, rowdot, tq, tk, causal):
    """NumPy twin of ``_backward_ds``: P rebuilt from the lse, dS = P (dP - rowsum(dO O))."""
    rows, l = s.reshape(-1, tk), lse.reshape(-1, 1)
    keep = _visible(rows.shape[0], tq, tk, causal) & ~np.isneginf(l) & ~np.isneginf(rows)
    p = np.where(keep, np.exp(np.where(keep, rows - np.where(np.isneginf(l), 0, l), 0)), 0)
    ds = p * (dp.reshape(-1, tk) - rowdot.reshape(-1, 1))
    return cuda_on_cpu.host(p.reshape(s.shape)), cuda_on_cpu.host(ds.reshape(s.shape))


@pytest.fixture(scope="module")
def gpu_on_cpu():
    with pytest.MonkeyPatch.context() as mp:
        module = cuda_on_cpu.load_gpu_module("attention", mp)
        mp.setattr(module, "_softmax_kernel", _softmax_on_host)
        mp.setattr(module, "_backward_ds", _backward_ds_on_host)
        yield module


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 2), h=st.integers(1, 3), tq=st.integers(1, 9), tk=st.integers(1, 9),
       d=st.integers(1, 5), dv=st.integers(1, 5), kind=st.sampled_from(MASKS),
       dtype=st.sampled_from([np.float64, np.float32]), one_head_per_group=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_gpu_module_products_on_cpu(gpu_on_cpu, b, h, tq, tk, d, dv, kind, dtype, one_head_per_group, seed):
    """The four strided-batched products (their transposes, strides and the folded scale), with the score
    buffer holding all heads or one head at a time."""
    with pytest.MonkeyPatch.context() as mp:
        if one_head_per_group:
            mp.setattr(gpu_on_cpu, "_SCORE_BYTES", 1)
        case = make_case(np.random.default_rng(seed), b, h, tq, tk, d, dv, kind, dtype)
        check_against_reference(gpu_on_cpu, *case, scale=None if seed % 2 else 0.3,
                                to_device=cuda_on_cpu.host)


# --------------------------------------------------------------------------- GPU kernels


def _cupy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # CuPy installed but no driver / device
        pytest.skip(f"no usable CUDA device: {exc}")
    from minigen.kernels.gpu import attention as gpu

    return cupy, gpu


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 7, 5, 3), (1, 2, 9, 4, 8, 6), (2, 1, 3, 13, 1, 9),
                                   (1, 2, 70, 300, 16, 16)])
def test_gpu_matches_reference(shape, kind, dtype):
    cupy, gpu = _cupy()
    rng = np.random.default_rng(sum(shape))
    check_against_reference(gpu, *make_case(rng, *shape, kind, dtype), asnumpy=cupy.asnumpy,
                            to_device=cupy.asarray)

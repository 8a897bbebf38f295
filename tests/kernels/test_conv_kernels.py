"""The conv2d kernels -- forward, input-gradient (= conv_transpose2d), weight-gradient --
against the NumPy reference, which is their specification.

* Numba (``minigen.kernels.cpu.conv``): hypothesis-generated geometries in float64
  (tight tolerance) and float32, explicit edge cases, the adjoint identities that
  make the three ops one family, and the benchmark shapes at a small batch.
* CuPy (``minigen.kernels.gpu.conv``): the same comparisons, marked ``gpu``; they
  skip where CuPy or a GPU is missing. Without a GPU the same module still runs here, its
  CUDA source compiled for the host and cuBLAS carried out by NumPy (``cuda_on_cpu``).

Channel counts are drawn on both sides of the CPU kernels' switch between the
dot-product form (many output channels per group) and the axpy form (few), so
every code path meets every geometry.
"""
from __future__ import annotations

import contextlib

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cuda_on_cpu
from minigen.kernels import reference as ref
from minigen.kernels.cpu import conv as cpu

OPS = ("conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad")


# --------------------------------------------------------------------------- helpers


@st.composite
def geometries(draw, max_batch=3):
    """A valid conv2d geometry: shapes, stride, padding, dilation, groups."""
    groups = draw(st.integers(1, 3))
    cg = draw(st.sampled_from([1, 2, 3, 8, 9]))      # input channels per group
    og = draw(st.sampled_from([1, 2, 5, 8, 12]))     # output channels per group
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    # the (padded) input must hold the dilated kernel
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 11))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 11))
    n = draw(st.integers(1, max_batch))
    return dict(x_shape=(n, cg * groups, h, w), w_shape=(og * groups, cg, kh, kw),
                stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)


def _out_shape(geo):
    n, _, h, w = geo["x_shape"]
    c_out, _, kh, kw = geo["w_shape"]
    size = [ref.conv_output_size(s, k, st_, p, d) for s, k, st_, p, d in
            zip((h, w), (kh, kw), geo["stride"], geo["padding"], geo["dilation"])]
    return (n, c_out, *size)


def _arrays(geo, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(dtype)
                 for s in (geo["x_shape"], geo["w_shape"], _out_shape(geo)))


def _args(geo):
    return geo["stride"], geo["padding"], geo["dilation"], geo["groups"]


def _run_all(module, x, w, g, geo):
    """The three ops of ``module`` on one geometry."""
    args = _args(geo)
    return (module.conv2d_forward(x, w, *args),
            module.conv2d_input_grad(g, w, geo["x_shape"], *args),
            module.conv2d_weight_grad(x, g, geo["w_shape"], *args))


def _assert_close(actual, expected, dtype, name=""):
    """float64: agreement to ~1e-10 of the result's scale; float32: ~1e-4."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, name
    assert actual.dtype == dtype, name
    tol = 1e-10 if dtype == np.float64 else 1e-4
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=name)


def _check_against_reference(module, geo, dtype, to_device=np.asarray, to_host=np.asarray):
    x, w, g = _arrays(geo, dtype)
    expected = _run_all(ref, x.astype(np.float64), w.astype(np.float64), g.astype(np.float64),
                        geo)
    got = _run_all(module, to_device(x), to_device(w), to_device(g), geo)
    for name, a, b in zip(OPS, got, expected):
        host = to_host(a)
        assert host.flags.c_contiguous, name
        _assert_close(host, b, dtype, name)


def _adjoint_gaps(module, geo, to_device=np.asarray, to_host=np.asarray):
    """Relative gaps in <conv(x,w), g> = <x, conv^T(g,w)> = <w, conv_w(x,g)>."""
    x, w, g = _arrays(geo, np.float64, seed=1)
    y, gx, gw = (to_host(a) for a in _run_all(module, to_device(x), to_device(w),
                                                 to_device(g), geo))
    lhs = float(np.vdot(y, g))
    scale = max(1.0, abs(lhs), float(np.abs(y).sum() * np.abs(g).max(initial=0.0)))
    return abs(lhs - float(np.vdot(x, gx))) / scale, abs(lhs - float(np.vdot(w, gw))) / scale


# Geometries every implementation must get right, named for what they exercise.
EDGE_CASES = {
    "batch1": dict(x_shape=(1, 16, 7, 9), w_shape=(8, 16, 3, 3), stride=(1, 1),
                   padding=(1, 1), dilation=(1, 1), groups=1),
    "kernel1x1": dict(x_shape=(2, 9, 5, 7), w_shape=(12, 9, 1, 1), stride=(1, 1),
                      padding=(0, 0), dilation=(1, 1), groups=1),
    "kernel1x1_bottleneck": dict(x_shape=(2, 64, 9, 11), w_shape=(32, 64, 1, 1), stride=(1, 1),
                                 padding=(0, 0), dilation=(1, 1), groups=1),
    "kernel1x1_one_output": dict(x_shape=(2, 64, 6, 6), w_shape=(1, 64, 1, 1), stride=(1, 1),
                                 padding=(0, 0), dilation=(1, 1), groups=1),
    "kernel1x1_grouped": dict(x_shape=(2, 16, 5, 5), w_shape=(16, 8, 1, 1), stride=(1, 1),
                              padding=(0, 0), dilation=(1, 1), groups=2),
    "kernel1x1_padded_strided": dict(x_shape=(2, 8, 5, 5), w_shape=(8, 8, 1, 1), stride=(2, 2),
                                     padding=(2, 1), dilation=(1, 1), groups=1),
    "kernel_equals_padded_input": dict(x_shape=(2, 8, 5, 4), w_shape=(9, 8, 7, 6),
                                       stride=(1, 1), padding=(1, 1), dilation=(1, 1),
                                       groups=1),
    "dilated_kernel_fills_input": dict(x_shape=(1, 3, 5, 5), w_shape=(2, 3, 3, 3),
                                       stride=(1, 1), padding=(0, 0), dilation=(2, 2),
                                       groups=1),
    "stride_larger_than_kernel": dict(x_shape=(2, 8, 9, 8), w_shape=(8, 8, 2, 2),
                                      stride=(3, 3), padding=(0, 1), dilation=(1, 1),
                                      groups=1),
    "depthwise": dict(x_shape=(2, 6, 8, 8), w_shape=(6, 1, 3, 3), stride=(1, 1),
                      padding=(1, 1), dilation=(1, 1), groups=6),
    "grouped_many_channels": dict(x_shape=(2, 32, 6, 6), w_shape=(32, 16, 3, 3), stride=(1, 2),
                                  padding=(1, 0), dilation=(1, 1), groups=2),
    "single_input_channel": dict(x_shape=(3, 1, 11, 11), w_shape=(16, 1, 7, 7), stride=(1, 1),
                                 padding=(3, 3), dilation=(1, 1), groups=1),
    "single_output_channel": dict(x_shape=(2, 12, 9, 9), w_shape=(1, 12, 4, 4), stride=(2, 2),
                                  padding=(1, 1), dilation=(1, 1), groups=1),
    "one_output_position": dict(x_shape=(2, 10, 3, 3), w_shape=(10, 10, 3, 3), stride=(2, 2),
                                padding=(0, 0), dilation=(1, 1), groups=1),
}

# The benchmark layers (CONV_CASES in minigen/bench.py) at batch 2.
BENCH_SHAPES = {
    "c1": dict(x_shape=(2, 1, 28, 28), w_shape=(64, 1, 5, 5), stride=(2, 2), padding=(2, 2),
               dilation=(1, 1), groups=1),
    "c2": dict(x_shape=(2, 64, 14, 14), w_shape=(128, 64, 3, 3), stride=(1, 1), padding=(1, 1),
               dilation=(1, 1), groups=1),
    "c3": dict(x_shape=(2, 64, 28, 28), w_shape=(64, 64, 3, 3), stride=(1, 1), padding=(1, 1),
               dilation=(1, 1), groups=1),
    "pcnn": dict(x_shape=(2, 1, 28, 28), w_shape=(64, 1, 7, 7), stride=(1, 1), padding=(3, 3),
                 dilation=(1, 1), groups=1),
    "pw": dict(x_shape=(2, 64, 28, 28), w_shape=(32, 64, 1, 1), stride=(1, 1), padding=(0, 0),
               dilation=(1, 1), groups=1),
    # conv_transpose2d (64,128,7,7) -> 64, k4 s2 p1, seen as the conv2d it is the adjoint of
    "convT": dict(x_shape=(2, 64, 14, 14), w_shape=(128, 64, 4, 4), stride=(2, 2),
                  padding=(1, 1), dilation=(1, 1), groups=1),
}


# --------------------------------------------------------------------------- Numba (CPU)


@contextlib.contextmanager
def _paths(which):
    """``dispatched``: the kernels as they choose; ``packed``: the unrolled-patch path for short
    reductions switched off, so the packed kernels also meet the small geometries drawn here."""
    saved = cpu._SHORT_FORWARD, cpu._SHORT_WEIGHT_GRAD
    if which == "packed":
        cpu._SHORT_FORWARD = cpu._SHORT_WEIGHT_GRAD = 0
    try:
        yield
    finally:
        cpu._SHORT_FORWARD, cpu._SHORT_WEIGHT_GRAD = saved


PATHS = pytest.mark.parametrize("path", ["dispatched", "packed"])


@PATHS
@settings(max_examples=60, deadline=None)
@given(geo=geometries())
def test_cpu_matches_reference_float64(path, geo):
    with _paths(path):
        _check_against_reference(cpu, geo, np.float64)


@PATHS
@settings(max_examples=30, deadline=None)
@given(geo=geometries())
def test_cpu_matches_reference_float32(path, geo):
    with _paths(path):
        _check_against_reference(cpu, geo, np.float32)


@PATHS
@settings(max_examples=40, deadline=None)
@given(geo=geometries())
def test_cpu_adjoint_identities(path, geo):
    """<conv(x,w), g> = <x, conv^T(g,w)> = <w, conv_w(x,g)>: the input- and
    weight-gradient kernels are the adjoints of the forward kernel."""
    with _paths(path):
        gap_x, gap_w = _adjoint_gaps(cpu, geo)
    assert gap_x < 1e-12 and gap_w < 1e-12


@settings(max_examples=25, deadline=None)
@given(geo=geometries(), shares=st.sampled_from([2, 3, 5]))
def test_cpu_work_split_boundaries(geo, shares):
    """Small problems normally run on one thread; cut them into several shares (more
    than there are threads is fine) so share boundaries fall inside images, rows and
    stride phases."""
    original = cpu._threads
    cpu._threads = lambda work: shares
    try:
        with _paths("packed"):
            _check_against_reference(cpu, geo, np.float64)
    finally:
        cpu._threads = original


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_cpu_edge_cases(case, dtype):
    _check_against_reference(cpu, EDGE_CASES[case], dtype)


@pytest.mark.parametrize("case", sorted(BENCH_SHAPES))
def test_cpu_benchmark_shapes_float32(case):
    _check_against_reference(cpu, BENCH_SHAPES[case], np.float32)


def test_cpu_short_reductions_take_the_unrolled_patches():
    """A first layer (one input channel, up to 7x7) takes im2col + one BLAS product; longer reductions,
    1x1 kernels and groups keep the packed kernels. The values are checked above on both paths."""
    assert cpu._short_reduction((64, 1, 4, 4), 1, cpu._SHORT_FORWARD)        # DCGAN's first layer
    assert cpu._short_reduction((64, 1, 7, 7), 1, cpu._SHORT_WEIGHT_GRAD)    # PixelCNN's 7x7 mask A
    assert not cpu._short_reduction((64, 16, 3, 3), 1, cpu._SHORT_FORWARD)   # 144 long
    assert not cpu._short_reduction((64, 8, 1, 1), 1, cpu._SHORT_FORWARD)    # 1x1: pointwise or packed
    assert not cpu._short_reduction((6, 1, 3, 3), 6, cpu._SHORT_FORWARD)     # depthwise


def test_cpu_pointwise_path_is_taken_only_where_it_is_a_matrix_product():
    """1x1, stride 1, no padding, one group and >= _FEW channels each side: plain matmul
    on the NCHW arrays (the cases above check its values); anything else keeps the
    general kernels."""
    few = cpu._FEW
    assert cpu._pointwise((32, 64, 1, 1), (1, 1), (0, 0), 1)
    assert cpu._pointwise((few, few, 1, 1), (1, 1), (0, 0), 1)
    assert not cpu._pointwise((32, 64, 3, 3), (1, 1), (1, 1), 1)    # not 1x1
    assert not cpu._pointwise((32, 64, 1, 1), (2, 2), (0, 0), 1)    # strided
    assert not cpu._pointwise((32, 64, 1, 1), (1, 1), (1, 0), 1)    # padded
    assert not cpu._pointwise((32, 32, 1, 1), (1, 1), (0, 0), 2)    # grouped
    assert not cpu._pointwise((1, 64, 1, 1), (1, 1), (0, 0), 1)     # too thin for BLAS
    assert not cpu._pointwise((64, few - 1, 1, 1), (1, 1), (0, 0), 1)



@pytest.mark.parametrize("block", ["_dot_block_4x4", "_dot_block_2x4"])
@settings(max_examples=25, deadline=None)
@given(nrows=st.integers(1, 9), mvalid=st.integers(1, 9), k=st.integers(1, 40),
       accumulate=st.booleans(), stride=st.integers(1, 3))
def test_cpu_dot_blocks_match_numpy(block, nrows, mvalid, k, accumulate, stride):
    """Both register blocks (4 x 4 for AVX-512, 2 x 4 for AVX2 -- only one of them runs
    inside the convolutions of a given machine) against a NumPy product, edges included:
    ``out[off[t] + m*stride] (+)= A[m] . B[boff[t]]``."""
    rng = np.random.default_rng(nrows * 1000 + mvalid * 100 + k)
    lda, a0 = k + 3, 2
    rows_a, rows_b = -(-mvalid // 4) * 4, -(-nrows // 4) * 4      # readable padding rows
    a = rng.standard_normal(a0 + rows_a * lda)
    b = rng.standard_normal(rows_b * (k + 1) + 5)
    boff = np.arange(rows_b, dtype=np.int64) * (k + 1) + 1
    off = np.arange(rows_b, dtype=np.int64) * (mvalid * stride + 2)
    out = rng.standard_normal(int(off[-1]) + mvalid * stride + 1)
    expected = out.copy() if accumulate else np.full_like(out, np.nan)
    if not accumulate:
        out[:] = np.nan                  # every valid entry must be written
    rows = a[a0:a0 + rows_a * lda].reshape(rows_a, lda)[:mvalid, :k]
    for t in range(nrows):
        idx = off[t] + np.arange(mvalid) * stride
        expected[idx] = (expected[idx] if accumulate else 0) + rows @ b[boff[t]:boff[t] + k]
    getattr(cpu, block)(a, a0, lda, b, boff, nrows, k, out, off, stride, mvalid, accumulate)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)

def test_cpu_non_contiguous_inputs():
    """Strided views and transposed arrays give the results of their contiguous copies."""
    rng = np.random.default_rng(3)
    geo = dict(x_shape=(2, 8, 7, 9), w_shape=(12, 8, 3, 2), stride=(2, 1), padding=(1, 0),
               dilation=(1, 2), groups=1)
    x = rng.standard_normal((2, 7, 9, 16))[..., ::2].transpose(0, 3, 1, 2)   # NHWC view
    w = np.asfortranarray(rng.standard_normal(geo["w_shape"]))
    g = rng.standard_normal((2,) + _out_shape(geo)[1:] + (2,))[..., 0]      # strided view
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or g.flags.c_contiguous)
    got = _run_all(cpu, x, w, g, geo)
    expected = _run_all(ref, np.ascontiguousarray(x), np.ascontiguousarray(w),
                        np.ascontiguousarray(g), geo)
    for name, a, b in zip(OPS, got, expected):
        assert a.flags.c_contiguous, name
        assert not any(np.shares_memory(a, b_) for b_ in (x, w, g)), name
        _assert_close(a, b, np.float64, name)


def test_cpu_results_do_not_depend_on_thread_count():
    geo = BENCH_SHAPES["c2"]
    x, w, g = _arrays(geo, np.float64)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = _run_all(cpu, x, w, g, geo)
    finally:
        numba.set_num_threads(previous)
    for name, a, b in zip(OPS, _run_all(cpu, x, w, g, geo), serial):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)


def test_cpu_mixed_and_other_dtypes():
    """Mixed float32/float64 promotes like NumPy; integer inputs go to the reference."""
    geo = EDGE_CASES["batch1"]
    x, w, g = _arrays(geo, np.float64)
    y = cpu.conv2d_forward(x.astype(np.float32), w, *_args(geo))
    assert y.dtype == np.float64
    _assert_close(y, ref.conv2d_forward(x.astype(np.float32).astype(np.float64), w,
                                        *_args(geo)), np.float64)
    xi, wi = x.round().astype(np.int64), w.round().astype(np.int64)
    np.testing.assert_array_equal(cpu.conv2d_forward(xi, wi, *_args(geo)),
                                  ref.conv2d_forward(xi, wi, *_args(geo)))


def test_cpu_dispatch_picks_numba_kernels(monkeypatch):
    from minigen import backend

    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    for name in OPS:
        assert backend.get_kernel(name, "cpu") is getattr(cpu, name)


# --------------------------------------------------------------------------- the GPU module, on the CPU


@pytest.fixture(scope="module")
def gpu_on_cpu():
    """``kernels/gpu/conv.py`` against a NumPy stand-in for CuPy, its CUDA kernels compiled for the host
    (see ``cuda_on_cpu``)."""
    if cuda_on_cpu.compiler() is None:
        pytest.skip("needs a C++ compiler to run the CUDA source on the host")
    with pytest.MonkeyPatch.context() as mp:
        module = cuda_on_cpu.load_gpu_module("conv", mp)
        arrays_and_geometry = ("ptr", "ptr") + ("int",) * 14
        mp.setattr(module, "_kernels", cuda_on_cpu.EmulatedKernels(
            module._SOURCE, "conv", {"im2col": arrays_and_geometry + ("int",), "col2im": arrays_and_geometry}))
        implicit = module.conv_implicit
        operands_and_geometry = ("ptr", "ptr", "ptr", "iptr", "iptr") + ("int",) * 16
        mp.setattr(implicit, "_kernels", cuda_on_cpu.EmulatedKernels(
            implicit._SOURCE, "conv_igemm", {f"{product}{bm}": operands_and_geometry
                                             for product in ("forward", "input_grad", "weight_grad")
                                             for bm in implicit.BLOCK_ROWS}))
        mp.setattr(module, "ALGORITHM", "columns")      # no GPU timer here: each test picks its algorithm
        yield module


@settings(max_examples=60, deadline=None)
@given(geo=geometries(max_batch=4), col_bytes=st.sampled_from([1, 256 * 1024 * 1024]),
       threads=st.sampled_from([1, 1 << 18]))
def test_gpu_module_on_cpu_matches_reference(gpu_on_cpu, geo, col_bytes, threads):
    """The CUDA kernels' index arithmetic and every cuBLAS call's layout arguments, without a GPU: one
    image per column buffer or all at once, one share of the images per block or as many as there are."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gpu_on_cpu, "_COL_BYTES", col_bytes)
        mp.setattr(gpu_on_cpu, "_TARGET_THREADS", threads)
        for dtype in (np.float64, np.float32):
            _check_against_reference(gpu_on_cpu, geo, dtype, cuda_on_cpu.host)


def test_gpu_module_on_cpu_pointwise_and_launches(gpu_on_cpu):
    """A 1x1 stride-1 convolution unrolls nothing forward or backward-to-input (the weight gradient still
    lays out its tap-major columns); every launch keeps CUDA's grid limits."""
    geo = dict(x_shape=(3, 6, 5, 4), w_shape=(4, 6, 1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
               groups=1)
    kernels = gpu_on_cpu._kernels
    kernels.launches.clear()
    _check_against_reference(gpu_on_cpu, geo, np.float64, cuda_on_cpu.host)
    assert [step for step, _, _ in kernels.launches] == ["im2col"]
    _check_against_reference(gpu_on_cpu, dict(geo, w_shape=(4, 6, 3, 3), padding=(1, 1)), np.float64,
                             cuda_on_cpu.host)
    assert [step for step, _, _ in kernels.launches] == ["im2col", "im2col", "col2im", "im2col"]
    for _, grid, block in kernels.launches:
        assert block == (gpu_on_cpu._THREADS,) and grid[1] <= 65535 and grid[2] <= 65535 and min(grid) >= 1


@settings(max_examples=40, deadline=None)
@given(geo=geometries(max_batch=3), algorithm=st.sampled_from(["implicit32", "implicit64"]),
       min_split=st.sampled_from([5, 256]))
def test_gpu_module_on_cpu_implicit_matches_reference(gpu_on_cpu, geo, algorithm, min_split):
    """The implicit-GEMM kernels (``conv_implicit.py``: tiles in shared memory, barriers, gathers through
    the tap and position tables) against the reference; the weight gradient's reduction split into
    shares of at most 5 (not a multiple of the tile's 8) or kept whole."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gpu_on_cpu, "ALGORITHM", algorithm)
        mp.setattr(gpu_on_cpu.conv_implicit, "_MIN_SPLIT", min_split)
        for dtype in (np.float64, np.float32):
            _check_against_reference(gpu_on_cpu, geo, dtype, cuda_on_cpu.host)


@pytest.mark.parametrize("algorithm", ["implicit32", "implicit64"])
def test_gpu_module_on_cpu_implicit_many_tiles(gpu_on_cpu, algorithm):
    """Several tiles in every direction: 70 output channels a group (3 row tiles of 32, 2 of 64), more
    than 128 positions, pixels and taps (2 to 4 column tiles), stride 2, and a reduction split in 11."""
    geo = dict(x_shape=(3, 32, 13, 12), w_shape=(140, 16, 3, 3), stride=(2, 1), padding=(1, 0),
               dilation=(1, 2), groups=2)
    kernels = gpu_on_cpu.conv_implicit._kernels
    kernels.launches.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gpu_on_cpu, "ALGORITHM", algorithm)
        mp.setattr(gpu_on_cpu.conv_implicit, "_MIN_SPLIT", 16)
        _check_against_reference(gpu_on_cpu, geo, np.float64, cuda_on_cpu.host)
    bm = int(algorithm[-2:])
    (_, forward, _), (_, input_grad, _), (_, weight_grad, _) = kernels.launches
    assert forward == (2, -(-70 // bm), 2)          # 3 x 7 x 8 = 168 positions, 70 channels, 2 groups
    assert input_grad == (4, 1, 2)                  # 3 x 13 x 12 = 468 input pixels, 16 channels
    assert weight_grad == (2, -(-70 // bm), 2 * 11)     # 144 taps; the reduction over 168 in 11 shares


def test_gpu_module_on_cpu_algorithm_choice(gpu_on_cpu):
    """"auto" times every algorithm once per geometry and keeps the fastest; operands too large for
    32-bit indices leave only the column algorithm; one that fails on the GPU is left out with a warning;
    an unknown choice is refused."""
    geo = dict(x_shape=(2, 3, 6, 6), w_shape=(4, 3, 3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1),
               groups=1)
    timed = []

    def fake_time(algorithm, run):
        run()
        timed.append(algorithm)
        return {"columns": 3.0, "implicit32": 2.0, "implicit64": 1.0}[algorithm]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gpu_on_cpu, "_time_ms", fake_time)
        mp.setattr(gpu_on_cpu, "_chosen", {})
        mp.setattr(gpu_on_cpu, "ALGORITHM", "auto")
        _check_against_reference(gpu_on_cpu, geo, np.float64, cuda_on_cpu.host)
        assert sorted(timed) == sorted(3 * ["columns", "implicit32", "implicit64"])   # three products
        assert set(gpu_on_cpu._chosen.values()) == {"implicit64"}
        _check_against_reference(gpu_on_cpu, geo, np.float64, cuda_on_cpu.host)
        assert len(timed) == 9                                    # chosen once per geometry
        mp.setattr(gpu_on_cpu.conv_implicit, "fits", lambda *arrays: False)
        mp.setattr(gpu_on_cpu, "_chosen", {})
        _check_against_reference(gpu_on_cpu, geo, np.float64, cuda_on_cpu.host)
        assert set(gpu_on_cpu._chosen.values()) == {"columns"}
        def implicit64_fails(algorithm, run):
            if algorithm == "implicit64":
                raise RuntimeError("no kernel image for this GPU")
            return fake_time(algorithm, run)

        mp.setattr(gpu_on_cpu, "_time_ms", implicit64_fails)
        mp.setattr(gpu_on_cpu, "_chosen", {})
        mp.setattr(gpu_on_cpu.conv_implicit, "fits", lambda *arrays: True)
        with pytest.warns(RuntimeWarning, match="implicit64 algorithm failed here.*no kernel image"):
            _check_against_reference(gpu_on_cpu, geo, np.float64, cuda_on_cpu.host)
        assert set(gpu_on_cpu._chosen.values()) == {"implicit32"}
        mp.setattr(gpu_on_cpu, "ALGORITHM", "fastest")
        x, w, _ = _arrays(geo, np.float64)
        with pytest.raises(ValueError, match="MINIGEN_GPU_CONV.*'fastest'"):
            gpu_on_cpu.conv2d_forward(cuda_on_cpu.host(x), cuda_on_cpu.host(w), *_args(geo))


# --------------------------------------------------------------------------- CuPy (GPU)


@pytest.fixture(scope="module")
def gpu():
    """(kernel module, to_device, to_host), or skip without CuPy and a GPU."""
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # CuPy without a driver or device
        pytest.skip(f"no usable CUDA device: {exc}")
    from minigen.kernels.gpu import conv as gpu_conv

    return gpu_conv, cupy.asarray, cupy.asnumpy


@pytest.mark.gpu
@settings(max_examples=40, deadline=None)
@given(geo=geometries())
def test_gpu_matches_reference_float64(gpu, geo):
    module, to_device, to_host = gpu
    _check_against_reference(module, geo, np.float64, to_device, to_host)


@pytest.mark.gpu
@settings(max_examples=20, deadline=None)
@given(geo=geometries())
def test_gpu_matches_reference_float32(gpu, geo):
    module, to_device, to_host = gpu
    _check_against_reference(module, geo, np.float32, to_device, to_host)


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ["columns", "implicit32", "implicit64"])
@settings(max_examples=15, deadline=None)
@given(geo=geometries())
def test_gpu_each_algorithm_matches_reference(gpu, algorithm, geo):
    """Every algorithm on its own ("auto" runs whichever is fastest for a shape)."""
    module, to_device, to_host = gpu
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "ALGORITHM", algorithm)
        for dtype in (np.float64, np.float32):
            _check_against_reference(module, geo, dtype, to_device, to_host)


@pytest.mark.gpu
@settings(max_examples=20, deadline=None)
@given(geo=geometries())
def test_gpu_adjoint_identities(gpu, geo):
    module, to_device, to_host = gpu
    gap_x, gap_w = _adjoint_gaps(module, geo, to_device, to_host)
    assert gap_x < 1e-12 and gap_w < 1e-12


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(EDGE_CASES) + sorted(BENCH_SHAPES))
def test_gpu_edge_and_benchmark_cases(gpu, case):
    module, to_device, to_host = gpu
    geo = {**EDGE_CASES, **BENCH_SHAPES}[case]
    for dtype in (np.float64, np.float32):
        _check_against_reference(module, geo, dtype, to_device, to_host)


@pytest.mark.gpu
def test_gpu_non_contiguous_inputs(gpu):
    """Strided and transposed device views give the results of their contiguous copies."""
    module, to_device, to_host = gpu
    geo = dict(x_shape=(2, 8, 7, 9), w_shape=(12, 8, 3, 2), stride=(2, 1), padding=(1, 0),
               dilation=(1, 2), groups=1)
    rng = np.random.default_rng(3)
    x = to_device(rng.standard_normal((2, 7, 9, 16)))[..., ::2].transpose(0, 3, 1, 2)
    w = to_device(rng.standard_normal(geo["w_shape"][::-1])).transpose(3, 2, 1, 0)
    g = to_device(rng.standard_normal((2,) + _out_shape(geo)[1:] + (2,)))[..., 0]
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or g.flags.c_contiguous)
    got = _run_all(module, x, w, g, geo)
    expected = _run_all(ref, to_host(x), to_host(w), to_host(g), geo)
    for name, a, b in zip(OPS, got, expected):
        _assert_close(to_host(a), b, np.float64, name)


@pytest.mark.parametrize("n,c_in,c_out,k,stride", [(3, 5, 4, 7, 1), (2, 100, 16, 7, 1), (4, 3, 6, 4, 2),
                                                   (1, 2, 3, (3, 5), 1)])
def test_cpu_whole_input_convolution_is_a_dense_layer(n, c_in, c_out, k, stride):
    """A kernel as large as the unpadded input (one output pixel; DCGAN's 1x1 -> 7x7 transposed
    convolution and its 7x7 -> 1 logit) takes the matrix-product path: all three ops against the
    reference."""
    kh, kw = (k, k) if isinstance(k, int) else k
    stride = (stride, stride)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c_in, kh, kw))
    w = rng.standard_normal((c_out, c_in, kh, kw))
    g = rng.standard_normal((n, c_out, 1, 1))
    assert cpu._whole_input((kh, kw), w.shape, (0, 0), (1, 1), 1)
    np.testing.assert_allclose(cpu.conv2d_forward(x, w, stride), ref.conv2d_forward(x, w, stride), rtol=1e-10)
    np.testing.assert_allclose(cpu.conv2d_input_grad(g, w, x.shape, stride),
                               ref.conv2d_input_grad(g, w, x.shape, stride), rtol=1e-10)
    np.testing.assert_allclose(cpu.conv2d_weight_grad(x, g, w.shape, stride),
                               ref.conv2d_weight_grad(x, g, w.shape, stride), rtol=1e-10, atol=1e-12)
    assert not cpu._whole_input((kh + 1, kw), w.shape, (0, 0), (1, 1), 1)
    assert not cpu._whole_input((kh, kw), w.shape, (1, 1), (1, 1), 1)

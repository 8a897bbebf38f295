"""Batched matrix products straight through cuBLAS, for the kernels whose products have a fixed shape.

``cupy.matmul`` is general — broadcasting, any layout, any dtype — and pays for it on the host: in
the U-Net's training step its bookkeeping (and the copies it makes of a broadcast operand) took
longer than the GPU's whole work, about 170 µs a call. A convolution knows its layout, so it can
hand cuBLAS the strides itself: one call, a few µs, and a stride of 0 repeats an operand (the
filter bank) for every image without copying it.

cuBLAS reads matrices column-major; a row-major ``(m, k)`` block is the column-major ``(k, m)``
block of its transpose. So the row-major product ``C = A B`` is computed as the column-major
``C^T = B^T A^T``: the operands swap places and every "transposed?" flag is read off the stored
layout (see :func:`matmul_strided`).
"""
import cupy
import numpy as np


def matmul_strided(a, b, out, m: int, n: int, k: int, batch: int, stride_a: int, stride_b: int,
                   stride_out: int, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0,
                   beta: float = 0.0):
    r"""For ``i < batch``: :math:`C_i = \alpha\,\operatorname{op}(A_i)\,\operatorname{op}(B_i) + \beta\,C_i`,
    every block row-major, :math:`C_i` of shape ``(m, n)`` and the product over ``k`` (``k = 0``
    gives :math:`\beta C_i`).

    ``a``, ``b``, ``out`` are device arrays whose *first element* starts block 0 (a slice or view
    is fine: only its start pointer is read); block ``i`` starts ``i * stride`` elements further
    (stride 0: the same block every time). ``A_i`` is stored as ``(m, k)``, or as ``(k, m)`` with
    ``trans_a`` (and likewise ``B_i`` as ``(k, n)``, or ``(n, k)`` with ``trans_b``); each stored
    block is contiguous. float32 and float64.
    """
    dtype = out.dtype
    if dtype not in (np.float32, np.float64) or a.dtype != dtype or b.dtype != dtype:
        raise TypeError(f"matmul_strided: float32 or float64 operands of one dtype, got "
                        f"{a.dtype}, {b.dtype} -> {out.dtype}")
    if batch == 0 or m == 0 or n == 0:
        return out
    cublas = cupy.cuda.cublas
    gemm = cublas.sgemmStridedBatched if dtype == np.float32 else cublas.dgemmStridedBatched
    alpha_, beta_ = np.full(1, alpha, dtype), np.full(1, beta, dtype)     # host scalars, alive for the call
    handle = cupy.cuda.device.get_cublas_handle()
    mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    try:
        # column-major C^T (n, m) = op(B)^T (n, k) @ op(A)^T (k, m): B is the first cuBLAS operand
        gemm(handle,
             cublas.CUBLAS_OP_T if trans_b else cublas.CUBLAS_OP_N,
             cublas.CUBLAS_OP_T if trans_a else cublas.CUBLAS_OP_N,
             n, m, k, alpha_.ctypes.data,
             b.data.ptr, max(1, k if trans_b else n), stride_b,         # (a leading dimension is >= 1)
             a.data.ptr, max(1, m if trans_a else k), stride_a,
             beta_.ctypes.data, out.data.ptr, n, stride_out, batch)
    finally:
        cublas.setPointerMode(handle, mode)
    return out

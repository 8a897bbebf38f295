"""Fused group normalisation (and SiLU, its partner in every ResNet block of a diffusion U-Net).

One task per (example, group): two passes over the group for the statistics and one to write y
(the group, ≤ a few hundred KB, stays in cache between them); the backward makes two passes. Sums
are float64, so an activation of large mean loses nothing to cancellation.
"""
import math

import numba
import numpy as np


@numba.njit(parallel=True, fastmath=True, cache=True)
def _forward(x, groups, weight, bias, eps, y, mean, rstd):
    n, c, s = x.shape
    per = c // groups
    count = per * s
    for task in numba.prange(n * groups):
        i, g = task // groups, task % groups
        acc = 0.0
        for ch in range(g * per, (g + 1) * per):
            for k in range(s):
                acc += x[i, ch, k]
        m = acc / count
        acc = 0.0
        for ch in range(g * per, (g + 1) * per):
            for k in range(s):
                d = x[i, ch, k] - m
                acc += d * d
        r = 1.0 / math.sqrt(acc / count + eps)
        mean[i, g], rstd[i, g] = m, r
        for ch in range(g * per, (g + 1) * per):
            scale = r * weight[ch]
            shift = bias[ch] - m * scale
            for k in range(s):
                y[i, ch, k] = x[i, ch, k] * scale + shift


@numba.njit(parallel=True, fastmath=True, cache=True)
def _backward(x, gy, groups, weight, mean, rstd, dx, dweight_rows, dbias_rows):
    n, c, s = x.shape
    per = c // groups
    count = per * s
    for task in numba.prange(n * groups):
        i, g = task // groups, task % groups
        m, r = mean[i, g], rstd[i, g]
        mean_gw, mean_gw_xhat = 0.0, 0.0
        for ch in range(g * per, (g + 1) * per):
            sum_g, sum_g_xhat = 0.0, 0.0
            for k in range(s):
                gk = gy[i, ch, k]
                sum_g += gk
                sum_g_xhat += gk * (x[i, ch, k] - m) * r
            dbias_rows[i, ch], dweight_rows[i, ch] = sum_g, sum_g_xhat
            mean_gw += weight[ch] * sum_g
            mean_gw_xhat += weight[ch] * sum_g_xhat
        mean_gw /= count
        mean_gw_xhat /= count
        for ch in range(g * per, (g + 1) * per):
            w = weight[ch]
            for k in range(s):
                xhat = (x[i, ch, k] - m) * r
                dx[i, ch, k] = r * (w * gy[i, ch, k] - mean_gw - xhat * mean_gw_xhat)


def _as3d(a, n, c, dtype):
    return np.ascontiguousarray(a, dtype=dtype).reshape(n, c, -1)


def group_norm_forward(x, groups, weight, bias, eps):
    """See the reference."""
    n, c = x.shape[:2]
    dt = x.dtype
    y = np.empty(x.shape, dtype=dt)
    mean, rstd = np.empty((n, groups)), np.empty((n, groups))
    _forward(_as3d(x, n, c, dt), groups, np.ascontiguousarray(weight, dtype=dt),
             np.ascontiguousarray(bias, dtype=dt), float(eps), y.reshape(n, c, -1), mean, rstd)
    return y, mean, rstd


def group_norm_backward(x, g, groups, weight, mean, rstd):
    """See the reference; per-example partial sums of dγ and dβ, added over the batch at the end."""
    n, c = x.shape[:2]
    dt = x.dtype
    dx = np.empty(x.shape, dtype=dt)
    dweight_rows, dbias_rows = np.empty((n, c)), np.empty((n, c))
    _backward(_as3d(x, n, c, dt), _as3d(g, n, c, dt), groups, np.ascontiguousarray(weight, dtype=dt),
              mean, rstd, dx.reshape(n, c, -1), dweight_rows, dbias_rows)
    return dx, dweight_rows.sum(axis=0).astype(dt), dbias_rows.sum(axis=0).astype(dt)

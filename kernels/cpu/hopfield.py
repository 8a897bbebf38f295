"""Numba kernel for asynchronous Hopfield dynamics (Eq. EBM-1, EBM-2).

The reference recomputes a field, N multiply-adds, for every single-unit
update. Here each state keeps its fields h = Ws − θ up to date instead: a
flip of unit i changes every field by 2 s_i w_ji, and nothing changes
otherwise. Near a stored pattern few units flip, so a sweep costs O(N)
instead of O(N²). States run in parallel; each one is sequential by nature.
"""
import numba
import numpy as np

from ..reference import hopfield_tie_tolerance


@numba.njit(cache=True)
def _is_fixed_point(s, h, tol):
    for j in range(s.shape[0]):
        if s[j] * h[j] < -tol[j]:
            return False
    return True


@numba.njit(parallel=True, cache=True)
def _sweeps(states, weights, fields, tol, units, sweeps, converged):
    n_states, n_sweeps, steps = units.shape
    n = states.shape[1]
    for b in numba.prange(n_states):
        s, h = states[b], fields[b]
        for t in range(n_sweeps + 1):
            if _is_fixed_point(s, h, tol):
                converged[b] = True
                break
            if t == n_sweeps:
                break
            for k in range(steps):
                i = units[b, t, k]
                if s[i] * h[i] < -tol[i]:           # the field disagrees with the state: flip
                    s[i] = -s[i]
                    delta = 2.0 * s[i]
                    for j in range(n):              # w symmetric: row i is column i, and contiguous
                        h[j] += delta * weights[i, j]
            sweeps[b] = t + 1


def hopfield_async_sweeps(states, weights, thresholds, units):
    """Same contract as the reference; the initial fields come from one BLAS product."""
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    out = np.array(states, dtype=np.float64, order="C")
    fields = out @ weights.T - thresholds
    sweeps = np.zeros(out.shape[0], dtype=np.int64)
    converged = np.zeros(out.shape[0], dtype=bool)
    _sweeps(out, weights, fields, hopfield_tie_tolerance(weights, thresholds),
            np.ascontiguousarray(units, dtype=np.int64), sweeps, converged)
    return out, sweeps, converged

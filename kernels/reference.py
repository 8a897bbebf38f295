"""NumPy reference kernels — the specification every fast kernel is tested against.

Written for clarity, not speed: each function follows its defining sum as
directly as NumPy allows. ``minigen.kernels.cpu`` (Numba) and
``minigen.kernels.gpu`` (CuPy) provide the same functions with the same
signatures; tests compare them with these on random shapes.

Layouts follow PyTorch: images NCHW, conv weights ``(C_out, C_in/groups, kh, kw)``,
attention tensors ``(batch, heads, time, dim)``.
"""
from __future__ import annotations

import math

import numpy as np

from minigen.numerics import sigmoid   # σ(x) through tanh: no overflow for any x

# --------------------------------------------------------------------------- helpers


def conv_output_size(size, kernel, stride, padding, dilation):
    """Output length of a convolution along one axis:
    :math:`\\lfloor (n + 2p - d(k-1) - 1)/s \\rfloor + 1`."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _window(x_pad, p, q, stride, dilation, out_h, out_w):
    """The strided slice of the padded input that kernel tap (p, q) multiplies."""
    sh, sw = stride
    dh, dw = dilation
    return x_pad[:, :, p * dh: p * dh + sh * (out_h - 1) + 1: sh,
                 q * dw: q * dw + sw * (out_w - 1) + 1: sw]


def _pad(x, padding):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


# --------------------------------------------------------------------------- conv2d


def conv2d_forward(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Cross-correlation, PyTorch's ``conv2d`` without bias:

    .. math:: y_{n,o,i,j} = \\sum_{c,p,q} x_{n,\\,g(o) C_g + c,\\; i s_h + p d_h - p_h,\\; j s_w + q d_w - p_w}\\, w_{o,c,p,q}

    where :math:`g(o)` is the group of output channel ``o`` and :math:`C_g` the
    input channels per group; out-of-range input positions count as zero.
    """
    n, c_in, h, wd = x.shape
    c_out, c_g, kh, kw = w.shape
    out_h = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    out_w = conv_output_size(wd, kw, stride[1], padding[1], dilation[1])
    x_pad = _pad(x, padding)
    o_g = c_out // groups
    y = np.zeros((n, c_out, out_h, out_w), dtype=np.result_type(x, w))
    for g in range(groups):
        xg = x_pad[:, g * c_g:(g + 1) * c_g]
        wg = w[g * o_g:(g + 1) * o_g]
        for p in range(kh):
            for q in range(kw):
                patch = _window(xg, p, q, stride, dilation, out_h, out_w)
                y[:, g * o_g:(g + 1) * o_g] += np.einsum("nchw,oc->nohw", patch, wg[:, :, p, q])
    return y


def conv2d_input_grad(g, w, input_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Gradient of :func:`conv2d_forward` w.r.t. its input — the transposed convolution.

    Every output position scatters ``g * w`` back to the input positions it read:

    .. math:: \\bar x_{n,c,\\,i s + p d - p_h,\\,j s + q d - p_w} \\mathrel{+}= \\sum_o \\bar y_{n,o,i,j}\\, w_{o,c,p,q}
    """
    n, c_in, h, wd = input_shape
    c_out, c_g, kh, kw = w.shape
    out_h, out_w = g.shape[2:]
    ph, pw = padding
    dx_pad = np.zeros((n, c_in, h + 2 * ph, wd + 2 * pw), dtype=np.result_type(g, w))
    o_g = c_out // groups
    for grp in range(groups):
        gg = g[:, grp * o_g:(grp + 1) * o_g]
        wg = w[grp * o_g:(grp + 1) * o_g]
        target = dx_pad[:, grp * c_g:(grp + 1) * c_g]
        for p in range(kh):
            for q in range(kw):
                _window(target, p, q, stride, dilation, out_h, out_w)[...] += np.einsum(
                    "nohw,oc->nchw", gg, wg[:, :, p, q])
    return dx_pad[:, :, ph:ph + h, pw:pw + wd]


def conv2d_weight_grad(x, g, weight_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                       groups=1):
    """Gradient of :func:`conv2d_forward` w.r.t. its weight:

    .. math:: \\bar w_{o,c,p,q} = \\sum_{n,i,j} \\bar y_{n,o,i,j}\\, x_{n,\\,g(o)C_g+c,\\; i s + p d - p_h,\\; j s + q d - p_w}
    """
    c_out, c_g, kh, kw = weight_shape
    out_h, out_w = g.shape[2:]
    x_pad = _pad(x, padding)
    o_g = c_out // groups
    dw = np.zeros(weight_shape, dtype=np.result_type(x, g))
    for grp in range(groups):
        xg = x_pad[:, grp * c_g:(grp + 1) * c_g]
        gg = g[:, grp * o_g:(grp + 1) * o_g]
        for p in range(kh):
            for q in range(kw):
                patch = _window(xg, p, q, stride, dilation, out_h, out_w)
                dw[grp * o_g:(grp + 1) * o_g, :, p, q] = np.einsum("nohw,nchw->oc", gg, patch)
    return dw


# --------------------------------------------------------------------------- attention


def attention_scores(q, k, mask=None, causal=False, scale=None):
    """Scaled, masked scores :math:`S = QK^\\top/\\sqrt d` (+ mask), as float.

    ``mask`` is boolean (True = may attend) or additive (added to the scores),
    broadcastable to ``(B, H, Tq, Tk)``. ``causal`` hides keys after the query
    (query i sees keys j <= i: PyTorch's top-left alignment when Tq != Tk).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    if causal:
        tq, tk = q.shape[-2], k.shape[-2]
        allowed = np.tril(np.ones((tq, tk), dtype=bool))
        s = np.where(allowed, s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask
    return s.astype(q.dtype, copy=False)


def attention_forward(q, k, v, mask=None, causal=False, scale=None):
    """Scaled dot-product attention :math:`O = \\mathrm{softmax}(QK^\\top/\\sqrt d)\\,V`.

    Returns ``(out, lse)`` where ``lse`` is the row-wise log-sum-exp of the scores
    (what a fused backward needs to rebuild the softmax without storing it).
    Rows whose keys are all masked give output 0 and ``lse = -inf``.
    """
    s = attention_scores(q, k, mask, causal, scale)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    with np.errstate(divide="ignore"):
        lse = (np.log(total) + m)[..., 0]
    return (p @ v).astype(q.dtype, copy=False), lse.astype(q.dtype, copy=False)


def attention_backward(q, k, v, out, lse, grad_out, mask=None, causal=False, scale=None):
    """Gradients of :func:`attention_forward` with :math:`P = e^{S - \\mathrm{lse}}`:

    .. math::
        \\bar V = P^\\top \\bar O,\\quad \\bar P = \\bar O V^\\top,\\quad
        \\bar S = P \\odot (\\bar P - \\mathrm{rowsum}(\\bar O \\odot O)),\\quad
        \\bar Q = \\tfrac{1}{\\sqrt d}\\bar S K,\\quad \\bar K = \\tfrac{1}{\\sqrt d}\\bar S^\\top Q
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = attention_scores(q, k, mask, causal, scale)
    safe_lse = np.where(np.isfinite(lse), lse, np.inf)[..., None]
    p = np.exp(s - safe_lse)
    dv = np.swapaxes(p, -1, -2) @ grad_out
    dp = grad_out @ np.swapaxes(v, -1, -2)
    row = (grad_out * out).sum(axis=-1, keepdims=True)
    ds = p * (dp - row)
    dq = (ds @ k) * scale
    dk = (np.swapaxes(ds, -1, -2) @ q) * scale
    dt = q.dtype
    return dq.astype(dt, copy=False), dk.astype(dt, copy=False), dv.astype(dt, copy=False)


# --------------------------------------------------------------------------- element-wise

_erf_scalar = np.vectorize(math.erf, otypes=[np.float64])


def erf(x):
    """The error function :math:`\\operatorname{erf}(x)=\\frac{2}{\\sqrt\\pi}\\int_0^x e^{-t^2}dt`."""
    return _erf_scalar(x).astype(x.dtype, copy=False)


def softplus(x):
    """:math:`\\mathrm{softplus}(x)=\\log(1+e^x)=\\max(x,0)+\\log(1+e^{-|x|})`, stable for any x.

    The Bernoulli log-likelihood of every pixel of every importance sample
    calls it, so it has a kernel of its own.
    """
    return np.logaddexp(0.0, x).astype(x.dtype, copy=False)


def bernoulli_log_likelihood(logits, x):
    """Per-row Bernoulli log-likelihood :math:`\\sum_d x_d\\ell_d - \\mathrm{softplus}(\\ell_d)`.

    ``logits`` is (N, D) and ``x`` is (M, D) with N a multiple of M: row n is
    scored against ``x[n % M]`` — k importance samples of a batch of M images,
    sample-major, without ever copying the batch k times. Returns (N,).
    """
    n, d = logits.shape
    rows = logits.reshape(n // x.shape[0], x.shape[0], d)
    return (x * rows - softplus(rows)).sum(axis=2, dtype=np.float64).astype(logits.dtype).reshape(n)


# --------------------------------------------------------------------------- RBM block Gibbs sampling (Eq. EBM-11)
#
# A Bernoulli–Bernoulli RBM with visible units v (n_v), hidden units h (n_h),
# weights W of shape (n_v, n_h) and biases b (visible), c (hidden) has
# E(v, h) = -v^T W h - b^T v - c^T h, so each layer is conditionally independent
# given the other: p(h_j = 1 | v) = σ(c_j + v^T W_{:,j}), p(v_i = 1 | h) = σ(b_i + W_{i,:} h).
# The random numbers come in as uniforms ``u`` in [0, 1) (unit on iff u < p), so
# every implementation draws the same sample from the same ``u`` and can be
# compared with this one exactly, up to rounding at u ≈ p.




def rbm_sample_hidden(v, W, c, u):
    """Eq. EBM-11: :math:`p = \\sigma(vW + c)`, :math:`h = [u < p]`. ``v`` (B, n_v), ``u`` (B, n_h).

    Returns ``(p, h)``, both (B, n_h) in the dtype of ``v``.
    """
    p = sigmoid(v @ W + c).astype(v.dtype, copy=False)
    return p, (u < p).astype(v.dtype)


def rbm_sample_visible(h, W, b, u):
    """Eq. EBM-11: :math:`p = \\sigma(hW^\\top + b)`, :math:`v = [u < p]`. ``h`` (B, n_h), ``u`` (B, n_v).

    Returns ``(p, v)``, both (B, n_v) in the dtype of ``h``.
    """
    p = sigmoid(h @ W.T + b).astype(h.dtype, copy=False)
    return p, (u < p).astype(h.dtype)


def rbm_gibbs_chain(h, W, b, c, u_v, u_h):
    """k steps of block Gibbs sampling from hidden state ``h`` (B, n_h):
    :math:`v_t \\sim p(v\\mid h_{t-1})`, :math:`h_t \\sim p(h\\mid v_t)` for t = 1…k,
    with ``u_v`` (k, B, n_v) and ``u_h`` (k, B, n_h) the uniforms of each step.

    Returns ``(p_v, v, p_h, h)`` of the last step — what CD-k and PCD need for
    the negative statistics. Fast versions fuse the k steps into one call.
    """
    k = u_v.shape[0]
    p_v = v = p_h = None
    for t in range(k):
        p_v, v = rbm_sample_visible(h, W, b, u_v[t])
        p_h, h = rbm_sample_hidden(v, W, c, u_h[t])
    return p_v, v, p_h, h


# --------------------------------------------------------------------------- Hopfield asynchronous dynamics (Eq. EBM-1, EBM-2)
#
# A Hopfield net with states s ∈ {-1,+1}^N, symmetric weights W (w_ii = 0) and
# thresholds θ updates one unit at a time (asynchronous I, Eq. EBM-2) by
# Eq. EBM-1, s_i ← sgn(h_i) with the field h_i = Σ_j w_ij s_j − θ_i; a zero
# field keeps the current state. The units to visit come in as an integer
# array, so every implementation follows the same trajectory exactly.

#: A field within this fraction of Σ_j |w_ij| + |θ_i| counts as zero (a tie).
#: Hebbian weights are multiples of 1/N, so exact ties are common, and float
#: rounding leaves residues of ~1e-17 whose sign depends on summation order.
HOPFIELD_TIE_RTOL = 1e-9


def hopfield_tie_tolerance(weights, thresholds):
    """Per-unit tie tolerance :math:`\\epsilon_i = 10^{-9}(\\sum_j |w_{ij}| + |\\theta_i|)`, shape (N,)."""
    return HOPFIELD_TIE_RTOL * (abs(weights).sum(axis=1) + abs(thresholds))


def _hopfield_is_fixed_point(s, weights, thresholds, tol):
    """No unit would change: every field agrees with its unit's state, or is a tie."""
    return bool(np.all(s * (weights @ s - thresholds) >= -tol))


def hopfield_async_sweeps(states, weights, thresholds, units):
    """Asynchronous-I sweeps (Eq. EBM-1, EBM-2) until no unit would change.

    For each state ``b`` and sweep ``t``, units ``units[b, t, 0], units[b, t, 1], …``
    are updated one at a time,

    .. math:: s_i \\leftarrow \\mathrm{sgn}\\Big(\\sum_j w_{ij} s_j - \\theta_i\\Big)
              \\quad(\\text{a tie keeps } s_i),

    and a state stops as soon as it is a fixed point (checked before the first
    sweep and after each one). ``states`` (B, N) of ±1, ``weights`` (N, N)
    symmetric (fast kernels read row i for column i), ``thresholds`` (N,),
    ``units`` (B, S, L) integers in [0, N).

    Returns ``(states, sweeps, converged)``: the final states (B, N) float64,
    the sweeps run (B,) int64 and whether each ended at a fixed point (B,) bool.
    """
    tol = hopfield_tie_tolerance(weights, thresholds)
    out = np.array(states, dtype=np.float64)
    n_states, n_sweeps, _ = units.shape
    sweeps = np.zeros(n_states, dtype=np.int64)
    converged = np.zeros(n_states, dtype=bool)
    for b in range(n_states):
        s = out[b]
        for t in range(n_sweeps + 1):
            if _hopfield_is_fixed_point(s, weights, thresholds, tol):
                converged[b] = True
                break
            if t == n_sweeps:
                break
            for i in units[b, t]:
                field = weights[i] @ s - thresholds[i]
                if abs(field) > tol[i]:
                    s[i] = np.sign(field)
            sweeps[b] = t + 1
    return out, sweeps, converged


# --------------------------------------------------------------------------- CD's parameter update


def momentum_ascent_step(param, velocity, grad, lr, momentum, weight_decay):
    """In place, Hinton's momentum rule for gradient *ascent* with L2 decay (an RBM's CD update):
    :math:`\\Delta \\leftarrow \\mu\\Delta + \\eta(g - \\lambda\\theta)`, :math:`\\theta \\leftarrow \\theta + \\Delta`.
    ``param``, ``velocity`` and ``grad`` have one shape; returns nothing."""
    velocity *= momentum
    velocity += lr * (grad - weight_decay * param)
    param += velocity


# --------------------------------------------------------------------------- Adam's parameter update


def adam_update(param, exp_avg, exp_avg_sq, grad, beta1, beta2, step_size, bias_correction2_sqrt, eps,
                max_exp_avg_sq=None):
    """In place, Adam's step (Kingma & Ba 2015) once the gradient g is formed:

    .. math:: m \\leftarrow m + (1-\\beta_1)(g - m), \\quad v \\leftarrow \\beta_2 v + (1-\\beta_2)\\,g^2, \\quad
              \\theta \\leftarrow \\theta - s\\,\\frac{m}{\\sqrt{\\hat v}/c + \\epsilon}

    with ``step_size`` s = γ/(1 − β₁ᵗ), ``bias_correction2_sqrt`` c = √(1 − β₂ᵗ) and v̂ = v, or with
    AMSGrad (``max_exp_avg_sq`` given) v_max ← max(v_max, v) and v̂ = v_max. One shape for all arrays;
    returns nothing. Eleven array passes and four temporaries here; the kernels make one pass."""
    exp_avg += (1 - beta1) * (grad - exp_avg)           # torch: exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * (grad * grad)
    v = exp_avg_sq
    if max_exp_avg_sq is not None:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    param -= step_size * (exp_avg / (np.sqrt(v) / bias_correction2_sqrt + eps))


# --------------------------------------------------------------------------- NADE (Eq. AR-1)
#
# NADE (Larochelle & Murray, 2011) on D binary pixels with H hidden units, weights
# W, V of shape (D, H) (row i is the column W_{:,i} of the paper), biases c (H,), b (D,):
#
#     a_i = c + Σ_{j<i} x_j W_j,   h_i = σ(a_i),   ℓ_i = b_i + V_i · h_i,
#
# so the pre-activations are one running sum over the pixels (O(HD) per image).
# The data x is never differentiated: the kernels return no gradient for it.


def nade_forward(x, W, c, V, b):
    """The logits ℓ (B, D) of every conditional p(x_i = 1 | x_<i) = σ(ℓ_i), for x (B, D)."""
    contrib = x[:, :, None] * W[None]                       # (B, D, H): x_j W_j
    a = c + np.cumsum(contrib, axis=1) - contrib            # exclusive running sum: Σ_{j<i}
    return ((sigmoid(a) * V).sum(axis=2) + b).astype(x.dtype, copy=False)


def nade_backward(x, W, c, V, g):
    """Gradients ``(dW, dc, dV, db)`` of Σ_{n,i} g_{ni} ℓ_{ni}, for the upstream gradient g (B, D).

    With h = σ(a) and the local gradient δ_i = g_i V_i ⊙ h_i(1 − h_i) of a_i:
    db_i = Σ_n g_i, dV_i = Σ_n g_i h_i, dc = Σ_{n,i} δ_i, and since W_j enters every
    a_i with i > j, dW_j = Σ_n x_j Σ_{i>j} δ_i (a reversed, exclusive running sum).
    """
    contrib = x[:, :, None] * W[None]
    h = sigmoid(c + np.cumsum(contrib, axis=1) - contrib)
    delta = g[:, :, None] * V * h * (1 - h)                 # (B, D, H)
    later = np.cumsum(delta[:, ::-1], axis=1)[:, ::-1] - delta   # Σ_{i>j} δ_i
    dt = x.dtype
    return (np.einsum("nj,njh->jh", x, later).astype(dt, copy=False),
            delta.sum(axis=(0, 1)).astype(dt, copy=False),
            np.einsum("ni,nih->ih", g, h).astype(dt, copy=False),
            g.sum(axis=0).astype(dt, copy=False))


# --------------------------------------------------------------------------- SiLU and group normalisation
#
# The two element-wise costs of a diffusion U-Net's ResNet blocks, fused: as compositions of
# engine ops they take nine (SiLU) and a dozen (group norm) passes over the activations.
# Written with array methods only, so CuPy runs this same code (``kernels/gpu``).


def _sigmoid_tail_exact(x):
    """σ(x) = 1/(1 + e^{−x}) with full relative precision also far out on the left tail, where the tanh form's
    ½(1 + tanh(x/2)) cancels to a multiple of float32's 6e-8 (and SiLU's gradient there is x·σ(x), not 0)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def silu(x):
    """:math:`\\mathrm{SiLU}(x) = x\\,\\sigma(x)`."""
    return (x * _sigmoid_tail_exact(x)).astype(x.dtype, copy=False)


def silu_backward(x, g):
    """:math:`g\\,\\frac{d}{dx}x\\sigma(x) = g\\,\\sigma(x)\\,(1 + x(1 - \\sigma(x)))`."""
    s = _sigmoid_tail_exact(x)
    return (g * s * (1 + x * (1 - s))).astype(x.dtype, copy=False)


def group_norm_forward(x, groups, weight, bias, eps):
    """Group normalisation of ``x`` (N, C, ...) with C/groups channels per group:

    .. math:: y_{nc\\cdot} = \\gamma_c\\,\\hat x_{nc\\cdot} + \\beta_c, \\qquad
              \\hat x = (x - \\mu_{ng}) / \\sqrt{\\sigma^2_{ng} + \\epsilon},

    μ and σ² (biased) over the group's channels and positions. Returns y (x's dtype) and the
    float64 statistics ``mean`` and ``rstd`` = 1/√(σ² + ε), both (N, groups), for the backward."""
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1).astype("float64")
    mean = xg.mean(axis=2)
    rstd = 1.0 / (xg.var(axis=2) + eps) ** 0.5
    xhat = ((xg - mean[:, :, None]) * rstd[:, :, None]).reshape(n, c, -1)
    y = xhat * weight.reshape(1, c, 1) + bias.reshape(1, c, 1)
    return y.reshape(x.shape).astype(x.dtype), mean, rstd


def group_norm_backward(x, g, groups, weight, mean, rstd):
    """Gradients of the group norm for the upstream gradient ``g``:

    .. math:: \\partial x = r\\,\\big(\\gamma g - \\overline{\\gamma g}
              - \\hat x\\,\\overline{\\gamma g\\,\\hat x}\\big), \\quad
              \\partial\\gamma_c = \\textstyle\\sum_{n,\\cdot} g\\,\\hat x, \\quad
              \\partial\\beta_c = \\textstyle\\sum_{n,\\cdot} g

    (bars: means over the group, r = rstd). Returns (dx, dweight, dbias) in x's dtype."""
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1).astype("float64")
    xhat = (xg - mean[:, :, None]) * rstd[:, :, None]
    g3 = g.reshape(n, c, -1).astype("float64")
    dbias = g3.sum(axis=(0, 2))
    dweight = (g3 * xhat.reshape(n, c, -1)).sum(axis=(0, 2))
    gw = (g3 * weight.reshape(1, c, 1)).reshape(n, groups, -1)
    dx = rstd[:, :, None] * (gw - gw.mean(axis=2, keepdims=True)
                             - xhat * (gw * xhat).mean(axis=2, keepdims=True))
    dt = x.dtype
    return dx.reshape(x.shape).astype(dt), dweight.astype(dt), dbias.astype(dt)


# --------------------------------------------------------------------------- diffusion steps (Eq. DIF-4, DIF-14)
#
# The two updates every diffusion training step and every sampling step make on
# whole batches of images. Coefficients come from the noise schedule (float64
# NumPy, computed once); the kernels only combine arrays.


def diffusion_q_sample(x0, noise, a, b):
    """Eq. DIF-4, the forward jump: ``a[n] * x0[n] + b[n] * noise[n]`` with per-example
    a = √ᾱ_t and b = √(1 − ᾱ_t), arrays of shape (N,); x0 and noise (N, ...)."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return (a.reshape(shape) * x0 + b.reshape(shape) * noise).astype(x0.dtype, copy=False)


def diffusion_p_sample(x_t, eps, noise, c1, c2, sigma, out=None):
    """Eq. DIF-14, Algorithm 2's line 4 for one step t: ``c1 * (x_t - c2 * eps) + sigma * noise`` with
    scalars c1 = 1/√α_t, c2 = (1 − α_t)/√(1 − ᾱ_t) and σ_t; ``noise`` None (t = 1) adds nothing.
    ``out``, when given, is a C-contiguous array of x_t's shape and dtype that receives the result; it may
    be x_t itself (the sampler's case: x_{t−1} overwrites x_t, which nothing reads again), never eps or noise."""
    dt = x_t.dtype.type
    # BEGIN SOLUTION 7.2
    result = dt(c1) * (x_t - dt(c2) * eps)
    if noise is not None:
        result = result + dt(sigma) * noise
    # END SOLUTION
    if out is None:
        return result
    out[...] = result
    return out

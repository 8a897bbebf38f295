"""Numba CPU kernels; each has the signature of its twin in ``kernels/reference.py``.

Names missing here fall back to the NumPy reference (see ``minigen.backend``).
"""
from minigen.backend import select_numba_threading_layer

select_numba_threading_layer()  # before any kernel below starts Numba's workers

from .attention import attention_backward, attention_forward  # noqa: E402,F401
from .conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad  # noqa: E402,F401
from .diffusion import diffusion_p_sample, diffusion_q_sample  # noqa: E402,F401
from .elementwise import adam_update, bernoulli_log_likelihood, erf, momentum_ascent_step, silu, silu_backward, softplus  # noqa: E402,F401
from .hopfield import hopfield_async_sweeps  # noqa: E402,F401
from .gibbs import rbm_gibbs_chain, rbm_sample_hidden, rbm_sample_visible  # noqa: E402,F401
from .nade import nade_backward, nade_forward  # noqa: E402,F401
from .normalization import group_norm_backward, group_norm_forward  # noqa: E402,F401

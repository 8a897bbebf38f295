"""Element-wise CuPy kernels."""
import cupy
import cupyx.scipy.special


def erf(x):
    """The error function (CuPy ships it in cupyx.scipy.special)."""
    return cupyx.scipy.special.erf(x)


# max(x, 0) + log1p(exp(-|x|)): the stable form, as on the CPU.
softplus = cupy.ElementwiseKernel(
    "T x", "T y", "y = max(x, (T)0) + log1p(exp(-abs(x)))", "minigen_softplus")

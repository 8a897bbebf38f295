"""Loss functions as modules: thin wrappers that store the options of ``F.*_loss``.

``weight`` / ``pos_weight`` tensors are registered as buffers (as in PyTorch),
so they move with ``module.to(device)``.
"""
from __future__ import annotations

from .. import ops
from .module import Module


class _Loss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("none", "mean", "sum", "batchmean"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'none', 'mean' or "
                             f"'sum', got {reduction!r}")
        self.reduction = reduction


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, reduction: str = "mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)


class MSELoss(_Loss):
    """Mean squared error :math:`(x - y)^2`."""

    def forward(self, input, target):  # noqa: A002
        return ops.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error :math:`|x - y|`."""

    def forward(self, input, target):  # noqa: A002
        return ops.l1_loss(input, target, reduction=self.reduction)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities: :math:`-[y\\log p + (1-y)\\log(1-p)]`."""

    def forward(self, input, target):  # noqa: A002
        return ops.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """Binary cross-entropy of logits, computed stably."""

    def __init__(self, weight=None, reduction: str = "mean", pos_weight=None):
        super().__init__(weight, reduction)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):  # noqa: A002
        return ops.binary_cross_entropy_with_logits(input, target, self.weight,
                                                    reduction=self.reduction,
                                                    pos_weight=self.pos_weight)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities ``input`` (N, C, ...) at class indices."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):  # noqa: A002
        return ops.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Cross-entropy of logits (log-softmax + NLL), with optional label smoothing."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__(weight, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):  # noqa: A002
        return ops.cross_entropy(input, target, self.weight, self.ignore_index,
                                 self.reduction, self.label_smoothing)


class KLDivLoss(_Loss):
    """:math:`\\mathrm{KL}(y \\,\\|\\, \\cdot)` with ``input`` as log-probabilities."""

    def __init__(self, reduction: str = "mean", log_target: bool = False):
        super().__init__(reduction)
        self.log_target = log_target

    def forward(self, input, target):  # noqa: A002
        return ops.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)

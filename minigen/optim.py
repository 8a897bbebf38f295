r"""Optimizers, learning-rate schedules, gradient clipping and weight averaging.

Everything here follows PyTorch's names, argument names, defaults and update
rules (the single-tensor, ``foreach=False`` code path of ``torch.optim``), so a
training script can be carried between the two::

    import minigen as mg
    from minigen.optim import Adam, clip_grad_norm_, EMA
    from minigen.optim.lr_scheduler import CosineAnnealingLR

    opt = Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    sched = CosineAnnealingLR(opt, T_max=10_000)
    ema = EMA(model, decay=0.999)
    for x in loader:
        opt.zero_grad()
        loss = model.loss(x)
        loss.backward()
        clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
        sched.step()
        ema.update()

How an update touches memory
----------------------------
An optimizer changes ``p.data`` (the raw NumPy or CuPy array) **in place** with
plain array arithmetic: no graph is recorded and every reference to the
parameter sees the new values. Optimizer state (momentum buffers, Adam's
moments) are raw arrays on the parameter's device, of the parameter's dtype.

Gradients are only *read*. The autograd engine may hand the same gradient
array to two leaves (the gradient of ``a + b``) or a read-only broadcast view
(the gradient of ``x.sum()``), so the functions that change gradients
(:func:`clip_grad_norm_`, :func:`clip_grad_value_`, ``zero_grad(set_to_none=False)``)
give each parameter a *new* ``.grad`` tensor instead of writing into the old
array. The values are PyTorch's; only the array identity differs.
"""
from __future__ import annotations

import bisect
import contextlib
import copy
import math
import numbers
import sys
import types
from collections import defaultdict

import numpy as np

from . import autograd, backend
from .autograd import Tensor, enable_grad

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop",
    "LRScheduler", "StepLR", "CosineAnnealingLR", "cosine_annealing", "LinearLR", "LinearWarmup", "SequentialLR",
    "clip_grad_norm_", "clip_grad_value_", "EMA", "lr_scheduler",
]


# --------------------------------------------------------------------------- helpers
def _is_array(x) -> bool:
    """True for a NumPy or CuPy array (the raw values inside a Tensor)."""
    return isinstance(x, np.ndarray) or backend.device_of(x) == "cuda"


def _real(owner: str, name: str, value) -> float:
    """``value`` as a float, or a TypeError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    return float(value)


def _check_nonneg(owner: str, name: str, value) -> None:
    v = _real(owner, name, value)
    if not v >= 0.0:  # also rejects NaN
        raise ValueError(f"{owner}: invalid {name}={value!r}: must be >= 0")


def _check_unit_interval(owner: str, name: str, value) -> None:
    """``0 <= value < 1`` (decay rates: a value of 1 would never forget)."""
    v = _real(owner, name, value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{owner}: invalid {name}={value!r}: must be in [0, 1)")


def _grad_array(p: Tensor, maximize: bool):
    """The gradient of ``p`` as a raw array (negated when maximising); never written to."""
    g = p.grad.data
    return -g if maximize else g


# --------------------------------------------------------------------------- Optimizer
class Optimizer:
    """Base class of every optimizer: parameter groups, per-parameter state, checkpoints.

    Parameters
    ----------
    params : iterable
        Tensors to optimize (e.g. ``model.parameters()``), or dicts defining
        *parameter groups*: ``{"params": [...], "lr": 0.1}``. Options missing
        from a group are taken from ``defaults``.
    defaults : dict
        The optimizer's hyper-parameters, used for every group that does not
        override them.

    Attributes
    ----------
    param_groups : list of dict
        One dict per group with its ``"params"`` list and hyper-parameters. A
        learning-rate scheduler changes ``group["lr"]`` here.
    state : dict
        ``state[p]`` is the dict of arrays and numbers kept for parameter ``p``
        (created on its first update).
    """

    #: state entries that must have the parameter's shape (checked on load).
    _param_shaped_state: tuple = ()

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = defaultdict(dict)
        self.param_groups: list = []
        if isinstance(params, Tensor):
            raise TypeError(
                f"{type(self).__name__}: params must be an iterable of Tensors or dicts, "
                f"got a single Tensor (wrap it in a list: [p])"
            )
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    # ---- groups
    def _validate_group(self, group: dict) -> None:
        """Check a group's hyper-parameters; subclasses raise ValueError naming the argument."""

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyper-parameters (e.g. when unfreezing layers)."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError(f"{name}: a parameter group needs a 'params' entry")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{name}: parameters must be given in a fixed order (a list), not a set"
            )
        params = list(params)
        seen = set()
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{name} can only optimize Tensors, but params[{i}] is a {type(p).__name__}"
                )
            if not p.is_leaf:
                raise ValueError(f"{name} can't optimize a non-leaf Tensor (params[{i}])")
            if id(p) in seen:
                raise ValueError(f"{name}: params[{i}] appears twice in the same parameter group")
            seen.add(id(p))
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if existing & seen:
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._validate_group(group)
        self.param_groups.append(group)

    # ---- gradients
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients before the next backward pass.

        ``set_to_none=True`` (the default, as in PyTorch) sets ``p.grad = None``;
        otherwise each gradient becomes a fresh array of zeros.
        """
        for group in self.param_groups:
            autograd.zero_grad(group["params"], set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns ``closure()``'s loss if given.

        ``closure`` re-evaluates the model and returns the loss (it should call
        ``zero_grad`` and ``backward`` itself), as in PyTorch.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group, self.state[p])
        return loss

    def _update(self, p: Tensor, group: dict, state: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    # ---- checkpoints
    def state_dict(self) -> dict:
        """The optimizer's state in PyTorch's layout.

        ``{"state": {index: {name: array or number}}, "param_groups": [{..., "params": [index, ...]}]}``
        where ``index`` numbers the parameters across all groups in order. Arrays
        are copies, so later steps do not change a state dict already taken. The
        result can be written with :func:`minigen.save`.
        """
        index: dict = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                s = self.state.get(p)
                if s:
                    state[index[id(p)]] = {
                        k: (v.copy() if _is_array(v) else copy.deepcopy(v)) for k, v in s.items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and per-parameter state from :meth:`state_dict`.

        The optimizer must have been built over the same parameters, in the same
        groups and order. Floating-point state is cast to each parameter's dtype
        and moved to its device; arrays are copied.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             f"'param_groups' (from Optimizer.state_dict())")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state dict has {len(saved_groups)} parameter "
                f"groups but the optimizer has {len(self.param_groups)}"
            )
        by_index = {}
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {gi} has {len(saved['params'])} "
                    f"parameters in the state dict but {len(group['params'])} in the optimizer"
                )
            for idx, p in zip(saved["params"], group["params"]):
                by_index[int(idx)] = p

        new_state: dict = defaultdict(dict)
        for idx, s in state_dict["state"].items():
            p = by_index.get(int(idx))
            if p is None:
                raise ValueError(
                    f"{name}.load_state_dict: state for parameter index {idx} but no such parameter"
                )
            new_state[p] = {k: self._cast_state(p, int(idx), k, v) for k, v in s.items()}

        new_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            g = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            for key, value in self.defaults.items():  # keys added since the checkpoint
                g.setdefault(key, value)
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
            g["params"] = group["params"]
            self._validate_group(g)
            new_groups.append(g)
        self.state = new_state
        self.param_groups = new_groups

    def _cast_state(self, p: Tensor, idx: int, key: str, value):
        if isinstance(value, Tensor):
            value = value.data
        if not _is_array(value):
            return copy.deepcopy(value)
        if key in self._param_shaped_state and tuple(value.shape) != p.shape:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: state {key!r} of parameter {idx} has "
                f"shape {tuple(value.shape)} but the parameter has shape {p.shape}"
            )
        value = backend.to_device(value, p.device)
        if value.dtype.kind == "f" and p.dtype.kind == "f":
            value = value.astype(p.dtype)  # astype copies
        else:
            value = value.copy()
        return value

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


# --------------------------------------------------------------------------- SGD
class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, Nesterov momentum and L2 decay.

    With :math:`g_t=\nabla_\theta f(\theta_{t-1})`, :math:`\lambda` = ``weight_decay``,
    :math:`\mu` = ``momentum``, :math:`\tau` = ``dampening``, :math:`\gamma` = ``lr``
    (PyTorch's rule):

    .. math::

        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
        b_t &= \begin{cases} g_t & t = 1 \\ \mu\,b_{t-1} + (1-\tau)\,g_t & t > 1\end{cases} \\
        g_t &\leftarrow \begin{cases} g_t + \mu\,b_t & \text{nesterov} \\ b_t & \text{otherwise}
              \end{cases} \\
        \theta_t &= \theta_{t-1} - \gamma\,g_t

    (the momentum lines only when :math:`\mu\neq 0`). Note the first buffer is
    the gradient itself, not :math:`(1-\tau)g_1`. ``maximize=True`` ascends.
    """

    _param_shaped_state = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_nonneg("SGD", "lr", group["lr"])
        _check_nonneg("SGD", "momentum", group["momentum"])
        _real("SGD", "dampening", group["dampening"])
        _check_nonneg("SGD", "weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"SGD: nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def _update(self, p, group, state):
        lr, mu, tau, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        d_p = _grad_array(p, group["maximize"])
        if wd != 0:
            d_p = d_p + wd * p.data
        if mu != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d_p.copy()
            else:
                buf *= mu
                buf += (1 - tau) * d_p
            d_p = d_p + mu * buf if group["nesterov"] else buf
        p.data -= lr * d_p


# --------------------------------------------------------------------------- Adam / AdamW
def _adam_step(p, group, state, grad):
    """Shared core of Adam and AdamW once the gradient is formed: the moments and the step, one fused
    kernel pass (``adam_update`` in ``kernels/``; eleven NumPy passes or GPU launches per parameter as
    array expressions)."""
    beta1, beta2 = group["betas"]
    if not state:
        state["step"] = 0
        state["exp_avg"] = p.xp.zeros_like(p.data)
        state["exp_avg_sq"] = p.xp.zeros_like(p.data)
    vmax = None
    if group["amsgrad"]:
        vmax = state.get("max_exp_avg_sq")
        if vmax is None:          # also when amsgrad is switched on after some steps: max(0, v) = v
            vmax = state["max_exp_avg_sq"] = p.xp.zeros_like(p.data)
    state["step"] += 1
    t = state["step"]
    kernel = backend.get_kernel("adam_update", p.device)
    kernel(p.data, state["exp_avg"], state["exp_avg_sq"], grad, beta1, beta2, group["lr"] / (1 - beta1 ** t),
           math.sqrt(1 - beta2 ** t), group["eps"], vmax)


def _validate_adam(owner, group):
    _check_nonneg(owner, "lr", group["lr"])
    _check_nonneg(owner, "eps", group["eps"])
    _check_nonneg(owner, "weight_decay", group["weight_decay"])
    betas = group["betas"]
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: invalid betas={betas!r}: must be a pair (beta1, beta2)") from None
    _check_unit_interval(owner, "betas[0]", beta1)
    _check_unit_interval(owner, "betas[1]", beta2)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), with L2 weight decay added to the gradient and AMSGrad.

    With :math:`g_t=\nabla_\theta f(\theta_{t-1}) + \lambda\theta_{t-1}` (``weight_decay``
    :math:`\lambda`, coupled to the gradient as in PyTorch's ``Adam``):

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2 \\
        \hat m_t &= \frac{m_t}{1-\beta_1^t}, \qquad
        \hat v_t = \frac{v_t}{1-\beta_2^t} \\
        \theta_t &= \theta_{t-1} - \gamma\,\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    with :math:`m_0=v_0=0`. The bias corrections undo the pull of the zero
    initialisation towards 0 during the first :math:`\sim 1/(1-\beta)` steps.
    Exactly as PyTorch computes it, :math:`\epsilon` is added to
    :math:`\sqrt{v_t}/\sqrt{1-\beta_2^t}` (not to :math:`\sqrt{v_t}`).
    ``amsgrad=True`` replaces :math:`v_t` in the denominator by its running
    maximum :math:`v^{\max}_t=\max(v^{\max}_{t-1}, v_t)`.

    State per parameter: ``step`` (int), ``exp_avg`` (:math:`m`),
    ``exp_avg_sq`` (:math:`v`) and, with AMSGrad, ``max_exp_avg_sq``.
    """

    _param_shaped_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _validate_adam(type(self).__name__, group)

    def _update(self, p, group, state):
        grad = _grad_array(p, group["maximize"])
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        _adam_step(p, group, state, grad)


class AdamW(Adam):
    r"""Adam with *decoupled* weight decay (Loshchilov & Hutter, 2019).

    The decay shrinks the weights directly instead of entering the gradient, so
    it is not rescaled by Adam's per-coordinate step sizes:

    .. math::

        \theta_{t-1} &\leftarrow \theta_{t-1}\,(1-\gamma\lambda) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
                   \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    with :math:`g_t=\nabla_\theta f(\theta_{t-1})` (gradient taken before the
    shrink). Default ``weight_decay=1e-2`` as in PyTorch; AMSGrad as in :class:`Adam`.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def _update(self, p, group, state):
        grad = _grad_array(p, group["maximize"])
        if group["weight_decay"] != 0:
            p.data *= 1 - group["lr"] * group["weight_decay"]
        _adam_step(p, group, state, grad)


# --------------------------------------------------------------------------- RMSprop
class RMSprop(Optimizer):
    r"""RMSprop (Hinton's lecture 6e), optionally centered and with momentum, as in PyTorch.

    With :math:`g_t=\nabla_\theta f(\theta_{t-1}) + \lambda\theta_{t-1}`, :math:`\alpha`
    = ``alpha``:

    .. math::

        v_t &= \alpha\,v_{t-1} + (1-\alpha)\,g_t^2 \\
        \tilde v_t &= \begin{cases} v_t - \bar g_t^2,\ \
            \bar g_t = \alpha\,\bar g_{t-1} + (1-\alpha)\,g_t & \text{centered} \\
            v_t & \text{otherwise} \end{cases} \\
        b_t &= \mu\,b_{t-1} + \frac{g_t}{\sqrt{\tilde v_t}+\epsilon}, \qquad
        \theta_t = \theta_{t-1} - \gamma\,b_t \qquad (\mu > 0) \\
        \theta_t &= \theta_{t-1} - \gamma\,\frac{g_t}{\sqrt{\tilde v_t}+\epsilon}
        \qquad (\mu = 0)

    with :math:`v_0=\bar g_0=b_0=0` and no bias correction. Defaults as PyTorch:
    ``lr=1e-2, alpha=0.99, eps=1e-8``.
    """

    _param_shaped_state = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        self._validate_group(defaults)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_nonneg("RMSprop", "lr", group["lr"])
        _check_nonneg("RMSprop", "eps", group["eps"])
        _check_nonneg("RMSprop", "weight_decay", group["weight_decay"])
        _check_nonneg("RMSprop", "momentum", group["momentum"])
        _check_nonneg("RMSprop", "alpha", group["alpha"])

    def _update(self, p, group, state):
        alpha, mu, xp = group["alpha"], group["momentum"], p.xp
        grad = _grad_array(p, group["maximize"])
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
        if mu > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = xp.zeros_like(p.data)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        v = state["square_avg"]
        v *= alpha
        v += (1 - alpha) * (grad * grad)
        if group["centered"]:
            gbar = state["grad_avg"]
            gbar += (1 - alpha) * (grad - gbar)     # torch: grad_avg.lerp_(grad, 1 - alpha)
            avg = xp.sqrt(v - gbar * gbar)
        else:
            avg = xp.sqrt(v)
        avg += group["eps"]
        if mu > 0:
            buf = state["momentum_buffer"]
            buf *= mu
            buf += grad / avg
            p.data -= group["lr"] * buf
        else:
            p.data -= group["lr"] * (grad / avg)


# --------------------------------------------------------------------------- schedules
class LRScheduler:
    """Base class of learning-rate schedules (PyTorch's ``torch.optim.lr_scheduler.LRScheduler``).

    A schedule sets ``group["lr"]`` of every parameter group of ``optimizer`` as
    a closed-form function of the step counter ``last_epoch`` and the group's
    initial learning rate (``base_lrs``, remembered as ``group["initial_lr"]``).
    Building a scheduler performs step 0 (sets the learning rate of step 0);
    call :meth:`step` once after each ``optimizer.step()``.

    Unlike PyTorch, which updates the rate recursively from its current value,
    every schedule here evaluates its closed form, so a schedule never drifts
    and ``step()`` is idempotent with respect to outside changes of ``lr``. The
    values are the same as PyTorch's whenever nobody else edits ``lr``.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"{type(self).__name__}: param_groups[{i}] has no 'initial_lr'; "
                        f"resuming with last_epoch={last_epoch} needs it"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self._initial_step()

    def _initial_step(self):
        self.step()

    def _lr_at(self, base_lr: float, t: int) -> float:  # pragma: no cover - abstract
        """The closed-form learning rate of step ``t`` for a group that started at ``base_lr``."""
        raise NotImplementedError

    def get_lr(self) -> list:
        """Learning rates of the current step (one per parameter group)."""
        return [self._lr_at(base, self.last_epoch) for base in self.base_lrs]

    def get_last_lr(self) -> list:
        """Learning rates set by the last :meth:`step`."""
        return list(self._last_lr)

    def step(self, epoch: int | None = None) -> None:
        """Advance one step (or jump to step ``epoch``) and set every group's ``lr``."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Everything but the optimizer (JSON-like values; savable with :func:`minigen.save`)."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`; the next :meth:`step` continues where it stopped.

        Also writes the restored current rates into the optimizer's groups, so the
        result does not depend on whether the optimizer's state was loaded before
        or after this scheduler was built.
        """
        for k, v in state_dict.items():
            setattr(self, k, copy.deepcopy(v))
        self.base_lrs = list(self.base_lrs)
        self._last_lr = list(self._last_lr)
        if len(self._last_lr) != len(self.optimizer.param_groups):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state is for "
                f"{len(self._last_lr)} parameter groups, the optimizer has "
                f"{len(self.optimizer.param_groups)}"
            )
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


class StepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` steps.

    .. math:: \gamma_t = \gamma_0\,\text{gamma}^{\lfloor t/\text{step\_size}\rfloor}
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if not isinstance(step_size, numbers.Integral) or step_size <= 0:
            raise ValueError(f"StepLR: invalid step_size={step_size!r}: must be a positive int")
        _check_nonneg("StepLR", "gamma", gamma)
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, t):
        return base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the initial rate to ``eta_min`` over ``T_max`` steps (SGDR, no restarts).

    .. math:: \gamma_t = \eta_{\min} + \tfrac12(\gamma_0-\eta_{\min})
              \left(1+\cos\frac{\pi t}{T_{\max}}\right)

    PyTorch's closed form; past ``T_max`` it rises again (a cosine, not a clamp).
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if not isinstance(T_max, numbers.Integral) or T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: invalid T_max={T_max!r}: must be a positive int")
        _check_nonneg("CosineAnnealingLR", "eta_min", eta_min)
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, t):
        return cosine_annealing(base_lr, t, self.T_max, self.eta_min)


def cosine_annealing(base_lr: float, t: int, T_max: int, eta_min: float = 0.0) -> float:
    r"""The cosine schedule's closed form, :math:`\eta_{\min} + \tfrac12(\gamma_0-\eta_{\min})(1+\cos\frac{\pi t}{T_{\max}})`:
    shared by :class:`CosineAnnealingLR` and the updates that are not an Optimizer
    (an RBM's contrastive divergence)."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


class LinearLR(LRScheduler):
    r"""Scale the learning rate linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps.

    .. math:: \gamma_t = \gamma_0\left(s + (e - s)\,\frac{\min(t, T)}{T}\right)

    PyTorch's ``LinearLR`` (defaults ``start_factor=1/3, end_factor=1, total_iters=5``).
    """

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1):
        owner = type(self).__name__
        s = _real(owner, "start_factor", start_factor)
        e = _real(owner, "end_factor", end_factor)
        if not self._start_ok(s):
            raise ValueError(f"{owner}: invalid start_factor={start_factor!r}: must be in "
                             f"{self._start_range}")
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"{owner}: invalid end_factor={end_factor!r}: must be in [0, 1]")
        if not isinstance(total_iters, numbers.Integral) or total_iters <= 0:
            raise ValueError(f"{owner}: invalid total_iters={total_iters!r}: must be a positive int")
        self.start_factor, self.end_factor, self.total_iters = s, e, int(total_iters)
        super().__init__(optimizer, last_epoch)

    _start_range = "(0, 1]"

    @staticmethod
    def _start_ok(s):
        return 0.0 < s <= 1.0

    def _lr_at(self, base_lr, t):
        frac = min(self.total_iters, max(t, 0)) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class LinearWarmup(LinearLR):
    r"""Linear warm-up: the rate grows from ``start_factor`` times the initial rate to the initial rate.

    .. math:: \gamma_t = \gamma_0\left(s + (1-s)\,\frac{\min(t, W)}{W}\right)

    over ``warmup_steps`` :math:`W` steps, then stays at :math:`\gamma_0`. The
    default ``start_factor=0`` starts from zero (step 0 then makes no update).
    Chain it with another schedule through :class:`SequentialLR`, e.g. warm-up
    then cosine decay.
    """

    _start_range = "[0, 1]"

    def __init__(self, optimizer, warmup_steps: int, start_factor: float = 0.0,
                 last_epoch: int = -1):
        if not isinstance(warmup_steps, numbers.Integral) or warmup_steps <= 0:
            raise ValueError(
                f"LinearWarmup: invalid warmup_steps={warmup_steps!r}: must be a positive int")
        super().__init__(optimizer, start_factor=start_factor, end_factor=1.0,
                         total_iters=warmup_steps, last_epoch=last_epoch)

    @staticmethod
    def _start_ok(s):
        return 0.0 <= s <= 1.0


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after the other, switching at the step numbers in ``milestones``.

    As PyTorch's ``SequentialLR``: scheduler ``i`` is in charge for steps
    ``milestones[i-1] <= t < milestones[i]`` and restarts its own count at 0
    when it takes over. Example, 100 warm-up steps then cosine decay::

        warm = LinearWarmup(opt, warmup_steps=100)
        cos = CosineAnnealingLR(opt, T_max=9_900)
        sched = SequentialLR(opt, [warm, cos], milestones=[100])
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch: int = -1):
        schedulers, milestones = list(schedulers), [int(m) for m in milestones]
        if len(schedulers) < 1:
            raise ValueError("SequentialLR: invalid schedulers=[]: need at least one scheduler")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler) or isinstance(s, SequentialLR):
                raise TypeError(f"SequentialLR: schedulers[{i}] must be a (non-sequential) "
                                f"LRScheduler, got {type(s).__name__}")
            if s.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: schedulers[{i}] is bound to a different optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR: invalid milestones={milestones!r}: need exactly "
                f"len(schedulers) - 1 = {len(schedulers) - 1} values"
            )
        if milestones != sorted(milestones):
            raise ValueError(f"SequentialLR: invalid milestones={milestones!r}: must be increasing")
        self.optimizer = optimizer
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:  # undo the initial steps of the sub-schedulers
            group["lr"] = group["initial_lr"]
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        for s in schedulers:
            s.last_epoch -= 1
        schedulers[0]._initial_step()
        self._last_lr = schedulers[0].get_last_lr()

    def step(self, epoch: int | None = None) -> None:
        """Advance one step with the scheduler in charge; at a milestone the next one takes over at its
        step 0. There is no ``epoch`` argument (``TypeError``)."""
        if epoch is not None:
            raise TypeError("SequentialLR.step() takes no epoch argument")
        self.last_epoch += 1
        idx = bisect.bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler.step(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def get_lr(self) -> list:
        """Learning rates of the current step, from the scheduler in charge of it."""
        idx = bisect.bisect_right(self._milestones, self.last_epoch)
        return self._schedulers[idx].get_lr()

    def state_dict(self) -> dict:
        """This schedule's state with each sub-scheduler's under ``'_schedulers'`` (no optimizer)."""
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                 if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`, sub-schedulers included (``ValueError`` if their number differs)."""
        state_dict = dict(state_dict)
        subs = state_dict.pop("_schedulers")
        if len(subs) != len(self._schedulers):
            raise ValueError(f"SequentialLR.load_state_dict: {len(subs)} saved schedulers but "
                             f"{len(self._schedulers)} here")
        super().load_state_dict(state_dict)
        self._milestones = list(self._milestones)
        for s, sd in zip(self._schedulers, subs):
            s.load_state_dict(sd)


_LRScheduler = LRScheduler  # PyTorch's old name

#: ``minigen.optim.lr_scheduler`` mirrors ``torch.optim.lr_scheduler``:
#: ``from minigen.optim.lr_scheduler import CosineAnnealingLR`` works.
lr_scheduler = types.ModuleType(
    __name__ + ".lr_scheduler", "Learning-rate schedules (defined in minigen.optim).")
for _cls in (LRScheduler, StepLR, CosineAnnealingLR, LinearLR, LinearWarmup, SequentialLR):
    setattr(lr_scheduler, _cls.__name__, _cls)
lr_scheduler._LRScheduler = LRScheduler
lr_scheduler.__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR",
                        "LinearWarmup", "SequentialLR"]
sys.modules[lr_scheduler.__name__] = lr_scheduler
del _cls


# --------------------------------------------------------------------------- clipping
def _grads_of(parameters) -> list:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    r"""Rescale gradients so that their joint norm is at most ``max_norm``; return the norm before.

    The gradients of all parameters are treated as one long vector :math:`g`:

    .. math::

        \lVert g\rVert_p = \Big(\sum_i \lVert g_i\rVert_p^p\Big)^{1/p}, \qquad
        g_i \leftarrow g_i\cdot\min\Big(1,\ \frac{\text{max\_norm}}{\lVert g\rVert_p + 10^{-6}}\Big)

    and :math:`\lVert g\rVert_\infty=\max_i\max|g_i|` for ``norm_type=inf`` (PyTorch's
    rule, including the :math:`10^{-6}`). Returns the total norm as a 0-d
    Tensor (``.item()`` gives a float). Each clipped parameter receives a new
    ``.grad`` tensor (see the module notes). ``error_if_nonfinite=True`` raises
    when the norm is NaN or infinite instead of filling the gradients with NaN.
    """
    params = _grads_of(parameters)
    max_norm = _real("clip_grad_norm_", "max_norm", max_norm)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: invalid max_norm={max_norm!r}: must be >= 0")
    norm_type = _real("clip_grad_norm_", "norm_type", norm_type)
    if not (norm_type > 0):
        raise ValueError(
            f"clip_grad_norm_: invalid norm_type={norm_type!r}: must be > 0 or math.inf")
    if not params:
        return Tensor._wrap(np.array(0.0, dtype=np.float32))
    first = params[0].grad.data
    xp = backend.array_module(first)
    norms = []
    for p in params:
        g = backend.to_device(p.grad.data, backend.device_of(first)).ravel()
        if g.size == 0:
            continue
        if math.isinf(norm_type):
            norms.append(xp.abs(g).max())
        else:
            norms.append(xp.linalg.norm(g, ord=norm_type))
    if not norms:
        return Tensor._wrap(xp.zeros((), dtype=first.dtype))
    stacked = xp.stack([n.astype(first.dtype) for n in norms])
    total = stacked.max() if math.isinf(norm_type) else xp.linalg.norm(stacked, ord=norm_type)
    total = xp.asarray(total, dtype=first.dtype)  # a 0-d array (NumPy reductions give scalars)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
            f"{float(total)}; set error_if_nonfinite=False to clip anyway"
        )
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for p in params:
        g = p.grad.data
        p.grad = Tensor._wrap(g * coef.astype(g.dtype))
    return Tensor._wrap(total)


def clip_grad_value_(parameters, clip_value: float) -> None:
    r"""Clamp every gradient element to :math:`[-c, c]` with :math:`c` = ``clip_value``.

    Each parameter with a gradient receives a new ``.grad`` tensor.
    """
    c = _real("clip_grad_value_", "clip_value", clip_value)
    if not c >= 0:
        raise ValueError(f"clip_grad_value_: invalid clip_value={clip_value!r}: must be >= 0")
    for p in _grads_of(parameters):
        g = p.grad.data
        p.grad = Tensor._wrap(backend.array_module(g).clip(g, -c, c).astype(g.dtype, copy=False))


# --------------------------------------------------------------------------- EMA
def _params_of(model_or_params) -> list:
    if isinstance(model_or_params, Tensor):
        return [model_or_params]
    if hasattr(model_or_params, "parameters") and callable(model_or_params.parameters):
        model_or_params = model_or_params.parameters()
    params = list(model_or_params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"EMA: params[{i}] is a {type(p).__name__}, not a Tensor")
    return params


class EMA:
    r"""Exponential moving average of parameters (Polyak averaging), for sampling and evaluation.

    After every optimizer step, :meth:`update` moves the shadow copy towards
    the current parameters:

    .. math:: \theta_{\text{ema}} \leftarrow \beta\,\theta_{\text{ema}} + (1-\beta)\,\theta

    so :math:`\theta_{\text{ema}}` averages roughly the last :math:`1/(1-\beta)`
    iterates. GANs and diffusion models are usually sampled from the averaged
    weights. With ``warmup=True`` the decay of update :math:`n` (counting from 0)
    is :math:`\min\big(\beta, \frac{1+n}{10+n}\big)`, so early averages are not
    dominated by the random initialisation (TensorFlow's ``num_updates`` rule).

    Use the averaged weights for evaluation and switch back::

        ema.store(); ema.copy_to()        # model now holds the EMA weights
        samples = model.sample(64)
        ema.restore()                     # training weights back

    or ``with ema.average_parameters(): ...``. Only parameters are averaged
    (not buffers such as BatchNorm statistics). Non-floating parameters are
    copied, not averaged.

    Parameters
    ----------
    model_or_params : object with ``.parameters()``, or an iterable of Tensors
    decay : float in [0, 1]
        :math:`\beta`.
    warmup : bool
        Use the warm-up decay above.
    """

    def __init__(self, model_or_params, decay: float = 0.999, warmup: bool = False):
        d = _real("EMA", "decay", decay)
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"EMA: invalid decay={decay!r}: must be in [0, 1]")
        self.params = _params_of(model_or_params)
        self.decay = d
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow_params = [p.data.copy() for p in self.params]
        self._backup = None

    def _check(self, params):
        params = self.params if params is None else _params_of(params)
        if len(params) != len(self.shadow_params):
            raise ValueError(f"EMA: expected {len(self.shadow_params)} parameters, got {len(params)}")
        for i, (p, s) in enumerate(zip(params, self.shadow_params)):
            if p.shape != tuple(s.shape):
                raise ValueError(f"EMA: parameter {i} has shape {p.shape}, its average "
                                 f"{tuple(s.shape)}")
        return params

    def current_decay(self) -> float:
        """The :math:`\\beta` the next :meth:`update` will use."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1 + n) / (10 + n))
        return self.decay

    def update(self, params=None) -> None:
        r"""One averaging step :math:`\theta_{ema}\leftarrow\beta\theta_{ema}+(1-\beta)\theta`."""
        params = self._check(params)
        beta = self.current_decay()
        for p, s in zip(params, self.shadow_params):
            if s.dtype.kind == "f":
                s -= (1 - beta) * (s - backend.to_device(p.data, backend.device_of(s)))
            else:
                s[...] = backend.to_device(p.data, backend.device_of(s))
        self.num_updates += 1

    def copy_to(self, params=None) -> None:
        """Write the averaged values into ``params`` (default: the tracked parameters), in place."""
        for p, s in zip(self._check(params), self.shadow_params):
            p.data[...] = backend.to_device(s, p.device)

    def store(self, params=None) -> None:
        """Remember the current values of ``params`` so :meth:`restore` can put them back."""
        self._backup = [p.data.copy() for p in self._check(params)]

    def restore(self, params=None) -> None:
        """Put back the values saved by :meth:`store`."""
        if self._backup is None:
            raise RuntimeError("EMA.restore() called without a previous EMA.store()")
        for p, b in zip(self._check(params), self._backup):
            p.data[...] = b
        self._backup = None

    @contextlib.contextmanager
    def average_parameters(self, params=None):
        """``with ema.average_parameters():`` evaluate with the averaged weights, then swap back."""
        self.store(params)
        try:
            self.copy_to(params)
            yield
        finally:
            self.restore(params)

    def state_dict(self) -> dict:
        """``decay``, ``warmup``, ``num_updates`` and copies of the averages (``shadow_params``)."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow_params": [s.copy() for s in self.shadow_params]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`; the averages are copied to each parameter's dtype and device.

        A count or shape that does not match the tracked parameters raises ``ValueError`` and
        changes nothing.
        """
        shadows = list(state_dict["shadow_params"])
        if len(shadows) != len(self.params):
            raise ValueError(f"EMA.load_state_dict: {len(shadows)} saved averages for "
                             f"{len(self.params)} parameters")
        new = []
        for i, (p, s) in enumerate(zip(self.params, shadows)):
            s = s.data if isinstance(s, Tensor) else s
            if tuple(s.shape) != p.shape:
                raise ValueError(f"EMA.load_state_dict: average {i} has shape {tuple(s.shape)} "
                                 f"but the parameter has shape {p.shape}")
            new.append(backend.to_device(s, p.device).astype(p.dtype, copy=True))
        self.shadow_params = new
        self.decay = float(state_dict["decay"])
        self.warmup = bool(state_dict.get("warmup", False))
        self.num_updates = int(state_dict.get("num_updates", 0))

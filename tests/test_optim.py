"""Optimizers, schedules, gradient clipping and EMA against hand-written references.

Every optimizer's trajectory on a small Rosenbrock + quadratic problem is
compared with PyTorch's update rule written out in NumPy below (independently
of minigen.optim: plain ``m = b1*m + (1-b1)*g`` forms, fresh state dicts).
When PyTorch happens to be installed, ``test_*_matches_torch`` also compares
with ``torch.optim`` itself; those tests skip in CI.
"""
import math

import numpy as np
import pytest

import minigen as mg
from minigen import optim
from minigen.optim import (EMA, SGD, Adam, AdamW, CosineAnnealingLR, LinearLR, LinearWarmup,
                           RMSprop, SequentialLR, StepLR, clip_grad_norm_, clip_grad_value_)

# --------------------------------------------------------------------------- the problem
X0 = np.array([-0.6, 0.4, 0.9])                 # Rosenbrock in 3-D
W0 = np.array([[1.5, -2.0], [0.25, 3.0]])       # separable quadratic
C = np.array([[1.0, 4.0], [0.5, 2.0]])
B = np.array([[0.3, -0.1], [0.0, 1.0]])


def loss_fn(x, w):
    """f(x, w) = sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2  +  sum (C w^2 / 2 + B w)."""
    rosen = (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()
    quad = (0.5 * mg.tensor(C) * w ** 2 + mg.tensor(B) * w).sum()
    return rosen + quad


def grads_np(x, w):
    gx = np.zeros_like(x)
    gx[:-1] += -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    gx[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return [gx, C * w + B]


def test_problem_gradient_matches_autograd():
    x = mg.tensor(X0, requires_grad=True)
    w = mg.tensor(W0, requires_grad=True)
    loss_fn(x, w).backward()
    gx, gw = grads_np(X0, W0)
    np.testing.assert_allclose(x.grad.numpy(), gx, rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), gw, rtol=1e-12)


# --------------------------------------------------------------------------- NumPy references
def ref_sgd(p, g, s, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        if "buf" not in s:
            s["buf"] = g.copy()
        else:
            s["buf"] = momentum * s["buf"] + (1 - dampening) * g
        g = g + momentum * s["buf"] if nesterov else s["buf"]
    return p - lr * g


def ref_adam(p, g, s, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False):
    b1, b2 = betas
    if weight_decay and decoupled:
        p = p * (1 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * p
    t = s.get("t", 0) + 1
    s["t"] = t
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    v = s["v"]
    if amsgrad:
        s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"])
        v = s["vmax"]
    m_hat_step = lr / (1 - b1 ** t)
    denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
    return p - m_hat_step * s["m"] / denom


def ref_adamw(p, g, s, lr, weight_decay=1e-2, **kw):
    return ref_adam(p, g, s, lr, weight_decay=weight_decay, decoupled=True, **kw)


def ref_rmsprop(p, g, s, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    if weight_decay:
        g = g + weight_decay * p
    s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g * g
    if centered:
        s["gbar"] = alpha * s.get("gbar", 0.0) + (1 - alpha) * g
        avg = np.sqrt(s["v"] - s["gbar"] ** 2) + eps
    else:
        avg = np.sqrt(s["v"]) + eps
    if momentum > 0:
        s["buf"] = momentum * s.get("buf", 0.0) + g / avg
        return p - lr * s["buf"]
    return p - lr * g / avg


CASES = [
    (SGD, ref_sgd, dict(lr=1e-3)),
    (SGD, ref_sgd, dict(lr=1e-3, momentum=0.9)),
    (SGD, ref_sgd, dict(lr=1e-3, momentum=0.9, dampening=0.5)),
    (SGD, ref_sgd, dict(lr=1e-3, momentum=0.9, nesterov=True)),
    (SGD, ref_sgd, dict(lr=1e-3, momentum=0.5, weight_decay=0.1)),
    (Adam, ref_adam, dict(lr=0.05)),
    (Adam, ref_adam, dict(lr=0.05, weight_decay=0.1)),
    (Adam, ref_adam, dict(lr=0.05, amsgrad=True)),
    (Adam, ref_adam, dict(lr=0.02, betas=(0.5, 0.9), eps=1e-3)),
    (AdamW, ref_adamw, dict(lr=0.05)),
    (AdamW, ref_adamw, dict(lr=0.05, weight_decay=0.5, amsgrad=True)),
    (RMSprop, ref_rmsprop, dict(lr=1e-3)),
    (RMSprop, ref_rmsprop, dict(lr=1e-3, centered=True)),
    (RMSprop, ref_rmsprop, dict(lr=1e-3, momentum=0.9)),
    (RMSprop, ref_rmsprop, dict(lr=1e-3, alpha=0.9, centered=True, momentum=0.5,
                                weight_decay=0.1)),
]
CASE_IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, _, kw in CASES]

STEPS = 20


def run_minigen(cls, kw, steps=STEPS, dtype=np.float64):
    x = mg.tensor(X0, dtype=dtype, requires_grad=True)
    w = mg.tensor(W0, dtype=dtype, requires_grad=True)
    frozen = mg.tensor(np.ones(2), dtype=dtype, requires_grad=True)  # never gets a gradient
    opt = cls([x, w, frozen], **kw)
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(x, w).backward()
        opt.step()
        traj.append([x.detach().numpy().copy(), w.detach().numpy().copy()])
    return traj, opt, frozen


def run_reference(ref, kw, steps=STEPS):
    params = [X0.copy(), W0.copy()]
    states = [{}, {}]
    traj = []
    for _ in range(steps):
        grads = grads_np(*params)
        params = [ref(p, g, s, **kw) for p, g, s in zip(params, grads, states)]
        traj.append([p.copy() for p in params])
    return traj


@pytest.mark.parametrize("cls,ref,kw", CASES, ids=CASE_IDS)
def test_trajectory_matches_pytorch_rule(cls, ref, kw):
    got, opt, frozen = run_minigen(cls, kw)
    want = run_reference(ref, kw)
    for t, (g, r) in enumerate(zip(got, want)):
        for a, b in zip(g, r):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"step {t + 1}")
    # the parameter without a gradient is neither moved nor given state
    np.testing.assert_array_equal(frozen.detach().numpy(), np.ones(2))
    assert frozen not in opt.state or not opt.state[frozen]
    # the problem really moved (the test would be vacuous otherwise)
    assert np.abs(got[-1][0] - X0).max() > 1e-3


@pytest.mark.parametrize("cls,ref,kw", CASES, ids=CASE_IDS)
def test_float32_parameters_stay_float32(cls, ref, kw):
    got, opt, _ = run_minigen(cls, kw, steps=3, dtype=np.float32)
    want = run_reference(ref, kw, steps=3)
    assert got[-1][0].dtype == np.float32
    for state in opt.state.values():
        for v in state.values():
            assert not hasattr(v, "dtype") or v.dtype == np.float32
    np.testing.assert_allclose(got[-1][0], want[-1][0], rtol=2e-4, atol=1e-5)


def test_param_groups_use_their_own_hyperparameters():
    x = mg.tensor(X0, requires_grad=True)
    w = mg.tensor(W0, requires_grad=True)
    opt = SGD([{"params": [x]}, {"params": w, "lr": 0.1, "momentum": 0.5}], lr=1e-3)
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["momentum"] == 0
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["params"] == [w]
    px, pw, sx, sw = X0.copy(), W0.copy(), {}, {}
    for _ in range(5):
        opt.zero_grad()
        loss_fn(x, w).backward()
        opt.step()
        gx, gw = grads_np(px, pw)
        px = ref_sgd(px, gx, sx, lr=1e-3)
        pw = ref_sgd(pw, gw, sw, lr=0.1, momentum=0.5)
    np.testing.assert_allclose(x.detach().numpy(), px, rtol=1e-12)
    np.testing.assert_allclose(w.detach().numpy(), pw, rtol=1e-12)


def test_add_param_group_fills_defaults_and_rejects_overlap():
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    b = mg.tensor([3.0], requires_grad=True)
    opt = Adam([a], lr=0.1, betas=(0.8, 0.9))
    opt.add_param_group({"params": [b], "eps": 1e-4})
    assert opt.param_groups[1]["betas"] == (0.8, 0.9) and opt.param_groups[1]["eps"] == 1e-4
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match=r"lr=-1"):
        opt.add_param_group({"params": [mg.tensor([0.0], requires_grad=True)], "lr": -1})


def test_zero_grad_and_closure():
    x = mg.tensor(X0, requires_grad=True)
    w = mg.tensor(W0, requires_grad=True)
    opt = SGD([x, w], lr=1e-3)
    loss_fn(x, w).backward()
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(3))
    opt.zero_grad()
    assert x.grad is None and w.grad is None

    def closure():
        opt.zero_grad()
        loss = loss_fn(x, w)
        loss.backward()
        return loss

    with mg.no_grad():  # step re-enables grad for the closure, as in PyTorch
        first = opt.step(closure)
    second = opt.step(closure)
    assert second.item() < first.item()


def test_sgd_with_shared_gradient_arrays():
    # (a + b).sum() hands both leaves a read-only broadcast view of one array;
    # the update must read it, never write into it.
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    b = mg.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    opt = SGD([a, b], lr=0.5, momentum=0.9)
    opt.step()
    opt.step()
    np.testing.assert_allclose(a.detach().numpy(), [1 - 0.5 - 0.5 * 1.9, 2 - 0.5 - 0.95])
    np.testing.assert_allclose(b.detach().numpy(), [3 - 1.45, 4 - 1.45])
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 1.0])


def test_construction_errors():
    x = mg.tensor([1.0], requires_grad=True)
    with pytest.raises(TypeError, match="single Tensor"):
        SGD(x, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        SGD([x * 2], lr=0.1)
    with pytest.raises(TypeError, match="only optimize Tensors"):
        SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="appears twice"):
        SGD([x, x], lr=0.1)


BAD_ARGS = [
    (SGD, dict(lr=-0.1), "lr", "-0.1"),
    (SGD, dict(lr=0.1, momentum=-0.5), "momentum", "-0.5"),
    (SGD, dict(lr=0.1, weight_decay=-1e-4), "weight_decay", "-0.0001"),
    (SGD, dict(lr=0.1, nesterov=True), "nesterov", "momentum=0.0"),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov", "dampening=0.1"),
    (Adam, dict(lr=-1e-3), "lr", "-0.001"),
    (Adam, dict(betas=(1.0, 0.999)), "betas[0]", "1.0"),
    (Adam, dict(betas=(0.9, -0.1)), "betas[1]", "-0.1"),
    (Adam, dict(betas=(0.9,)), "betas", "(0.9,)"),
    (Adam, dict(eps=-1e-8), "eps", "-1e-08"),
    (AdamW, dict(weight_decay=-0.01), "weight_decay", "-0.01"),
    (AdamW, dict(betas=(0.9, 1.5)), "betas[1]", "1.5"),
    (RMSprop, dict(lr=-0.01), "lr", "-0.01"),
    (RMSprop, dict(alpha=-0.5), "alpha", "-0.5"),
    (RMSprop, dict(momentum=-0.9), "momentum", "-0.9"),
    (RMSprop, dict(eps=float("nan")), "eps", "nan"),
]


@pytest.mark.parametrize("cls,kw,arg,value", BAD_ARGS,
                         ids=[f"{c.__name__}-{a}" for c, _, a, _ in BAD_ARGS])
def test_bad_hyperparameters_name_the_argument(cls, kw, arg, value):
    with pytest.raises(ValueError) as info:
        cls([mg.tensor([1.0], requires_grad=True)], **kw)
    msg = str(info.value)
    assert cls.__name__ in msg and arg in msg and value in msg


def test_repr_lists_groups():
    opt = Adam([mg.tensor([1.0], requires_grad=True)], lr=0.25)
    text = repr(opt)
    assert text.startswith("Adam (") and "Parameter Group 0" in text and "lr: 0.25" in text


# --------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("cls,ref,kw", CASES[1::2], ids=CASE_IDS[1::2])
def test_state_dict_resume_through_checkpoint_is_exact(cls, ref, kw, tmp_path):
    full, _, _ = run_minigen(cls, kw, steps=12)

    x = mg.tensor(X0, requires_grad=True)
    w = mg.tensor(W0, requires_grad=True)
    opt = cls([x, w], **kw)
    for _ in range(7):
        opt.zero_grad()
        loss_fn(x, w).backward()
        opt.step()
    mg.save({"x": x, "w": w, "optim": opt.state_dict(), "step": 7}, tmp_path / "ckpt.npz")

    ckpt = mg.load(tmp_path / "ckpt.npz")
    x2 = mg.tensor(ckpt["x"].detach().numpy(), requires_grad=True)
    w2 = mg.tensor(ckpt["w"].detach().numpy(), requires_grad=True)
    opt2 = cls([x2, w2], lr=123.0)  # hyper-parameters come from the checkpoint
    opt2.load_state_dict(ckpt["optim"])
    assert opt2.param_groups[0]["lr"] == kw["lr"]
    for _ in range(ckpt["step"], 12):
        opt2.zero_grad()
        loss_fn(x2, w2).backward()
        opt2.step()
    np.testing.assert_array_equal(x2.detach().numpy(), full[-1][0])
    np.testing.assert_array_equal(w2.detach().numpy(), full[-1][1])


def test_state_dict_layout_is_pytorchs_and_a_copy():
    _, opt, _ = run_minigen(Adam, dict(lr=0.01, amsgrad=True), steps=2)
    sd = opt.state_dict()
    assert list(sd) == ["state", "param_groups"]
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert sorted(sd["state"]) == [0, 1]  # the frozen parameter (index 2) has no state
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 2
    before = sd["state"][0]["exp_avg"].copy()
    opt.param_groups[0]["params"][0].grad = mg.tensor(np.ones(3))
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)


def test_load_state_dict_casts_and_checks():
    _, opt64, _ = run_minigen(SGD, dict(lr=1e-3, momentum=0.9), steps=2)
    sd = opt64.state_dict()
    x = mg.tensor(X0, dtype=np.float32, requires_grad=True)
    w = mg.tensor(W0, dtype=np.float32, requires_grad=True)
    z = mg.tensor(np.ones(2), dtype=np.float32, requires_grad=True)
    opt = SGD([x, w, z], lr=1.0, momentum=0.9)
    opt.load_state_dict(sd)
    assert opt.state[x]["momentum_buffer"].dtype == np.float32
    with pytest.raises(ValueError, match="2 parameter groups but the optimizer has 1"):
        opt.load_state_dict({"state": {}, "param_groups": sd["param_groups"] * 2})
    with pytest.raises(ValueError, match="has 3 parameters in the state dict but 2"):
        SGD([x, w], lr=1.0).load_state_dict(sd)
    bad = opt64.state_dict()
    bad["state"][1]["momentum_buffer"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"'momentum_buffer' of parameter 1 has shape \(5,\)"):
        opt.load_state_dict(bad)


# --------------------------------------------------------------------------- schedules
def make_opt(lrs=(0.1,)):
    groups = [{"params": [mg.tensor([float(i)], requires_grad=True)], "lr": lr}
              for i, lr in enumerate(lrs)]
    return SGD(groups, lr=1.0)


def collect(opt, sched, steps):
    lrs = [sched.get_last_lr()]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
        assert [g["lr"] for g in opt.param_groups] == lrs[-1]
    return np.array(lrs)


def test_steplr_closed_form():
    opt = make_opt((0.1, 0.02))
    got = collect(opt, StepLR(opt, step_size=3, gamma=0.5), 10)
    t = np.arange(11)[:, None]
    np.testing.assert_allclose(got, np.array([0.1, 0.02]) * 0.5 ** (t // 3), rtol=1e-14)


def test_cosine_annealing_closed_form():
    opt = make_opt((0.1, 0.3))
    T, eta_min = 8, 0.01
    got = collect(opt, CosineAnnealingLR(opt, T_max=T, eta_min=eta_min), 12)
    t = np.arange(13)[:, None]
    want = eta_min + (np.array([0.1, 0.3]) - eta_min) * (1 + np.cos(np.pi * t / T)) / 2
    np.testing.assert_allclose(got, want, rtol=1e-14)
    assert got[T, 0] == pytest.approx(eta_min) and got[0, 1] == pytest.approx(0.3)


def test_linear_warmup_and_linear_lr():
    opt = make_opt((0.2,))
    got = collect(opt, LinearWarmup(opt, warmup_steps=4), 6)[:, 0]
    np.testing.assert_allclose(got, [0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2], atol=1e-15)
    opt = make_opt((0.3,))
    got = collect(opt, LinearLR(opt, start_factor=0.5, end_factor=0.25, total_iters=5), 7)[:, 0]
    t = np.minimum(np.arange(8), 5)
    np.testing.assert_allclose(got, 0.3 * (0.5 + (0.25 - 0.5) * t / 5), rtol=1e-14)


def test_sequential_warmup_then_cosine():
    opt = make_opt((0.1,))
    W, T = 3, 5
    sched = SequentialLR(opt, [LinearWarmup(opt, W, start_factor=0.1),
                               CosineAnnealingLR(opt, T_max=T)], milestones=[W])
    got = collect(opt, sched, 10)[:, 0]
    want = [0.1 * (0.1 + 0.9 * t / W) if t < W else 0.1 * (1 + math.cos(math.pi * (t - W) / T)) / 2
            for t in range(11)]
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-17)


def test_lr_scheduler_namespace_mirrors_torch():
    from minigen.optim.lr_scheduler import CosineAnnealingLR as C2
    import minigen.optim.lr_scheduler as lrs
    assert C2 is CosineAnnealingLR and lrs.StepLR is StepLR and optim.lr_scheduler is lrs
    assert all(hasattr(lrs, name) for name in lrs.__all__)        # `import *` works


@pytest.mark.parametrize("kind", ["step", "sequential"])
def test_scheduler_state_dict_resumes_identically(kind, tmp_path):
    def build():
        opt = make_opt((0.1, 0.05))
        if kind == "step":
            return opt, StepLR(opt, step_size=2, gamma=0.7)
        return opt, SequentialLR(opt, [LinearWarmup(opt, 4), CosineAnnealingLR(opt, 6)], [4])

    opt, sched = build()
    full = collect(opt, sched, 12)

    opt, sched = build()
    collect(opt, sched, 5)
    mg.save({"optim": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.npz")
    ckpt = mg.load(tmp_path / "s.npz")
    opt2, sched2 = build()
    opt2.load_state_dict(ckpt["optim"])
    sched2.load_state_dict(ckpt["sched"])
    assert sched2.get_last_lr() == list(full[5])
    rest = collect(opt2, sched2, 7)
    np.testing.assert_array_equal(rest, full[5:])


def test_scheduler_restore_order_does_not_matter():
    opt = make_opt((0.1,))
    sched = CosineAnnealingLR(opt, T_max=10)
    collect(opt, sched, 4)
    opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
    opt2 = make_opt((0.1,))
    opt2.load_state_dict(opt_sd)
    sched2 = CosineAnnealingLR(opt2, T_max=10)  # built after the optimizer was restored
    sched2.load_state_dict(sched_sd)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == sched.get_last_lr()[0]


@pytest.mark.parametrize("build,arg", [
    (lambda o: StepLR(o, step_size=0), "step_size"),
    (lambda o: StepLR(o, step_size=2, gamma=-0.5), "gamma"),
    (lambda o: CosineAnnealingLR(o, T_max=-3), "T_max"),
    (lambda o: CosineAnnealingLR(o, T_max=3, eta_min=-1.0), "eta_min"),
    (lambda o: LinearWarmup(o, warmup_steps=0), "warmup_steps"),
    (lambda o: LinearWarmup(o, warmup_steps=3, start_factor=1.5), "start_factor"),
    (lambda o: LinearLR(o, start_factor=0.0), "start_factor"),
    (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], milestones=[]), "milestones"),
])
def test_scheduler_bad_arguments(build, arg):
    with pytest.raises(ValueError, match=arg):
        build(make_opt())


# --------------------------------------------------------------------------- clipping
def with_grads(*grads):
    params = []
    for g in grads:
        p = mg.tensor(np.zeros_like(np.asarray(g, dtype=np.float64)), requires_grad=True)
        p.grad = mg.tensor(np.asarray(g, dtype=np.float64))
        params.append(p)
    return params


def test_clip_grad_norm_returns_preclip_norm_and_scales():
    g1, g2 = np.array([3.0, 0.0, -4.0]), np.array([[12.0]])
    params = with_grads(g1, g2) + [mg.tensor([1.0], requires_grad=True)]  # last: no grad
    total = clip_grad_norm_(params, max_norm=6.5)
    assert isinstance(total, mg.Tensor) and total.item() == pytest.approx(13.0)
    assert total.shape == () and isinstance(total.data, np.ndarray)
    coef = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(params[0].grad.numpy(), g1 * coef, rtol=1e-14)
    np.testing.assert_allclose(params[1].grad.numpy(), g2 * coef, rtol=1e-14)
    new_norm = math.sqrt(sum((p.grad.numpy() ** 2).sum() for p in params[:2]))
    assert new_norm == pytest.approx(6.5, rel=1e-6)
    assert params[2].grad is None


def test_clip_grad_norm_below_threshold_leaves_values():
    params = with_grads([0.3, -0.4])
    assert clip_grad_norm_(params, 1.0).item() == pytest.approx(0.5)
    np.testing.assert_allclose(params[0].grad.numpy(), [0.3, -0.4], rtol=1e-12)


@pytest.mark.parametrize("norm_type,expected", [(math.inf, 7.0), (1.0, 15.0), (3.0, None)])
def test_clip_grad_norm_other_norms(norm_type, expected):
    g1, g2 = np.array([1.0, -7.0]), np.array([3.0, 4.0])
    if expected is None:
        expected = (np.abs(np.concatenate([g1, g2])) ** norm_type).sum() ** (1 / norm_type)
    params = with_grads(g1, g2)
    total = clip_grad_norm_(params, max_norm=2.0, norm_type=norm_type)
    assert total.item() == pytest.approx(expected, rel=1e-12)
    flat = np.concatenate([p.grad.numpy().ravel() for p in params])
    norm = np.abs(flat).max() if math.isinf(norm_type) else (np.abs(flat) ** norm_type).sum() ** (
        1 / norm_type)
    assert norm == pytest.approx(2.0, rel=1e-6)


def test_clip_grad_norm_with_engine_gradients_and_shared_arrays():
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    b = mg.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()   # both gradients: one read-only broadcast array of ones
    total = clip_grad_norm_([a, b], max_norm=1.0)
    assert total.item() == pytest.approx(2.0)
    np.testing.assert_allclose(a.grad.numpy(), [0.5, 0.5], rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.5, 0.5], rtol=1e-5)  # scaled once, not twice


def test_clip_grad_norm_edge_cases():
    assert clip_grad_norm_([mg.tensor([1.0], requires_grad=True)], 1.0).item() == 0.0
    params = with_grads([np.nan, 1.0])
    with pytest.raises(RuntimeError, match="error_if_nonfinite"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm=-1"):
        clip_grad_norm_(with_grads([1.0]), -1)
    with pytest.raises(ValueError, match="norm_type=0"):
        clip_grad_norm_(with_grads([1.0]), 1.0, norm_type=0)
    single = with_grads([6.0, 8.0])[0]
    assert clip_grad_norm_(single, 5.0).item() == pytest.approx(10.0)  # a bare Tensor works


def test_clip_grad_value_():
    params = with_grads([-3.0, 0.5, 2.0], [[10.0]])
    clip_grad_value_(params, 1.0)
    np.testing.assert_array_equal(params[0].grad.numpy(), [-1.0, 0.5, 1.0])
    np.testing.assert_array_equal(params[1].grad.numpy(), [[1.0]])
    with pytest.raises(ValueError, match="clip_value=-2"):
        clip_grad_value_(params, -2)


# --------------------------------------------------------------------------- EMA
class TinyModel:
    def __init__(self):
        self.w = mg.tensor([1.0, 2.0], requires_grad=True)
        self.b = mg.tensor([[0.5]], requires_grad=True)

    def parameters(self):
        return iter([self.w, self.b])


def test_ema_update_equation():
    model = TinyModel()
    ema = EMA(model, decay=0.9)
    history = [model.w.detach().numpy().copy()]
    for k in range(1, 4):
        model.w.data[...] = [1.0 + k, 2.0 - k]
        ema.update()
        history.append(model.w.detach().numpy().copy())
    # unrolled: theta_ema = b^3 th0 + (1-b)(b^2 th1 + b th2 + th3)
    b = 0.9
    want = b ** 3 * history[0] + (1 - b) * (b ** 2 * history[1] + b * history[2] + history[3])
    np.testing.assert_allclose(ema.shadow_params[0], want, rtol=1e-6)
    np.testing.assert_allclose(ema.shadow_params[1], [[0.5]])  # constant stays constant


def test_ema_warmup_decay():
    ema = EMA([mg.tensor([0.0], requires_grad=True)], decay=0.99, warmup=True)
    decays = []
    for _ in range(200):
        decays.append(ema.current_decay())
        ema.update()
    n = np.arange(200)
    np.testing.assert_allclose(decays, np.minimum(0.99, (1 + n) / (10 + n)))
    assert EMA([mg.tensor([0.0])], decay=0.5).current_decay() == 0.5


def test_ema_store_copy_restore_and_context():
    model = TinyModel()
    ema = EMA(model, decay=0.5)
    model.w.data[...] = [3.0, 4.0]
    ema.update()   # shadow w = [2, 3]
    ema.store()
    ema.copy_to()
    np.testing.assert_allclose(model.w.detach().numpy(), [2.0, 3.0])
    ema.restore()
    np.testing.assert_allclose(model.w.detach().numpy(), [3.0, 4.0])
    with ema.average_parameters():
        np.testing.assert_allclose(model.w.detach().numpy(), [2.0, 3.0])
    np.testing.assert_allclose(model.w.detach().numpy(), [3.0, 4.0])
    with pytest.raises(RuntimeError, match="store"):
        ema.restore()


def test_ema_state_dict_round_trip(tmp_path):
    model = TinyModel()
    ema = EMA(model, decay=0.8, warmup=True)
    for k in range(3):
        model.w.data[...] += 1.0
        ema.update()
    mg.save(ema.state_dict(), tmp_path / "ema.npz")
    other = EMA(TinyModel(), decay=0.1)
    other.load_state_dict(mg.load(tmp_path / "ema.npz"))
    assert other.decay == 0.8 and other.warmup and other.num_updates == 3
    for a, b in zip(other.shadow_params, ema.shadow_params):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32


def test_ema_bad_arguments():
    with pytest.raises(ValueError, match="decay=1.5"):
        EMA([mg.tensor([0.0])], decay=1.5)
    ema = EMA([mg.tensor([0.0, 1.0])])
    with pytest.raises(ValueError, match="expected 1 parameters, got 2"):
        ema.update([mg.tensor([0.0, 1.0]), mg.tensor([2.0])])


# --------------------------------------------------------------------------- PyTorch itself
TORCH_NAMES = {SGD: "SGD", Adam: "Adam", AdamW: "AdamW", RMSprop: "RMSprop"}


@pytest.mark.parametrize("cls,ref,kw", CASES, ids=CASE_IDS)
def test_optimizer_matches_torch(cls, ref, kw):
    torch = pytest.importorskip("torch")
    x = torch.tensor(X0, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, TORCH_NAMES[cls])([x, w], **kw)
    c, b = torch.tensor(C), torch.tensor(B)
    want = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum() + \
            (0.5 * c * w ** 2 + b * w).sum()
        loss.backward()
        opt.step()
        want.append([x.detach().numpy().copy(), w.detach().numpy().copy()])
    got, _, _ = run_minigen(cls, kw)
    for g, r in zip(got, want):
        for a, bb in zip(g, r):
            np.testing.assert_allclose(a, bb, rtol=1e-9, atol=1e-12)


def test_schedulers_and_clipping_match_torch():
    torch = pytest.importorskip("torch")
    TS = torch.optim.lr_scheduler

    def torch_lrs(make, steps):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.1)
        sched = make(opt)
        out = [sched.get_last_lr()[0]]
        for _ in range(steps):
            opt.step()
            sched.step()
            out.append(sched.get_last_lr()[0])
        return np.array(out)

    pairs = [
        (lambda o: TS.StepLR(o, 3, 0.5), lambda o: StepLR(o, 3, 0.5)),
        (lambda o: TS.CosineAnnealingLR(o, 7, 0.01), lambda o: CosineAnnealingLR(o, 7, 0.01)),
        (lambda o: TS.LinearLR(o, 0.25, 1.0, 4), lambda o: LinearLR(o, 0.25, 1.0, 4)),
        (lambda o: TS.SequentialLR(o, [TS.LinearLR(o, 0.1, 1.0, 3), TS.CosineAnnealingLR(o, 6)],
                                   [3]),
         lambda o: SequentialLR(o, [LinearWarmup(o, 3, 0.1), CosineAnnealingLR(o, 6)], [3])),
    ]
    for make_torch, make_ours in pairs:
        opt = make_opt((0.1,))
        np.testing.assert_allclose(collect(opt, make_ours(opt), 12)[:, 0],
                                   torch_lrs(make_torch, 12), rtol=1e-6, atol=1e-12)

    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    for norm_type in (2.0, 1.0, math.inf):
        tp = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(g)
        t_total = torch.nn.utils.clip_grad_norm_(tp, 0.7, norm_type=norm_type)
        ours = with_grads(*grads)
        total = clip_grad_norm_(ours, 0.7, norm_type=norm_type)
        assert total.item() == pytest.approx(t_total.item(), rel=1e-12)
        for p, q in zip(ours, tp):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12)

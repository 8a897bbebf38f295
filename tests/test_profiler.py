"""``mg.autograd.profile``: every op's forward and backward timed once, where the step's time goes."""
import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F


def test_ops_are_counted_once_with_their_backward():
    x = mg.tensor(np.random.default_rng(0).standard_normal((4, 5)), requires_grad=True)
    with mg.autograd.profile() as prof:
        y = F.softmax(x.tanh(), -1).sum()
        y.backward()
    # tanh's backward and softmax's are built from other ops: charged to tanh and softmax, not listed apart
    assert set(prof.ops) == {"Tanh", "Softmax", "Sum"}
    assert all(s.calls == 1 and s.forward_s > 0 and s.backward_s > 0 for s in prof.ops.values())
    assert prof.ops["Tanh"].allocated_bytes == x.detach().numpy().nbytes
    assert prof.wall_s >= sum(s.total_s for s in prof.ops.values())
    table = prof.table()
    assert table.splitlines()[0].split()[:2] == ["op", "calls"] and "outside the ops" in table


class Boom(mg.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        raise FloatingPointError("boom")


def test_a_failing_op_does_not_stop_the_count():
    with mg.autograd.profile() as prof:
        with pytest.raises(FloatingPointError):
            Boom.apply(mg.randn(2))
        (mg.randn(3) * 2).sum()
    assert prof.ops["Mul"].calls == 1 and prof.ops["Sum"].calls == 1


def test_profiles_do_not_nest_and_end_cleanly():
    with mg.autograd.profile():
        with pytest.raises(RuntimeError, match="already running"):
            with mg.autograd.profile():
                pass
    with mg.autograd.profile() as again:          # the first one ended: a new one may start
        mg.randn(3).exp()
    assert list(again.ops) == ["Exp"]


def test_bench_profiles_a_training_step(capsys):
    from minigen.cli import main
    assert main(["bench", "--profile", "mlp-20x16", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "Linear" in out and "outside the ops" in out

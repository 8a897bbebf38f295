"""Anomaly mode and the trainer's NaN guard: a diverging computation is stopped where NaN/inf first
appears, with the op, the step and the offending tensors named — and healthy models raise no alarm."""
import json
import os
import sys

import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F
from minigen.autograd import AnomalyError, detect_anomaly, is_anomaly_enabled
from minigen.models import build_default
from minigen.serialization import load
from minigen.train import NonFiniteError

HERE = os.path.basename(__file__)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NumPy's own divide/overflow notes


def test_forward_names_the_op_its_inputs_and_the_calling_line():
    x = mg.tensor(np.array([0.0, 0.5, 1.0]), requires_grad=True)
    with detect_anomaly(), pytest.raises(AnomalyError) as info:
        x.log()
    message = str(info.value)
    assert message.startswith("Log.forward produced inf (1 of 3 values of a (3,) output)")
    assert "(3,) in [0, 1]" in message and f"{HERE}:" in message


def test_nan_from_nan_free_inputs_is_flagged_but_what_flows_downstream_is_not():
    inf = mg.tensor(np.array([np.inf, 1.0]))
    with detect_anomaly(), pytest.raises(AnomalyError, match=r"^Sub.forward produced nan \(1 of 2"):
        inf - inf                        # inf − inf = nan: the op that made the NaN
    poisoned = mg.tensor(np.array([np.nan, 1.0]), requires_grad=True)
    with detect_anomaly():
        y = (poisoned.exp() * 2 + 1).tanh().sum()     # NaN in, NaN out: not these ops' fault
        y.backward()
    assert np.isnan(poisoned.grad.numpy()[0])


def test_backward_names_the_op_and_where_its_forward_was_called():
    x = mg.tensor(np.array([0.0, 4.0]), requires_grad=True)
    with detect_anomaly():
        y = x.sqrt().sum()
        line = sys._getframe().f_lineno - 1
        with pytest.raises(AnomalyError) as info:
            y.backward()
    message = str(info.value)
    assert message.startswith("Sqrt.backward returned inf in the gradient of input 0 (shape (2,)) "
                              "from a finite incoming gradient")
    assert f"{HERE}:{line}" in message


def test_second_order_gradients_are_checked_too():
    x = mg.tensor(np.array([0.0, 2.0]), requires_grad=True)
    with detect_anomaly():
        (g,) = mg.autograd.grad((x ** 3).sum(), x, create_graph=True)    # 3x², finite
        penalty = g.sqrt().sum()                                          # √(3x²) has no slope at 0
        with pytest.raises(AnomalyError, match=r"^Sqrt.backward returned inf"):
            penalty.backward()


def test_the_mode_is_scoped_and_nests():
    assert not is_anomaly_enabled()
    with detect_anomaly():
        assert is_anomaly_enabled()
        with detect_anomaly(False):
            assert not is_anomaly_enabled()
            mg.tensor(np.array([0.0])).log()            # off: no check
        assert is_anomaly_enabled()
    assert not is_anomaly_enabled()

    @detect_anomaly()
    def decorated():
        return is_anomaly_enabled()
    assert decorated() and not is_anomaly_enabled()


def test_masked_attention_and_stable_losses_raise_no_false_alarm():
    rng = np.random.default_rng(0)
    q, k, v = (mg.tensor(rng.normal(size=(2, 2, 5, 4)), requires_grad=True) for _ in range(3))
    logits = mg.tensor(np.array([-200.0, 0.0, 200.0]), requires_grad=True)
    with detect_anomaly():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        loss = out.sum() + F.binary_cross_entropy_with_logits(logits, mg.tensor(np.array([1.0, 0.0, 1.0])))
        loss = loss + F.log_softmax(logits, dim=0).sum() + F.softplus(logits).sum()
        loss.backward()
    assert all(np.isfinite(t.grad.numpy()).all() for t in (q, k, v, logits))


@pytest.mark.parametrize("name", ["fvsbn", "nade", "pixelcnn", "gated_pixelcnn", "pixelrnn", "realnvp", "vae",
                                  "hvae", "ddpm", "classifier"])
def test_a_training_step_of_every_loss_based_family_raises_no_false_alarm(name):
    """(The GANs, RBMs and Boltzmann machines were checked the same way through
    ``minigen train … --detect-anomaly``; their steps are exercised in ``test_detect_anomaly_run``.)"""
    mg.manual_seed(0)
    model = build_default(name, (1, 8, 8))
    images = (np.random.default_rng(0).random((4, 1, 8, 8)) > 0.5).astype(np.float32)
    with detect_anomaly():
        loss, metrics = model.loss((images, np.arange(4)))
        loss.backward()
    assert np.isfinite(float(loss.item()))


# --------------------------------------------------------------------------- the trainer's guard
def _poisoning_trainer(run_dir, at_step, value, **kw):
    """test_train's tiny VAE, whose first encoder weight is set to ``value`` just before step ``at_step``
    (NaN, as a diverged update leaves it, or 1e38, whose products overflow to inf)."""
    from test_train import make_trainer
    trainer = make_trainer(run_dir, **kw)
    step, weight = trainer.step_fn, trainer.model.encoder.net[0].weight

    def poisoned(batch):
        if trainer.step + 1 == at_step:
            weight.data[...] = value
        return step(batch)
    trainer.step_fn = poisoned
    return trainer, weight


def test_a_nan_loss_stops_the_run_naming_the_step_and_tensors_and_keeps_the_checkpoint(tmp_path):
    trainer, weight = _poisoning_trainer(tmp_path / "run", at_step=13, value=np.nan)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit()
    message = str(info.value)
    assert message.startswith("step 13: ")
    assert "loss = nan" in message and "elbo = nan" in message
    assert "NaN/inf in the parameters encoder.net.0.weight (128/128), encoder.net.0.bias (8/8)," in message
    assert "NaN/inf in the gradients encoder.net.0.weight (128/128)" in message and "and 4 more" in message
    assert "the checkpoint of step 10 is intact" in message and "--detect-anomaly" in message
    checkpoint = load(str(tmp_path / "run" / "checkpoint.npz"))
    assert checkpoint["step"] == 10                                              # not overwritten
    assert all(np.isfinite(w.numpy()).all() for w in checkpoint["state"]["model"].values())


def test_detect_anomaly_run_names_the_op_and_the_model_line(tmp_path):
    trainer, _ = _poisoning_trainer(tmp_path / "run", at_step=3, value=1e38, detect_anomaly=True)
    with pytest.raises(AnomalyError) as info:
        trainer.fit()
    message = str(info.value)
    assert message.startswith("step 3: Linear.forward produced inf")
    assert "minigen/models/vae.py:" in message and "reached from" in message
    assert not is_anomaly_enabled()                  # the trainer's mode ended with the error


def test_cli_flag_reaches_the_trainer(tmp_path):
    from minigen.cli import main
    args = ["train", "gan", "--data", "ring8", "--steps", "2", "--batch-size", "16", "--g-hidden", "8",
            "--d-hidden", "8", "--maxout", "2", "--runs-dir", str(tmp_path), "--no-progress", "--detect-anomaly"]
    assert main(args) == 0
    config = json.loads((tmp_path / "gan" / "config.json").read_text())
    assert config["detect_anomaly"] is True

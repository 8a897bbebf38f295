"""The training harness: run folder, metrics, checkpoints, and exact resume (also after SIGKILL)."""
import json
import os

import numpy as np
import pytest

import minigen as mg
from minigen.data import DataLoader, dynamic_binarize
from minigen.models.vae import MLPDecoder, MLPEncoder, VAE
from minigen.optim import Adam, CosineAnnealingLR
from minigen.serialization import load
from minigen.train import RunExistsError, Trainer, parse_duration
from minigen.viz import read_jsonl


def make_trainer(run_dir, steps=40, fail_at=None, **kw):
    """A tiny VAE on random binary 'images' with dynamic binarization and a cosine schedule."""
    mg.manual_seed(0)
    grey = np.random.default_rng(0).random((90, 1, 4, 4)).astype(np.float32)
    loader = DataLoader(grey, batch_size=16, shuffle=True, seed=3, drop_last=True,
                        transform=lambda batch, rng: (dynamic_binarize(batch[0], rng),))
    model = VAE(MLPEncoder((1, 4, 4), 3, (8,)), MLPDecoder((1, 4, 4), 3, (8,)), 3)
    opt = Adam(model.parameters(), lr=1e-2)
    sched = CosineAnnealingLR(opt, T_max=steps)
    trainer = Trainer(str(run_dir), model, loader, steps, optimizer=opt, scheduler=sched,
                      checkpoint_every=10, log_every=4, config={"test": True}, progress=False,
                      sample_fn=lambda: model.sample(4), sample_every=20, **kw)
    if fail_at is not None:
        step = trainer.step_fn

        def crashing(batch):
            if trainer.step == fail_at:
                raise KeyboardInterrupt("simulated crash")
            return step(batch)
        trainer.step_fn = crashing
    return trainer


def params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def rows_without_time(path):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(path)]


def test_run_folder_has_everything(tmp_path):
    t = make_trainer(tmp_path / "run")
    last = t.fit()
    files = set(os.listdir(tmp_path / "run"))
    assert {"config.json", "metrics.jsonl", "checkpoint.npz", "loss.png",
            "samples_0000020.png", "samples_0000040.png"} <= files
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"test": True}
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(4, 41, 4))
    assert last["step"] == 40 and {"loss", "elbo", "kl", "epoch"} <= set(last)
    ckpt = load(str(tmp_path / "run" / "checkpoint.npz"))
    assert ckpt["step"] == 40 and set(ckpt["state"]) == {"model", "optimizer", "scheduler"}
    assert not [f for f in files if f.startswith(".tmp")]


@pytest.mark.parametrize("fail_at", [13, 20, 37])
def test_crash_and_resume_equals_uninterrupted(tmp_path, fail_at):
    straight = make_trainer(tmp_path / "a")
    straight.fit()
    crashed = make_trainer(tmp_path / "b", fail_at=fail_at)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    resumed = make_trainer(tmp_path / "b")
    assert resumed.fit(resume=True)["step"] == 40
    for k, v in params(straight.model).items():
        np.testing.assert_array_equal(params(resumed.model)[k], v, err_msg=k)
    # the curve has each step once, with the same values
    assert rows_without_time(tmp_path / "b" / "metrics.jsonl") == rows_without_time(tmp_path / "a" / "metrics.jsonl")


def test_existing_run_needs_resume(tmp_path):
    make_trainer(tmp_path / "r", steps=10).fit()
    with pytest.raises(RunExistsError, match="--resume"):
        make_trainer(tmp_path / "r", steps=10).fit()


def test_time_limit_stops_with_a_checkpoint(tmp_path):
    t = make_trainer(tmp_path / "t", steps=10_000, time_limit=1e-9)
    t.fit()
    assert load(str(tmp_path / "t" / "checkpoint.npz"))["step"] == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        Trainer("x", None, None, 0, optimizer=object())
    with pytest.raises(ValueError, match="optimizer .* or a step_fn"):
        Trainer("x", None, None, 5)
    assert parse_duration("90") == 90 and parse_duration("1.5h") == 5400 and parse_duration("45m") == 2700
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")


def test_custom_step_and_state_are_checkpointed(tmp_path):
    class Counter:
        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, d):
            self.n = d["n"]

    counter = Counter()

    def step(batch):
        counter.n += len(batch)
        return {"seen": counter.n}

    loader = DataLoader(np.arange(50.0), batch_size=5)
    Trainer(str(tmp_path / "c"), None, loader, 12, step_fn=step, state={"counter": counter},
            checkpoint_every=5, progress=False).fit()
    assert load(str(tmp_path / "c" / "checkpoint.npz"))["state"]["counter"] == {"n": 60}


# --------------------------------------------------------------------------- a real SIGKILL
@pytest.mark.slow
def test_ten_sigkills_at_random_moments_and_resumes_equal_one_uninterrupted_run(tmp_path):
    """``minigen eval kill-resume`` for the VAE (EMA, cosine schedule, dynamic binarization): every
    checkpoint loads after every kill, and the final state and curve are bit-identical."""
    from minigen.reliability import kill_resume_trial
    result = kill_resume_trial("vae", kills=10, out=str(tmp_path))
    assert result["kills"] == 10
    steps = [s for s in result["checkpoint_steps_after_kills"] if s is not None]
    assert steps == sorted(steps) and steps and steps[-1] < 1500        # progress, and killed mid-run
    assert result["arrays_compared"] > 20 and result["arrays_differing"] == []
    assert result["metrics_rows_equal"] and result["temp_files_left"] == 0


def test_resume_removes_files_half_written_by_a_kill(tmp_path):
    make_trainer(tmp_path / "run", steps=10).fit()
    orphan = tmp_path / "run" / ".checkpoint.x1y2.tmp.npz"
    orphan.write_bytes(b"PK\x03\x04 cut short")
    make_trainer(tmp_path / "run", steps=20).fit(resume=True)
    assert not orphan.exists() and load(str(tmp_path / "run" / "checkpoint.npz"))["step"] == 20

"""The command line: complete --help, one-line errors, and train → sample → eval → demo on the digits."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minigen.cli import build_parser, main

SUBCOMMANDS = [["demo"], ["train"], ["train", "fvsbn"], ["train", "nade"], ["train", "pixelcnn"], ["train", "gated_pixelcnn"], ["train", "pixelrnn"], ["train", "realnvp"], ["train", "planar"], ["train", "vae"], ["train", "hvae"], ["train", "rbm"], ["train", "dbn"], ["train", "bm"], ["train", "gan"], ["train", "dcgan"], ["train", "cgan"], ["train", "stylegan"], ["train", "cyclegan"], ["train", "ddpm"], ["train", "classifier"],
               ["sample"], ["eval"], ["bench"], ["list"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_help_is_complete(words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*words, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    # every option of the subcommand is described
    actions = parser._subparsers._group_actions[0].choices[words[0]]
    for name in words[1:]:
        actions = actions._subparsers._group_actions[0].choices[name]
    for action in actions._actions:
        for flag in action.option_strings:
            assert flag in text, flag
        if action.option_strings:
            assert action.help, f"{words} {action.option_strings} has no help text"


def run_cli(*args, cwd=None, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "minigen.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("args,message", [
    (["train", "vae", "--steps", "-3"], "expected a positive integer"),
    (["train", "vae", "--data", "mnist", "--data-dir", "/nonexistent/folder"], "/nonexistent/folder"),
    (["train", "gan9000"], "invalid choice"),
    (["train", "vae", "--hidden", "2x0"], "layer sizes"),
    (["train", "vae", "--time-limit", "soon"], "duration"),
    (["eval", "/nonexistent/run"], "not a finished run folder"),
    (["sample", "/nonexistent/run"], "not a finished run folder"),
])
def test_bad_arguments_give_one_line_errors(args, message, tmp_path):
    code, out, err = run_cli(*args, "--runs-dir", str(tmp_path)) if args[0] == "train" else run_cli(*args)
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("usage:")
             and not line.startswith(" ")]
    assert len(lines) == 1, err
    assert message in lines[0]


def test_list_names_models_and_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("vae", "hvae", "digits", "mnist", "binarized-mnist", "ring8", "checkerboard"):
        assert word in out


def test_train_sample_eval_on_digits(tmp_path, capsys):
    args = ["train", "vae", "--data", "digits", "--binarize", "dynamic", "--latent", "4", "--hidden", "32",
            "--steps", "120", "--batch-size", "32", "--runs-dir", str(tmp_path), "--name", "v",
            "--eval-every", "60", "--eval-examples", "20", "--eval-k", "5", "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "v"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "vae" and cfg["image_shape"] == [1, 8, 8] and cfg["total_steps"] == 120
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("test/iwae5" in r for r in rows)
    for png in ("loss.png", "prior_samples.png", "reconstructions.png", "latent_traversal.png"):
        assert (run / png).stat().st_size > 0
    # the same command again refuses to overwrite, --resume is accepted
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0

    assert main(["sample", str(run), "-n", "9", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "20", "--limit", "50", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "eval.json").read_text())
    assert printed == saved
    assert saved["test_examples"] == 50 and saved["test_nll_iwae20"] > 0
    assert saved["test_elbo"] <= -saved["test_nll_iwae20"] + 1.0    # the ELBO is (nearly) below L_20
    assert 0.0 <= saved["linear_probe_accuracy"] <= 1.0
    assert 0 <= saved["active_units"] <= 50


@pytest.mark.slow
def test_demo_writes_the_gallery(tmp_path):
    code, out, err = run_cli("demo", "--runs-dir", str(tmp_path), "--steps", "40", "--no-progress",
                             timeout=900)     # 21 models, each trained, evaluated and drawn; cold Numba caches
    assert code == 0, err
    index = tmp_path / "demo" / "index.html"
    html = index.read_text()
    assert str(index) in out
    from minigen.demo import DEMOS
    folders = {argv[0]: tmp_path / "demo" / f"{i + 1}-{argv[0]}" for i, (_, _, argv) in enumerate(DEMOS)}
    for name in ("vae", "hvae"):
        assert os.path.exists(folders[name] / "prior_samples.png")
    assert os.path.exists(folders["rbm"] / "filters.png")
    assert os.path.exists(folders["dbn"] / "dbn_samples.png")
    for name in ("fvsbn", "nade", "pixelcnn", "gated_pixelcnn", "pixelrnn"):
        assert os.path.exists(folders[name] / "ar_samples.png")
    assert os.path.exists(folders["realnvp"] / "flow_interpolation.png")
    assert os.path.exists(folders["planar"] / "flow_density.png")
    # the GAN family, scored by the demo's own classifier
    gans = {tuple(argv[:4]): tmp_path / "demo" / f"{i + 1}-{argv[0]}" for i, (_, _, argv) in enumerate(DEMOS)
            if argv[0] in ("gan", "cgan", "stylegan", "cyclegan", "ddpm")}
    pictures = {p.name for folder in gans.values() for p in folder.iterdir()}
    assert {"gan_samples_2d.png", "gan_samples.png", "style_mixing.png", "style_noise.png", "cyclegan.png",
            "ddpm_samples.png", "ddpm_strip.png"} <= pictures
    for column in ("test_nll", "true_entropy", "test_nll_iwae1000", "test_log_prob_ais", "test_bound_ais",
                   "test_accuracy", "modes", "frechet_distance", "class_accuracy", "label_agreement_x_gx"):
        assert column in html
    assert "<img" in html and "minigen train" in html


def test_scoring_subset_is_a_seeded_spread_out_sample():
    from minigen.runs import scoring_subset

    keep = scoring_subset(10000, 1000, seed=0)
    assert len(np.unique(keep)) == 1000 and keep.min() >= 0
    assert keep.max() > 9000            # not the first 1000: test files can be sorted by class
    np.testing.assert_array_equal(keep, scoring_subset(10000, 1000, seed=0))
    np.testing.assert_array_equal(scoring_subset(50, None, seed=0), np.arange(50))
    np.testing.assert_array_equal(scoring_subset(50, 80, seed=0), np.arange(50))


def test_rbm_trains_by_contrastive_divergence_and_is_scored_by_ais(tmp_path, capsys):
    args = ["train", "rbm", "--data", "digits", "--binarize", "threshold", "--hidden", "12", "--epochs", "4",
            "--cd-k", "2", "--runs-dir", str(tmp_path), "--name", "r", "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "r"
    for png in ("filters.png", "gibbs_samples.png"):
        assert (run / png).stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", str(run), "--ais-scale", "0.05", "--ais-chains", "50", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    # 12 hidden units: log Z is also computed exactly, and AIS agrees with it
    assert abs(scores["log_z_ais"] - scores["log_z_exact"]) < 0.1
    assert scores["test_log_prob_lower"] <= scores["test_log_prob_ais"] <= scores["test_log_prob_upper"]
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    # --schedule cosine decays CD's rate to lr * min_lr_ratio over the run
    assert main([*args, "--schedule", "cosine", "--min-lr-ratio", "0.1", "--name", "r2"]) == 0
    assert json.loads((tmp_path / "r2" / "config.json").read_text())["schedule"] == "cosine"


def test_gaussian_rbm_trains_on_real_valued_pixels(tmp_path, capsys):
    # the digits' grey levels as they are: Gaussian visibles, scored as a log-density by AIS
    # (12 hidden units, so log Z is also enumerated and AIS is checked against it)
    args = ["train", "rbm", "--visible", "gaussian", "--data", "digits", "--hidden", "12", "--epochs", "3",
            "--lr", "0.001", "--runs-dir", str(tmp_path), "--name", "g", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "g"), "--ais-scale", "0.05", "--ais-chains", "50", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert abs(scores["log_z_ais"] - scores["log_z_exact"]) < 0.1
    assert np.isfinite(scores["test_log_prob_ais"]) and (tmp_path / "g" / "gibbs_samples.png").exists()


def test_energy_experiments_run_from_eval(tmp_path, capsys):
    assert main(["eval", "bm", "--out", str(tmp_path / "bm")]) == 0
    out = capsys.readouterr().out
    assert "total = 39.70" in out                                  # the slide's table (Eq. EBM-8)
    result = json.loads((tmp_path / "bm" / "eval.json").read_text())
    assert result["p_visible"] == {"11": 0.466, "10": 0.305, "01": 0.1441, "00": 0.0849}
    assert result["gibbs_p_value"] > 0.01 and (tmp_path / "bm" / "annealing.png").exists()

    assert main(["eval", "hopfield", "--out", str(tmp_path / "h")]) == 0
    result = json.loads((tmp_path / "h" / "eval.json").read_text())
    assert result["recall"]["P3"]["equals"] == "P1" and result["recall"]["P4"]["equals"] == "P2"
    assert (tmp_path / "h" / "recall.png").exists()

    assert main(["eval", "hopfield", "--capacity", "--sizes", "60,120", "--out", str(tmp_path / "c")]) == 0
    result = json.loads((tmp_path / "c" / "eval.json").read_text())
    assert set(result["critical_loads"]) == {"60", "120"} and (tmp_path / "c" / "capacity.png").exists()
    assert 0.05 < result["measured_critical_load"] < 0.3 and "measured critical load" in capsys.readouterr().out


def test_bm_learns_bars_and_stripes_lowering_the_exact_kl(tmp_path, capsys):
    # 16 visible + 4 hidden units: G = KL(P+ || P-) is enumerated every step (Eq. EBM-10)
    args = ["train", "bm", "--steps", "20", "--log-every", "5", "--runs-dir", str(tmp_path), "--name", "b",
            "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "b"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] > rows[-1]["kl"] + 0.5
    assert (run / "gibbs_samples.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", str(run), "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    # the test set is the training set: G = -H(P+) - mean log-likelihood, with -H = ln(1/30)
    assert scores["test_neg_entropy"] == pytest.approx(-np.log(30))
    assert scores["kl_exact"] == pytest.approx(scores["test_neg_entropy"] - scores["test_log_likelihood_exact"])
    assert 0 < scores["model_mass_on_test_patterns"] < 1
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    capsys.readouterr()
    assert main([*args, "--schedule", "cosine", "--name", "b2"]) == 2       # its update keeps a constant lr
    assert "supports --schedule constant" in capsys.readouterr().err


@pytest.mark.parametrize("model,extra", [
    ("fvsbn", []),
    ("nade", ["--hidden", "16"]),
    ("pixelcnn", ["--channels", "8", "--blocks", "1", "--first-kernel", "3", "--head-channels", "8"]),
    ("gated_pixelcnn", ["--channels", "4", "--layers", "2", "--first-kernel", "3", "--head-channels", "8",
                        "--conditional"]),
    ("pixelrnn", ["--channels", "4", "--layers", "1", "--first-kernel", "3", "--head-channels", "8"]),
])
def test_autoregressive_models_train_sample_and_score_exactly(model, extra, tmp_path, capsys):
    args = ["train", model, *extra, "--data", "digits", "--binarize", "dynamic", "--steps", "30",
            "--batch-size", "32", "--runs-dir", str(tmp_path), "--name", "m", "--eval-every", "15",
            "--eval-examples", "20", "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "m"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("test/nll" in r for r in rows) and (run / "ar_samples.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["eval", str(run), "--limit", "40", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 < scores["test_nll"] < 64 * np.log(2) * 1.5 and scores["test_examples"] == 40
    assert scores["bits_per_dim"] == pytest.approx(scores["test_nll"] / (64 * np.log(2)))
    if model == "gated_pixelcnn":        # summing the label out costs nats: -log p(x) >= -log p(x|y) - log 10 on average
        assert scores["test_nll_label_summed_out"] > 0
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0


def test_flows_fit_toy_points_and_images(tmp_path, capsys):
    for model, extra in (("planar", ["--layers", "4"]), ("realnvp", ["--layers", "4", "--hidden", "16"])):
        assert main(["train", model, *extra, "--data", "moons", "--steps", "60", "--runs-dir", str(tmp_path),
                     "--name", model, "--no-progress"]) == 0
        capsys.readouterr()
        assert main(["eval", str(tmp_path / model), "--limit", "500", "--no-progress"]) == 0
        scores = json.loads(capsys.readouterr().out)
        assert scores["gap_nats"] == pytest.approx(scores["test_nll"] - scores["true_entropy"], abs=1e-6)
        assert scores["gap_nats"] > -0.05 and (tmp_path / model / "flow_density.png").exists()
        assert (tmp_path / model / "flow_samples_2d.png").exists()
        assert main(["sample", str(tmp_path / model), "-n", "100", "--out", str(tmp_path / "pts.png")]) == 0
        assert (tmp_path / "pts.png").stat().st_size > 0
    assert main(["train", "realnvp", "--data", "digits", "--hidden", "8", "--blocks", "1", "--steps", "20",
                 "--batch-size", "16", "--runs-dir", str(tmp_path), "--name", "img", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "img"), "--limit", "50", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 < scores["bits_per_dim"] < 8
    assert (tmp_path / "img" / "flow_interpolation.png").exists()
    code, _, err = run_cli("train", "planar", "--data", "digits", "--steps", "1", "--runs-dir", str(tmp_path))
    assert code == 2 and "use realnvp for images" in err


def test_planar_potentials_experiment(tmp_path, capsys):
    assert main(["eval", "planar", "--flow-lengths", "2", "--flow-steps", "150", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["kl"]) == {f"U{i}/K=2" for i in range(1, 5)}
    assert all(np.isfinite(v) and v > -0.05 for v in result["kl"].values())   # a KL, up to Monte Carlo noise
    assert (tmp_path / "planar_effect.png").exists() and (tmp_path / "planar_potentials.png").exists()


@pytest.mark.equation("GAN-2")
def test_gan_trains_by_algorithm_1_and_is_scored_on_modes(tmp_path, capsys):
    small = ["--g-hidden", "16", "--d-hidden", "16", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(["train", "gan", "--data", "ring8", "--steps", "30", "--k", "2", "--batch-size", "20",
                 "--packing", "2", "--eval-every", "15", "--name", "pac", *small]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (tmp_path / "pac" / "metrics.jsonl").read_text().splitlines()]
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(rows[-2])
    assert rows[-2]["epoch"] == pytest.approx(30 * 2 * 20 * 2 / 50000, abs=1e-3)   # k*m*packing examples a step
    curve = [r for r in rows if "modes/modes" in r]         # the mode scores during training
    assert [r["step"] for r in curve] == [15, 30]
    assert main(["eval", str(tmp_path / "pac"), "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["modes"] <= 8 and sum(scores["counts"]) == round(2500 * scores["high_quality"])
    assert curve[-1]["modes/high_quality"] == scores["high_quality"]      # same samples, same seed
    assert (tmp_path / "pac" / "gan_samples_2d.png").exists()
    # resuming a finished run with more steps continues the game (optimizers and replay store come back)
    assert main(["train", "gan", "--data", "ring8", "--steps", "10", "--replay", "0.5", "--name", "rep",
                 *small]) == 0
    assert main(["train", "gan", "--data", "ring8", "--steps", "20", "--replay", "0.5", "--name", "rep",
                 "--resume", *small]) == 0
    code, _, err = run_cli("train", "gan", "--data", "digits", "--arch", "mlp", "--steps", "1",
                           "--runs-dir", str(tmp_path))
    assert code == 2 and "MLP players take unlabelled points" in err
    code, _, err = run_cli("train", "gan", "--data", "ring8", "--arch", "dcgan", "--steps", "1",
                           "--runs-dir", str(tmp_path))
    assert code == 2 and "needs square images" in err


@pytest.mark.equation("GAN-5")
def test_gan_modes_experiment_tabulates_every_method(tmp_path, capsys):
    assert main(["eval", "gan-modes", "--gan-data", "ring8", "--gan-seeds", "1", "--gan-steps", "20",
                 "--gan-options", "--g-hidden 8 --d-hidden 8 --batch-size 20", "--jobs", "2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["table"]) == {f"ring8/{m}" for m in ("gan", "minibatch", "replay", "pacgan2")}
    assert len(result["runs"]) == 4 and "| ring8 | pacgan2 |" in out
    assert (tmp_path / "gan_modes.png").exists()
    # a second call reuses the finished runs
    assert main(["eval", "gan-modes", "--gan-data", "ring8", "--gan-seeds", "1", "--gan-steps", "20",
                 "--gan-options", "--g-hidden 8 --d-hidden 8 --batch-size 20", "--out", str(tmp_path)]) == 0
    assert "0 to train" in capsys.readouterr().out
    # scores made elsewhere are merged: a fresh folder trains nothing and gives the same table
    for path in (tmp_path / "runs").glob("*/*"):          # keep only what a scored run leaves
        if path.is_file() and path.name not in ("modes.json", "samples.npy"):
            path.unlink()
    fresh = tmp_path / "fresh"
    assert main(["eval", "gan-modes", "--gan-data", "ring8", "--gan-seeds", "1", "--gan-steps", "20",
                 "--gan-merge", str(tmp_path / "runs"), "--out", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "4 scored runs taken" in out and "0 to train" in out
    assert json.loads((fresh / "eval.json").read_text())["table"] == result["table"]
    # and the other way: a run scored here is added to the shared folder at once (samples of seed 0 only)
    shared = tmp_path / "shared"
    assert main(["eval", "gan-modes", "--gan-data", "ring8", "--gan-methods", "gan", "--gan-seeds", "2",
                 "--gan-steps", "20", "--gan-options", "--g-hidden 8 --d-hidden 8 --batch-size 20",
                 "--gan-merge", str(shared), "--out", str(tmp_path / "both")]) == 0
    assert "0 scored runs taken" in capsys.readouterr().out
    assert sorted(p.name for p in shared.iterdir()) == ["ring8-gan-s0", "ring8-gan-s1"]
    assert (shared / "ring8-gan-s0" / "samples.npy").exists() and not (shared / "ring8-gan-s1" / "samples.npy").exists()
    assert json.loads((shared / "ring8-gan-s1" / "modes.json").read_text()) == \
        json.loads((tmp_path / "both" / "runs" / "ring8-gan-s1" / "modes.json").read_text())


@pytest.mark.equation("GAN-7")
def test_image_gans_are_scored_by_a_trained_classifier(tmp_path, capsys):
    """The judge: a classifier run; a DCGAN's samples scored by Frechet distance (vs held-out real data,
    the floor), classes covered and, conditionally, accuracy on the requested class."""
    common = ["--data", "digits", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(["train", "classifier", "--steps", "120", "--name", "digits-classifier", *common]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "digits-classifier"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] > 0.9
    assert main(["train", "gan", "--steps", "10", "--width", "4", "--batch-size", "16", "--conditional",
                 "--name", "cgan", *common]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "cgan"), "--classifier", str(tmp_path / "digits-classifier"),
                 "--samples", "200", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["class_accuracy"] <= 1 and 0 <= scores["classes_covered"] <= 10
    assert sum(scores["class_histogram"]) == 200
    assert 0 <= scores["frechet_distance_real"] < scores["frechet_distance"]   # an untrained G is far off
    assert (tmp_path / "cgan" / "gan_samples.png").exists()
    code, _, err = run_cli("eval", str(tmp_path / "cgan"), "--classifier", str(tmp_path / "nothing"))
    assert code == 2 and "minigen train classifier" in err


@pytest.mark.equation("GAN-10")
def test_gan_presets_are_the_gan_recipe_with_other_defaults(tmp_path):
    from minigen.models.gans.style import StyleGenerator
    from minigen.runs import load_run
    parser = build_parser()
    cgan = parser.parse_args(["train", "cgan"])
    assert (cgan.arch, cgan.conditional, cgan.data, cgan.lr) == ("dcgan", True, "mnist", 2e-4)
    style = parser.parse_args(["train", "stylegan", "--penalty", "none"])          # options still override
    assert (style.arch, style.penalty, parser.parse_args(["train", "stylegan"]).penalty) == ("stylegan", "none", "r1")
    assert main(["train", "stylegan", "--data", "digits", "--binarize", "none", "--width", "8", "--steps", "2",
                 "--batch-size", "8", "--runs-dir", str(tmp_path), "--name", "s", "--no-progress"]) == 0
    _, cfg, model = load_run(str(tmp_path / "s"))
    assert cfg["model"] == "stylegan" and isinstance(model.generator, StyleGenerator)
    assert (tmp_path / "s" / "style_mixing.png").exists()


def test_ema_runs_are_sampled_and_scored_with_their_averaged_weights(tmp_path):
    from minigen.runs import load_run
    from minigen.serialization import load
    assert main(["train", "vae", "--data", "digits", "--binarize", "dynamic", "--latent", "2", "--hidden", "16",
                 "--steps", "30", "--ema", "0.9", "--runs-dir", str(tmp_path), "--name", "e", "--no-progress"]) == 0
    state = load(str(tmp_path / "e" / "checkpoint.npz"))["state"]
    _, _, model = load_run(str(tmp_path / "e"))
    loaded = [np.asarray(p.data) for p in model.parameters()]
    for value, shadow in zip(loaded, state["ema"]["shadow_params"]):
        np.testing.assert_array_equal(value, shadow)
    raw = [np.asarray(v) for v in state["model"].values()]
    assert not all(any(np.array_equal(r, v) for r in raw if r.shape == v.shape) for v in loaded)
    code, _, err = run_cli("train", "gan", "--data", "ring8", "--steps", "1", "--ema", "0.99",
                           "--runs-dir", str(tmp_path))
    assert code == 2 and "--ema" in err and "keeps no average" in err


@pytest.mark.equation("DIF-13")
@pytest.mark.equation("DIF-14")
def test_ddpm_trains_samples_with_both_samplers_and_is_scored(tmp_path, capsys):
    small = ["--data", "digits", "--binarize", "none", "--timesteps", "40", "--channels", "8", "--channel-mults", "1,2",
             "--attention-levels", "1", "--groups", "4", "--steps", "6", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(["train", "ddpm", *small, "--conditional", "--ema", "0.9", "--name", "d"]) == 0
    run = tmp_path / "d"
    assert (run / "ddpm_samples.png").exists() and (run / "ddpm_strip.png").exists()
    capsys.readouterr()
    for options in ([], ["--sampler", "ddim", "--steps", "5", "--guidance", "2"]):
        assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png"), *options]) == 0
    assert main(["train", "classifier", "--data", "digits", "--binarize", "none", "--steps", "10",
                 "--runs-dir", str(tmp_path), "--name", "judge", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--classifier", str(tmp_path / "judge"), "--samples", "40", "--sampler", "ddim",
                 "--steps", "4", "--guidance", "1", "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["samples"] == 40 and 0 <= scores["class_accuracy"] <= 1 and scores["frechet_distance_real"] >= 0
    assert (scores["sampler"], scores["steps"], scores["guidance"]) == ("ddim", 4, 1.0)
    assert main(["eval", str(run), "--classifier", str(tmp_path / "judge"), "--samples", "10", "--sampler", "ddim",
                 "--steps", "2", "--bound", "--limit", "6", "--no-progress", "--output", "bound.json"]) == 0
    scores = json.loads(capsys.readouterr().out)                      # Eq. DIF-7 on 6 test digits, 8-bit levels
    assert scores["bound_examples"] == 6 and 0 < scores["bits_per_dim"] < 20
    assert scores["test_bound_nats"] == pytest.approx(scores["bits_per_dim"] * 64 * np.log(2))
    assert main(["eval", str(run), "--samples", "0", "--bound", "--bound-terms", "sampled", "--no-progress",
                 "--output", "b2.json"]) == 0
    scores = json.loads(capsys.readouterr().out)            # one random term per image: all test digits, no samples
    assert scores["bound_terms"] == "sampled" and scores["bound_examples"] > 250 and scores["bits_per_dim"] > 0
    assert "frechet_distance" not in scores and "sampler" not in scores
    for prediction in ("x0", "v"):                                    # the other two parameterisations train too
        assert main(["train", "ddpm", *small, "--prediction", prediction, "--name", prediction]) == 0
    assert main(["train", "ddpm", *small, "--learned-variance", "--conditional", "--name", "lv"]) == 0   # L_hybrid
    rows = [json.loads(line) for line in (tmp_path / "lv" / "metrics.jsonl").read_text().splitlines()]
    assert {"simple", "vlb"} <= set(rows[-1]) and np.isfinite(rows[-1]["vlb"])
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "lv"), "--classifier", str(tmp_path / "judge"), "--samples", "10",
                 "--guidance", "1", "--bound", "--limit", "3", "--no-progress"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["bits_per_dim"])
    code, _, err = run_cli("train", "ddpm", *small[:-3], "--channel-mults", "1,2,2,2,2", "--runs-dir", str(tmp_path))
    assert code == 2 and "need sides divisible by 16" in err
    assert main(["train", "vae", "--data", "digits", "--binarize", "dynamic", "--latent", "2", "--hidden", "8",
                 "--steps", "2", "--runs-dir", str(tmp_path), "--name", "vae", "--no-progress"]) == 0
    code, _, err = run_cli("sample", str(tmp_path / "vae"), "--sampler", "ddim")
    assert code == 2 and "takes no --sampler option" in err


def test_latent_diffusion_trains_on_an_autoencoder_run_and_samples_a_caption(tmp_path):
    common = ["--data", "digits", "--binarize", "none", "--runs-dir", str(tmp_path), "--no-progress"]
    code, _, err = run_cli("train", "latent_diffusion", *common, "--steps", "2")
    assert code == 2 and "--autoencoder RUN is required" in err
    assert main(["train", "autoencoder", *common, "--width", "8", "--steps", "5", "--name", "ae"]) == 0
    code, _, err = run_cli("train", "latent_diffusion", *common, "--autoencoder", str(tmp_path / "ae"), "--steps", "2",
                           "--conditional")
    assert code == 2 and "--conditional not supported" in err
    assert main(["train", "latent_diffusion", *common, "--autoencoder", str(tmp_path / "ae"), "--channels", "8",
                 "--context-dim", "8", "--timesteps", "20", "--steps", "3", "--name", "ldm"]) == 0
    cfg = json.loads((tmp_path / "ldm" / "config.json").read_text())
    assert cfg["latent_scale"] > 0 and len(cfg["ink_thresholds"]) == 10 and cfg["autoencoder_config"]["width"] == 8
    shutil.rmtree(tmp_path / "ae")                     # the run holds the autoencoder's weights itself
    out = tmp_path / "seven.png"
    assert main(["sample", str(tmp_path / "ldm"), "-n", "4", "--caption", "a thin seven", "--sampler", "ddim",
                 "--steps", "3", "--guidance", "2", "--out", str(out)]) == 0
    assert out.exists()
    code, _, err = run_cli("sample", str(tmp_path / "ldm"), "-n", "2", "--caption", "a fat seven")
    assert code == 2 and "unknown: ['fat']" in err

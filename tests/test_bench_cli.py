"""The benchmark machinery and the command line (tiny shapes: no timing is asserted)."""
import json

import numpy as np

from minigen import bench
from minigen.cli import main


def test_run_cases_reports_every_column(capsys, monkeypatch):
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    cases = [("tiny-conv", "conv", (2, 3, 6, 6), (4, 3, 3, 3), 1, 1, 0),
             ("tiny-convT", "convT", (2, 4, 3, 3), (4, 2, 4, 4), 2, 1, 0),
             ("tiny-attn", 2, 2, 5, 4)]
    rows = bench.run_cases(cases, repeat=1, rounds=2)
    assert [r["case"] for r in rows] == ["tiny-conv", "tiny-convT", "tiny-attn"]
    for row in rows:
        assert row["minigen_ms"] > 0 and row["reference_ms"] > 0
    printed = capsys.readouterr().out
    assert "tiny-convT" in printed


def test_cli_bench_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "ATTENTION_CASES", [("tiny-attn", 1, 1, 4, 2)])
    out = tmp_path / "bench.json"
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    assert main(["bench", "--suite", "attention", "--repeat", "1", "--rounds", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["rows"][0]["case"] == "tiny-attn"
    assert "numba_threads" in report["header"]
    assert "minigen ms" in capsys.readouterr().out


def test_sampling_suite_compares_the_two_samplers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "SAMPLING_CASES", [("tiny", "PixelCNN", {"channels": 4, "blocks": 3,
                                                                          "first_kernel_size": 3,
                                                                          "head_channels": 4}, (1, 10, 6), 3)])
    out = tmp_path / "bench.json"
    assert main(["bench", "--suite", "sampling", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["case"] == "tiny" and row["identical"] and row["naive_s"] > 0 and row["incremental_s"] > 0
    assert "identical" in capsys.readouterr().out


def test_dcgan_suite_times_one_training_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "DCGAN_CASE", ("tiny-dcgan", 4, 4, 8))
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    out = tmp_path / "bench.json"
    assert main(["bench", "--suite", "dcgan", "--repeat", "1", "--rounds", "1", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["case"] == "tiny-dcgan" and row["minigen_ms"] > 0
    assert "one training step" in capsys.readouterr().out


def test_diffusion_suite_times_the_fused_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "DIFFUSION_CASES", [("tiny-p", "p", (2, 1, 4, 4)), ("tiny-q", "q", (2, 3, 4, 4))])
    monkeypatch.setattr(bench, "UNET_CASE", ("tiny-unet", 2, 8, (1, 2), (1,)))
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    out = tmp_path / "bench.json"
    assert main(["bench", "--suite", "diffusion", "--repeat", "1", "--rounds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["case"] for r in rows] == ["tiny-p", "tiny-q", "tiny-unet"]
    assert all(r["fused_us"] > 0 and r["numpy_us"] > 0 for r in rows[:2]) and rows[2]["minigen_ms"] > 0
    assert rows[0]["target_speedup_vs_numpy"] == 3.0 and "target_speedup_vs_numpy" not in rows[1]
    for kind, shape in (("p", (2, 3)), ("q", (2, 3))):          # the three closures compute the same update
        values = [np.asarray(fn()) for fn in bench.diffusion_updates(kind, shape).values()]
        for v in values[1:]:
            np.testing.assert_allclose(v, values[0], rtol=1e-5, atol=1e-6)
    assert "fused diffusion steps" in capsys.readouterr().out


def _tiny_suite(monkeypatch):
    """Every case of ``--suite all`` at toy size (the step cases keep their networks, with batches of 2)."""
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(bench, "CONV_CASES", [("tiny-conv", "conv", (2, 3, 6, 6), (4, 3, 3, 3), 1, 1, 0)])
    monkeypatch.setattr(bench, "ATTENTION_CASES", [("tiny-attn", 1, 1, 4, 2)])
    monkeypatch.setattr(bench, "DIFFUSION_CASES", [("tiny-p", "p", (2, 1, 4, 4))])
    monkeypatch.setattr(bench, "DCGAN_CASE", ("tiny-dcgan", 2, 4, 8))
    monkeypatch.setattr(bench, "UNET_CASE", ("tiny-unet", 2, 8, (1, 2), (1,)))
    monkeypatch.setattr(bench, "VAE_CASE", ("vae", 2))
    monkeypatch.setattr(bench, "PIXELCNN_CASE", ("pixelcnn", 2))
    monkeypatch.setattr(bench, "RBM_CASE", ("rbm", 20, 784, 8, 10))


def test_suite_all_writes_one_report_and_a_chart(tmp_path, monkeypatch, capsys):
    _tiny_suite(monkeypatch)
    probes = []
    monkeypatch.setattr(bench, "peak_memory_mb", lambda *probe: probes.append(probe) or 1.5)   # (tested below)
    assert main(["bench", "--suite", "all", "--repeat", "1", "--rounds", "1", "--no-reference",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    cases = [r["case"] for r in report["rows"]]
    assert cases == ["tiny-conv", "tiny-attn", "tiny-p", "vae", "pixelcnn", "tiny-dcgan", "tiny-unet",
                     "mlp-20x16", "rbm", "rbm-torch"]
    assert {"numba_threads", "torch"} <= set(report["header"])
    steps = {r["case"]: r for r in report["rows"]}
    for name in ("vae", "pixelcnn", "mlp-20x16", "rbm"):
        assert steps[name]["minigen_ms"] > 0 and steps[name]["minigen_peak_mb"] >= 0
        other = "sklearn" if name == "rbm" else "torch"
        if f"{other}_ms" in steps[name]:              # installed: ratio, target and its memory too
            assert steps[name]["ratio"] > 0 and steps[name][f"{other}_peak_mb"] >= 0
    assert steps["mlp-20x16"].get("target", 3.0) == 3.0 and steps["vae"].get("target", 2.5) == 2.5
    assert ("vae", "minigen", ("vae", 2)) in probes and ("rbm", "sklearn", ("rbm", 20, 784, 8, 10)) in probes
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "peak memory two steps add" in capsys.readouterr().out


def test_the_twins_have_the_same_parameters_as_the_models():
    """The PyTorch twins of the step cases mirror minigen's models (same parameter count; checked
    inside each case too), and the RBM closures run."""
    import pytest
    pytest.importorskip("torch")
    for make in (bench.vae_steps, bench.pixelcnn_steps, bench.overhead_steps):
        mine, theirs = make()
        assert theirs is not None
    mine, sklearn, torch_epoch = bench.rbm_epochs(("rbm", 20, 784, 8, 10))
    mine(), torch_epoch()


def test_memory_probe_measures_a_fresh_process():
    """The probe runs in its own interpreter and reports what two steps add to the built model."""
    mb = bench.peak_memory_mb("vae", "minigen", ("vae", 2))
    assert mb is not None and 0 <= mb < 500

"""The lecture companion: every walk-through of ``lectures/`` runs in fast mode (so none can rot), writes
its figures, and ``minigen lecture`` refuses what does not exist."""
import glob
import os

import pytest

from minigen.cli import LECTURE_SECTIONS, main
from minigen.equations import source_root
from minigen.lecture import run_lecture, walkthrough_path

WALKTHROUGHS = sorted(glob.glob(os.path.join(source_root(), "lectures", "[0-9][0-9]_*.py")))
FIGURES = {"taxonomy": ["taxonomy.png"], "autoregressive": ["receptive_fields.png", "samples.png"],
           "vae": ["prior_samples.png", "traversal.png"], "flows": ["planar_flows.png", "realnvp_moons.png"],
           "gans": ["ring8.png"], "energy": ["hopfield_recall.png", "rbm_samples.png"],
           "diffusion": ["schedules.png", "marginals.png", "moons_strip.png"]}


def test_walkthroughs_follow_the_lecture_order():
    names = [os.path.basename(path)[3:-3] for path in WALKTHROUGHS]
    assert names == [s for s in LECTURE_SECTIONS if s in names]
    for path in WALKTHROUGHS:
        number = int(os.path.basename(path)[:2])
        assert LECTURE_SECTIONS[number - 1] == os.path.basename(path)[3:-3]


@pytest.mark.slow
@pytest.mark.parametrize("path", WALKTHROUGHS, ids=lambda p: os.path.basename(p)[3:-3])
def test_walkthrough_runs_in_fast_mode(path, tmp_path, capsys):
    section = os.path.basename(path)[3:-3]
    assert run_lecture(section, fast=True, out=str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "[" in out and "]" in out                                   # it printed the lecture's equations
    for name in FIGURES[section]:
        assert os.path.getsize(tmp_path / name) > 1000
    assert os.environ.get("MINIGEN_LECTURE_FAST") is None               # the settings do not leak


def test_lecture_command_errors(capsys):
    with pytest.raises(SystemExit):                                    # argparse: not a section
        main(["lecture", "nonsense"])
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown section 'nonsense'; the lecture's sections"):
        walkthrough_path("nonsense")
    assert sorted(os.path.basename(p)[3:-3] for p in WALKTHROUGHS) == sorted(LECTURE_SECTIONS)   # all seven

"""The lecture companion's runtime: ``minigen lecture SECTION [--fast]`` and the ``Lecture`` helper that
every walk-through of ``lectures/`` starts with.

A walk-through is a plain Python file with ``# %%`` cells (Jupyter and VS Code open it as a notebook
through jupytext; ``python lectures/07_diffusion.py`` runs it as a script). Its first cell is::

    from minigen.lecture import Lecture
    lecture = Lecture("diffusion")

``lecture.fast`` is true under ``minigen lecture SECTION --fast`` (and in the tests): small sizes and
few steps, so that no walk-through can rot unnoticed. ``lecture.equation("DIF-14")`` prints the
lecture's equation beside the code that computes it; ``lecture.train("ddpm", data="moons", steps=...)``
is ``minigen train`` (the one training loop), returning the trained model; ``lecture.save(...)`` writes
a figure into the output folder (``lecture-out/SECTION`` unless ``--out`` says otherwise).
"""
from __future__ import annotations

import os
import runpy
import shlex

from .equations import CATALOGUE, source_root

_FAST, _OUT = "MINIGEN_LECTURE_FAST", "MINIGEN_LECTURE_OUT"


class Lecture:
    """The settings and helpers of one walk-through (see the module docstring)."""

    def __init__(self, section: str):
        self.section = section
        self.fast = os.environ.get(_FAST) == "1"
        self.out = os.environ.get(_OUT) or os.path.join("lecture-out", section + ("-fast" if self.fast else ""))
        os.makedirs(self.out, exist_ok=True)

    def size(self, full, fast):
        """``full`` normally, ``fast`` under ``--fast``."""
        return fast if self.fast else full

    def equation(self, eq_id: str) -> str:
        """Print (and return) the lecture's equation ``eq_id`` with its slide."""
        if eq_id not in CATALOGUE:
            raise KeyError(f"lecture.equation: {eq_id!r} is not in the lecture's catalogue")
        eq = CATALOGUE[eq_id]
        text = f"[{eq.id}] {eq.slide}: {eq.statement}"
        print(text)
        return text

    def train(self, model: str, name: str | None = None, **options):
        """``minigen train MODEL --option value …`` into ``<out>/runs`` (resumed if already there);
        returns the trained model. Options are the command line's, with ``_`` for ``-``; ``True``
        passes a flag."""
        from .cli import build_parser, option_arguments, train_config
        from .models import get_spec
        from .runs import load_run, train
        argv = ["train", model, "--runs-dir", os.path.join(self.out, "runs"), "--name", name or model,
                "--no-progress", "--resume", *option_arguments(options)]
        args = build_parser().parse_args(argv)
        run_dir, last = train(get_spec(model), train_config(args, argv), progress=False)
        print(f"trained: minigen {shlex.join(argv)}\n  last logged: {last}")
        return load_run(run_dir)[2]

    def save(self, figure_or_path, name: str) -> str:
        """Write a matplotlib ``Figure`` (or move an image a library function wrote) to ``<out>/name``."""
        path = os.path.join(self.out, name)
        if isinstance(figure_or_path, str):
            os.replace(figure_or_path, path)
        else:
            from .viz import save_figure
            save_figure(figure_or_path, path)
        print(f"figure: {path}")
        return path


def walkthrough_path(section: str) -> str:
    """``lectures/NN_<section>.py`` of the checkout."""
    from .cli import LECTURE_SECTIONS
    if section not in LECTURE_SECTIONS:
        raise ValueError(f"lecture: unknown section {section!r}; the lecture's sections: {LECTURE_SECTIONS}")
    path = os.path.join(source_root(), "lectures", f"{LECTURE_SECTIONS.index(section) + 1:02d}_{section}.py")
    if not os.path.exists(path):
        raise FileNotFoundError(f"lecture: the {section} walk-through ({path}) is not written yet")
    return path


def run_lecture(section: str, fast: bool = False, out: str | None = None) -> int:
    """Run one walk-through as a script, in fast mode or not, writing into ``out``."""
    path = walkthrough_path(section)
    saved = {key: os.environ.get(key) for key in (_FAST, _OUT)}
    os.environ[_FAST] = "1" if fast else "0"
    if out:
        os.environ[_OUT] = out
    else:
        os.environ.pop(_OUT, None)
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return 0

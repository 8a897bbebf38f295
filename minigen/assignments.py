"""Assignment starter code from the library itself: ``minigen assignments build OUT``.

The key lines of a derivation are marked in the library's own source, between a comment line
``# BEGIN SOLUTION 7.1`` and a comment line ``# END SOLUTION``. ``build`` copies the checkout (package, kernels, tests, lectures) to ``OUT`` and replaces every
region with ``raise NotImplementedError("Task 7.1: …")`` — the task's statement — so a student fills
in exactly those lines. Each task names the tests that check it; ``tests/conftest.py`` marks them
``task7_1``, so ``pytest -m task7_1`` runs one task's tests (they fail until the region is
filled, and pass once it is right). The instructor's copy is the checkout: its full suite passes.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import NamedTuple

from .equations import source_root


class Task(NamedTuple):
    id: str              # "<section>.<n>", sections numbered as the lecture's walk-throughs
    title: str
    statement: str       # what the student writes, in a sentence or two (the NotImplementedError message)
    tests: tuple         # pytest node ids ("tests/…py::test_name") that check it


TASKS = {task.id: task for task in [
    Task("2.1", "causal masks A and B",
         "Zero the kernel taps after the centre in raster order (the rest of the centre row, every row below); "
         "at the centre, a mask-A output group sees only earlier input groups, a mask-B group also its own "
         "(Eq. AR-2).",
         ("tests/models/test_autoregressive.py::test_masks_a_and_b_on_a_3x3_kernel",
          "tests/models/test_autoregressive.py::test_causality_through_the_whole_network")),
    Task("3.1", "the reparameterisation trick",
         "Return a sample z = mu + eps * sigma whose randomness eps ~ N(0, I) carries no parameters, so that "
         "gradients flow to mu and sigma (Eq. VAE-5).",
         ("tests/models/test_vae.py::test_reparameterized_gradient_matches_finite_differences",
          "tests/models/test_vae.py::test_reparameterized_samples_have_the_stated_moments")),
    Task("5.1", "the value of the game",
         "Compute V(D, G) on a minibatch from the discriminator's logits: the mean of log D(x) over real "
         "examples plus the mean of log(1 - D(G(z))) over fakes (Eq. GAN-1); use log_d and log_one_minus_d.",
         ("tests/models/test_gans.py::test_value_function_equals_hand_computation",)),
    Task("6.1", "Hebb's rule",
         "Store K patterns of +-1 (rows of p, N units each) as w_ij = (1/N) sum_k P^k_i P^k_j (Eq. EBM-4).",
         ("tests/models/test_hopfield.py::test_slide_weights_are_hebb_sum_and_the_network_zeroes_the_diagonal",
          "tests/models/test_hopfield.py::test_a_single_stored_pattern_is_a_fixed_point")),
    Task("7.1", "the diffusion kernel in one jump",
         "Compute each example's coefficients of the jump x_t = a x_0 + b eps: a = sqrt(abar_t) and "
         "b = sqrt(1 - abar_t) (schedule.alpha_bars holds abar; coefficient(values, t, x0) picks each "
         "example's entry, shaped to broadcast) (Eq. DIF-4).",
         ("tests/models/test_diffusion.py::test_composing_single_steps_gives_the_closed_form_kernel",
          "tests/models/test_diffusion.py::test_sampled_chains_match_the_one_jump_kernel")),
    Task("7.2", "Algorithm 2's update",
         "Compute result = c1 (x_t - c2 eps) + sigma z in x_t's dtype (dt), adding no noise when noise is "
         "None (the last step) (Eq. DIF-14).",
         ("tests/kernels/test_diffusion_kernels.py::test_reference_is_algorithm_2_line_4",)),
]}

_BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION (\d+\.\d+)\s*$")
_END = re.compile(r"^\s*# END SOLUTION\s*$")
#: What a student copy holds: the package, its kernels, tests, walk-throughs and packaging.
COPIED = ("minigen", "kernels", "tests", "lectures", "setup.py", "pytest.ini", "README.md")


def marker_name(task_id: str) -> str:
    """The pytest marker of a task: ``"7.1"`` → ``task7_1``."""
    return "task" + task_id.replace(".", "_")


def _source_files(root):
    for folder in ("minigen", "kernels"):
        for base, dirs, files in os.walk(os.path.join(root, folder)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.join(base, name)


def solution_regions(root: str | None = None) -> list:
    """``(file relative to root, first line, last line, task id)`` of every marked region (1-based lines of
    the BEGIN and END markers). Unknown task ids, nesting and unclosed regions are errors."""
    root = root or source_root()
    regions = []
    for path in _source_files(root):
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        open_at = None
        for i, line in enumerate(lines, 1):
            begin, end = _BEGIN.match(line), _END.match(line)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if begin:
                if open_at:
                    raise ValueError(f"assignments: {rel}:{i}: a region opens inside the one at line {open_at[0]}")
                if begin.group(2) not in TASKS:
                    raise ValueError(f"assignments: {rel}:{i}: unknown task {begin.group(2)}")
                open_at = (i, begin.group(2))
            elif end:
                if not open_at:
                    raise ValueError(f"assignments: {rel}:{i}: END SOLUTION without a BEGIN")
                regions.append((rel, open_at[0], i, open_at[1]))
                open_at = None
        if open_at:
            raise ValueError(f"assignments: {rel}:{open_at[0]}: SOLUTION region never ends")
    return regions


def _student_text(lines: list, regions: list) -> list:
    """``lines`` with each region (BEGIN … END, 1-based) replaced by one ``raise`` at its indentation."""
    out, i = [], 0
    for _, start, end, task_id in sorted(regions, key=lambda r: r[1]):
        indent = _BEGIN.match(lines[start - 1]).group(1)
        task = TASKS[task_id]
        message = f"Task {task.id}, {task.title}: {task.statement}"
        out += lines[i:start - 1] + [f"{indent}raise NotImplementedError({message!r})  # TODO Task {task.id}"]
        i = end
    return out + lines[i:]


def build(out: str, solutions: bool = False, root: str | None = None) -> str:
    """Write the student copy of the checkout at ``root`` into ``out`` (which must not exist); with
    ``solutions`` the regions stay (the instructor's copy). Returns ``out``."""
    root = root or source_root()
    if os.path.exists(out):
        raise FileExistsError(f"assignments build: {out} already exists; choose a new folder")
    regions = solution_regions(root)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", ".hypothesis", "*.egg-info")
    for name in COPIED:
        source = os.path.join(root, name)
        target = os.path.join(out, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=ignore)
        else:
            os.makedirs(out, exist_ok=True)
            shutil.copy2(source, target)
    if not solutions:
        for rel in sorted({r[0] for r in regions}):
            path = os.path.join(out, rel)
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(_student_text(lines, [r for r in regions if r[0] == rel])) + "\n")
    with open(os.path.join(out, "ASSIGNMENTS.md"), "w", encoding="utf-8") as f:
        f.write(task_sheet(regions))
    return out


def task_sheet(regions: list) -> str:
    """``ASSIGNMENTS.md``: every task, where it lives and the command that checks it."""
    lines = ["# Assignments", "",
             "Each task is a few lines of the library, replaced by `raise NotImplementedError(\"Task …\")`.",
             "Fill them in, then run the task's tests: `python -m pytest -q -m task7_1` (they fail until",
             "the lines are right). `python -m pytest -q` runs everything.", ""]
    for task in TASKS.values():
        where = ", ".join(f"`{rel}`" for rel, _, _, task_id in regions if task_id == task.id)
        lines += [f"## Task {task.id}: {task.title}", "", task.statement, "",
                  f"- where: {where}", f"- check: `python -m pytest -q -m {marker_name(task.id)}`", ""]
    return "\n".join(lines)


def run_assignments(args) -> int:
    """``minigen assignments list|build OUT [--solutions]``."""
    if args.action == "list":
        regions = solution_regions()
        for task in TASKS.values():
            where = ", ".join(f"{rel}:{start}" for rel, start, _, task_id in regions if task_id == task.id)
            print(f"Task {task.id:5s} {task.title:40s} {where}")
        return 0
    if not args.out:
        raise ValueError("assignments build: give the folder to write, e.g. `minigen assignments build student`")
    out = build(args.out, solutions=args.solutions)
    kind = "instructor" if args.solutions else "student"
    print(f"wrote the {kind} copy to {out} ({len(TASKS)} tasks; see {os.path.join(out, 'ASSIGNMENTS.md')})")
    return 0

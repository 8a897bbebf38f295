"""Assignments (``minigen assignments``): every task has a region and tests; the student copy imports,
its task tests fail; the instructor copy (regions kept) passes them."""
import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from minigen.assignments import TASKS, build, marker_name, solution_regions
from minigen.cli import main
from minigen.equations import source_root

ROOT = source_root()


def test_every_task_has_a_region_and_existing_tests():
    assert len(TASKS) >= 20
    assert {task.split(".")[0] for task in TASKS} == {"2", "3", "4", "5", "6", "7"}    # six families
    regions = solution_regions(ROOT)
    assert {task for *_, task in regions} == set(TASKS)
    for task in TASKS.values():
        assert task.tests, f"task {task.id} names no test"
        for node in task.tests:
            path, name = node.split("::")
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                names = {n.name for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
            assert name in names, f"task {task.id}: {node} does not exist"


def test_regions_are_replaced_by_the_task_statement(tmp_path):
    out = build(str(tmp_path / "student"))
    with open(os.path.join(out, "minigen", "models", "diffusion", "process.py"), encoding="utf-8") as f:
        text = f.read()
    assert "BEGIN SOLUTION" not in text and "raise NotImplementedError(" in text and "Task 7.1, the diffusion kernel" in text
    assert "a, b = coefficient(np.sqrt(schedule.alpha_bars), t, x0)" not in text          # the solution is gone
    with open(os.path.join(out, "ASSIGNMENTS.md"), encoding="utf-8") as f:
        sheet = f.read()
    assert all(f"## Task {t}:" in sheet and f"-m {marker_name(t)}" in sheet for t in TASKS)
    with pytest.raises(FileExistsError):
        build(out)


def _run_task_tests(copy: str, report: str) -> dict:
    """Run every task's tests inside ``copy`` (its own package first on the path); node id -> passed."""
    env = {**os.environ, "PYTHONPATH": copy, "NUMBA_NUM_THREADS": "1"}
    selection = " or ".join(marker_name(t) for t in TASKS)
    # the whole suite is collected, as a student's `pytest -m task7_1` does: an unfilled task must not
    # break the collection of any test module
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", selection,
                    f"--junitxml={report}"], cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        if not case.get("classname"):
            error = case.find("error")
            raise AssertionError(f"{case.get('name')} was not collected: {error.text if error is not None else ''}")
        path = case.get("classname").replace(".", "/") + ".py"
        failed = case.find("failure") is not None or case.find("error") is not None
        node = f"{path}::{case.get('name').split('[')[0]}"
        outcomes[node] = outcomes.get(node, True) and not failed        # every parametrisation must pass
    return outcomes


@pytest.mark.slow
def test_student_copy_fails_each_task_and_the_instructor_copy_passes(tmp_path):
    student = build(str(tmp_path / "student"))
    check = subprocess.run([sys.executable, "-c", "import minigen, minigen.models, minigen.kernels.reference as r; "
                            "print(minigen.__file__, r.__file__)"],
                           cwd=student, env={**os.environ, "PYTHONPATH": student}, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert all(path.startswith(student) for path in check.stdout.split())      # the copy's own code is imported
    failed = _run_task_tests(student, str(tmp_path / "student.xml"))
    for task in TASKS.values():
        assert any(failed.get(node) is False for node in task.tests), f"task {task.id}'s tests pass unfilled"
    teacher = build(str(tmp_path / "teacher"), solutions=True)
    passed = _run_task_tests(teacher, str(tmp_path / "teacher.xml"))
    for task in TASKS.values():
        for node in task.tests:
            assert passed.get(node) is True, f"{node} fails with the solution in place"


def test_assignments_command(tmp_path, capsys):
    assert main(["assignments", "list"]) == 0
    assert "Task 7.2" in capsys.readouterr().out
    assert main(["assignments", "build", str(tmp_path / "s")]) == 0
    assert "student copy" in capsys.readouterr().out
    assert main(["assignments", "build"]) == 2
    assert "give the folder to write" in capsys.readouterr().err

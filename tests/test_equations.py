"""The equation index (``minigen equations``): every ID of the lecture's catalogue has code and a test,
and the committed ``lectures/equations.md`` is what the command writes."""
import os
import re

import pytest

from minigen.cli import main
from minigen.equations import CATALOGUE, SECTIONS, build_index, source_root, tagged_ids

ROOT = source_root()


@pytest.mark.parametrize("text, ids", [
    ("Eq. DIF-4, the kernel", ["DIF-4"]),
    ("(Eq. DIF-4, DIF-14): one pass", ["DIF-4", "DIF-14"]),
    ("Eq. DIF-8/9", ["DIF-8", "DIF-9"]),                                  # the prefix carries over
    ("Eq. VAE-1…VAE-3, DIF-1.", ["VAE-1", "VAE-2", "VAE-3", "DIF-1"]),      # a range
    ("Eq. VAE-1..3): MLP", ["VAE-1", "VAE-2", "VAE-3"]),
    ("Eq. VAE-4 / DIF-1) and again Eq. VAE-4", ["VAE-4", "DIF-1"]),        # no repeats
    ("Eq. DIF-12, data in [-1, 1]", ["DIF-12"]),                           # prose after the list
    ("(Eq. 13 of Ho et al.) and GAN-3 without the tag", []),               # not the lecture's IDs
])
def test_tag_forms(text, ids):
    assert tagged_ids(text) == ids


def test_the_catalogue_is_complete_and_in_lecture_order():
    assert len(CATALOGUE) == 56
    prefixes = [eq.split("-")[0] for eq in CATALOGUE]
    assert list(dict.fromkeys(prefixes)) == list(SECTIONS)
    for prefix in SECTIONS:
        numbers = [int(eq.split("-")[1]) for eq in CATALOGUE if eq.startswith(prefix + "-")]
        assert numbers == list(range(1, len(numbers) + 1))


def test_the_catalogue_matches_the_lecture_when_it_is_beside_the_checkout():
    lecture = os.path.join(ROOT, os.pardir, "shared", "lecture", "equations.md")
    if not os.path.exists(lecture):
        pytest.skip("the lecture's catalogue is not beside this checkout")
    with open(lecture, encoding="utf-8") as f:
        ids = re.findall(r"^\| ([A-Z]+-\d+) \|", f.read(), re.M)
    assert sorted(ids) == sorted(CATALOGUE)


def test_every_equation_has_code_and_a_test():
    _, no_code, no_test = build_index(ROOT)
    assert no_code == [], f"IDs without an `Eq. <ID>` docstring tag: {no_code}"
    assert no_test == [], f"IDs without a @pytest.mark.equation test: {no_test}"


def test_the_committed_index_is_current(capsys):
    text, _, _ = build_index(ROOT)
    with open(os.path.join(ROOT, "lectures", "equations.md"), encoding="utf-8") as f:
        assert f.read() == text, "lectures/equations.md is stale: run `minigen equations`"
    assert main(["equations", "--check"]) == 0
    assert "56 equations: 56 with code, 56 with tests" in capsys.readouterr().out


def test_the_index_names_the_code_and_the_tests():
    text, _, _ = build_index(ROOT)
    row = next(line for line in text.splitlines() if line.startswith("| DIF-14 |"))
    assert "Algorithm 2" in row and r"\sigma_tz" in row                  # slide and equation
    assert "`minigen/models/diffusion/ddpm.py: p_sample_step`" in row    # code: file and qualified name
    assert "`tests/kernels/test_diffusion_kernels.py::test_reference_is_algorithm_2_line_4`" in row


def _balanced(latex: str) -> bool:
    depth = 0
    for i, ch in enumerate(latex):
        if ch in "{}" and i and latex[i - 1] == "\\":          # \{ and \} are literal braces
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_docstring_math_is_well_formed_everywhere():
    """Every :math: role and math block of the package's docstrings: no control characters (a missing
    ``r`` prefix turns ``\\top`` into a tab and ``\\big`` into a backspace) and balanced braces."""
    import ast
    from minigen.equations import docstring_math, python_files
    bad = []
    for folder in ("minigen", "kernels"):
        for rel, path in python_files(ROOT, folder):
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in [tree, *ast.walk(tree)]:
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    for latex in docstring_math(ast.get_docstring(node)):
                        if re.search(r"[\x00-\x08\x0b-\x1f]", latex) or not _balanced(latex):
                            bad.append(f"{rel}: {getattr(node, 'name', '<module>')}: {latex!r}")
    assert not bad, "\n".join(bad)


def test_the_index_renders_in_a_markdown_table():
    """Each row has exactly its six cells (a ``|`` inside a formula would split it), every $…$ pairs up
    and holds balanced braces; the code's own formula is shown where its docstring opens with the tag."""
    text, _, _ = build_index(ROOT)
    rows = [line for line in text.splitlines() if re.match(r"^\| [A-Z]+-\d+ \|", line)]
    assert len(rows) == len(CATALOGUE)
    for row in rows:
        assert row.count("|") == 7, row
        assert row.count("$") % 2 == 0, row
        assert all(_balanced(m) for m in re.findall(r"\$([^$]+)\$", row)), row
    dif14 = next(row for row in rows if row.startswith("| DIF-14 |")).split("|")[4]
    assert r"\epsilon_\theta(x_t,t)" in dif14
    flow1 = next(row for row in rows if row.startswith("| FLOW-1 |")).split("|")[4]
    assert r"\vert" in flow1 and "|" not in flow1.strip()                  # |det| written as \vert

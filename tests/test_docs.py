"""Docs quality: every public class, function and method of the package has a docstring.

Public: not starting with an underscore, in a module whose name does not either. Exempt by design:
``forward`` / ``backward`` of ops and layers (the class docstring states the formula and the
derivative, as DESIGN.md asks), ``extra_repr`` and ``forward_rows`` (the sampler's row window, described
by the class)."""
import ast

from minigen.equations import python_files, source_root

EXEMPT_METHODS = {"forward", "backward", "extra_repr", "forward_rows"}


def undocumented(root: str) -> list:
    missing = []
    for folder in ("minigen", "kernels"):
        for rel, path in python_files(root, folder):
            if any(part.startswith("_") and part != "__init__.py" for part in rel.split("/")):
                continue                                               # a private module
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in tree.body:
                if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                    continue
                if not ast.get_docstring(node):
                    missing.append(f"{rel}: {node.name}")
                if isinstance(node, ast.ClassDef):
                    missing += [f"{rel}: {node.name}.{m.name}" for m in node.body
                                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                                and not m.name.startswith("_") and m.name not in EXEMPT_METHODS
                                and not ast.get_docstring(m)]
    return sorted(missing)


def test_every_public_class_and_function_has_a_docstring():
    missing = undocumented(source_root())
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)

"""Rules of issue #26, read from the source of featx/ and cli/: type hints on every public function and method
(click commands are typed by their options), no private name used from another module, compatibility history in
docs/compatibility.md only, no module function that nothing names."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AREA = sorted([*(ROOT / "featx").rglob("*.py"), *(ROOT / "cli").glob("*.py")])
SPECIAL = {"__init__", "__call__", "__getitem__", "__len__"}  # dunders whose types are not implied


def _is_command(function: ast.FunctionDef) -> bool:
    return any("command" in ast.unparse(d) or "group" in ast.unparse(d) for d in function.decorator_list)


def _public_functions(tree: ast.Module):
    """(qualified name, node) of the functions and methods a user of the module may call."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and (not item.name.startswith("_") or item.name in SPECIAL):
                    yield f"{node.name}.{item.name}", item
        elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and not _is_command(node):
            yield node.name, node


def _missing_hints(function: ast.FunctionDef) -> list[str]:
    args = function.args
    named = [a for a in [*args.posonlyargs, *args.args, *args.kwonlyargs] if a.arg not in ("self", "cls")]
    missing = [a.arg for a in [*named, args.vararg, args.kwarg] if a is not None and a.annotation is None]
    return missing + (["return"] if function.returns is None else [])


@pytest.mark.parametrize("path", AREA, ids=lambda p: str(p.relative_to(ROOT)))
def test_public_functions_have_type_hints(path):
    tree = ast.parse(path.read_text())
    missing = {name: gaps for name, node in _public_functions(tree) if (gaps := _missing_hints(node))}
    assert not missing, f"{path.name}: {missing}"


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for path in AREA:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("featx."):
                continue
            # a package's own modules may share its private modules (reports/_report.py uses reports/_html.py)
            if path.parent.name != node.module.split(".")[-1]:
                offenders += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not offenders


def test_compatibility_history_is_told_in_one_place():
    told = [f"{p.relative_to(ROOT)}:{i}" for p in AREA for i, line in enumerate(p.read_text().splitlines(), 1)
            if "0.1.0" in line and not line.startswith("__version__")]
    assert not told, "featx 0.1.0's history belongs in docs/compatibility.md"
    assert "featx-store/1" in (ROOT / "docs" / "compatibility.md").read_text()


def test_every_module_function_is_named_somewhere_else():
    """Dead code: a module-level function whose name appears nowhere else in featx, cli, tests, benchmarks or the
    docs (one of auditing's outlived its callers; naming it here would hide it)."""
    import re

    texts = [p.read_text() for p in [*AREA, *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
                                     *(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]]
    unused = [f"{path.relative_to(ROOT)}: {node.name}" for path in AREA for node in ast.parse(path.read_text()).body
              if isinstance(node, ast.FunctionDef) and not node.decorator_list
              and sum(len(re.findall(rf"\b{node.name}\b", text)) for text in texts) == 1]
    assert not unused

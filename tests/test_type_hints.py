"""Every public function and method of featx.finetuning, featx.viz and the report figures states its types (#26)."""
import ast
from pathlib import Path

import pytest

import featx

ROOT = Path(featx.__file__).parent
MODULES = sorted([*ROOT.glob("finetuning/*.py"), *ROOT.glob("viz/*.py"), ROOT / "reports" / "_figures.py"])


def public_functions(tree: ast.Module):
    """Functions and methods whose name has no leading underscore (and __init__), with their class path."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and (not item.name.startswith("_") or item.name == "__init__"):
                    yield f"{node.name}.{item.name}", item


@pytest.mark.parametrize("module", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_public_functions_have_type_hints(module):
    missing = []
    for name, function in public_functions(ast.parse(module.read_text())):
        arguments = [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]
        untyped = [a.arg for a in arguments if a.annotation is None and a.arg not in ("self", "cls")]
        if untyped or function.returns is None:
            missing.append(f"{name}({', '.join(untyped)}){'' if function.returns else ' -> ?'}")
    assert not missing, f"{module}: {missing}"

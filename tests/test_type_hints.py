"""Every public function of featx/classify, featx/reports, featx/images and the CLI's helpers has type hints
(issue #26); click commands are typed by their options."""
import ast
from pathlib import Path

import featx

ROOT = Path(featx.__file__).parent
FOLDERS = [ROOT / "classify", ROOT / "reports", ROOT / "images", ROOT.parent / "cli"]


def is_command(node: ast.FunctionDef) -> bool:
    return any("command" in ast.unparse(d) or "group" in ast.unparse(d) for d in node.decorator_list)


def test_public_functions_have_type_hints():
    missing = []
    for path in sorted(p for folder in FOLDERS for p in folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or is_command(node):
                continue
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            untyped = [a.arg for a in args if a.annotation is None and a.arg not in ("self", "cls")]
            untyped += [a.arg for a in (node.args.vararg, node.args.kwarg) if a is not None and a.annotation is None]
            if untyped or node.returns is None:
                missing.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} {untyped}"
                               + ("" if node.returns else " -> ?"))
    assert missing == []

"""Pieces written once (issue #26): how failed files are listed, and featx's one progress-bar policy."""
import ast
import io
import sys
from pathlib import Path

import featx
from featx.images import FAILURES_SHOWN, failure_lines
from featx.outputs import progress_bar

ROOT = Path(featx.__file__).parent


def test_failure_lines_show_a_few_and_count_the_rest():
    failures = [(f"f{i}.png", "cannot decode") for i in range(FAILURES_SHOWN + 3)]
    lines = failure_lines(failures, more=" (see: featx info s.h5)")
    assert lines[0] == "  failed: f0.png: cannot decode" and len(lines) == FAILURES_SHOWN + 1
    assert lines[-1] == "  ... and 3 more (see: featx info s.h5)"
    assert failure_lines(failures[:2], prefix="") == ["f0.png: cannot decode", "f1.png: cannot decode"]


def test_the_failure_cap_and_tqdm_live_in_one_place_each():
    """No other module slices failures by its own cap or builds its own tqdm bar."""
    found = []
    for path in [*ROOT.rglob("*.py"), *(ROOT.parent / "cli").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "tqdm":
                found.append(f"{path.name}: tqdm(")
            if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice) and "failures" in ast.unparse(node.value)):
                found.append(f"{path.name}: {ast.unparse(node)}")
    assert sorted(found) == ["_failures.py: failures[:FAILURES_SHOWN]", "_report.py: failures[:PAGE_FAILURES_SHOWN]", "outputs.py: tqdm(", "outputs.py: tqdm("]


def test_the_progress_bar_writes_whole_lines_off_a_terminal(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    with progress_bar(3, desc="epoch 1", leave=False) as bar:
        bar.update(3)
    assert "\r" not in stderr.getvalue() and "epoch 1: 100%" in stderr.getvalue() and stderr.getvalue().endswith("\n")
    with progress_bar(3, enabled=False) as bar:
        bar.update(3)
    assert stderr.getvalue().count("\n") == len(stderr.getvalue().splitlines())


def test_a_bar_inside_another_writes_whole_lines_to_a_log_without_cursor_moves(capsys):
    """featx compare's bar of candidates around each extraction's bar wrote "\\x1b[A" into logs and pipes."""
    with progress_bar(2, desc="compare", unit="candidate") as outer:
        for _ in range(2):
            with progress_bar(3) as inner:
                inner.update(3)
            outer.update()
    logged = capsys.readouterr().err
    assert "\x1b" not in logged and "2/2" in logged and "candidate" in logged and "3/3" in logged, logged

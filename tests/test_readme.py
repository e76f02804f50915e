"""Every ```python block of README.md and docs/python-api.md runs as written (blocks of a file share state)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [path for path in (ROOT / "README.md", ROOT / "docs" / "python-api.md") if path.is_file()]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_python_blocks_run(document, tmp_path, monkeypatch):
    blocks = python_blocks(document)
    if not blocks:
        pytest.skip(f"{document.name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{document.name}[python block {i}]", "exec"), namespace)

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


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_readme_writes_nothing_into_the_demo_folder_and_names_the_fine_tuned_store():
    """#25 point 10: the snippets wrote into featx-demo/elpv (all 2,624 cells after the demo), and `featx fit`
    after `extract --weights` met "several feature stores in cache/"."""
    readme = (ROOT / "README.md").read_text()
    assert "featx-demo/elpv" not in "".join(python_blocks(ROOT / "README.md"))
    block = next(b for b in bash_blocks(ROOT / "README.md") if "--weights cells.safetensors" in b)
    extract = next(line for line in block.splitlines() if line.startswith("featx extract") and "--weights" in line)
    store = re.search(r"--store (\S+)", extract).group(1)
    fit = next(line for line in block.splitlines() if line.startswith("featx fit"))
    assert f"--features {store}" in fit
    model = re.search(r"--out (\S+)", fit).group(1)
    assert any(line.startswith(f"featx predict {model}") for line in block.splitlines())  # no --weights needed (#26)
    assert 'pip install "featx[' not in readme


def test_write_elpv_folder_never_gives_more_than_asked(tmp_path):
    """#25 point 10: a folder holding other ELPV cells silently gave them all (2,624 for per_class=10)."""
    from featx.datasets import write_elpv_folder
    from featx.errors import FeatxError

    folder = write_elpv_folder(tmp_path / "cells", per_class=3)
    (folder / "functional" / "mine.png").write_bytes(b"not a cell")
    assert write_elpv_folder(folder, per_class=3) == folder  # the same selection again: nothing to refuse
    with pytest.raises(FeatxError, match=r"already holds 12 ELPV cells of another selection .*prune=True"):
        write_elpv_folder(folder, per_class=1)
    write_elpv_folder(folder, per_class=1, prune=True)
    assert len([p for p in folder.glob("*/*.png") if p.name != "mine.png"]) == 4
    assert (folder / "functional" / "mine.png").exists()

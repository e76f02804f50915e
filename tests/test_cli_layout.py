"""The CLI holds no logic (issue #26): no cli module imports another but `options` and `errors`; what they
borrowed from each other (finding the store, saving a fitted model with its report, the demo's digest and test
CSV) is the library's."""
import ast
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import featx.cli
from featx.errors import FeatxError, MissingPathError
from featx.features import find_store
from featx.features._store import FeatureStore
from featx.reports._report import Outcomes, Report
from test_compat_main import EXPECTED, folder  # noqa: F401 (fixture)

CLI = Path(featx.cli.__file__).parent


def test_cli_modules_import_only_options_and_errors_from_the_cli():
    borrowed = []
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                modules = [node.module] if node.module else [alias.name for alias in node.names]
                borrowed += [f"{path.name}: {m}" for m in modules if m not in ("options", "errors")]
    assert borrowed == []


def test_find_store_names_the_stores_and_asks_through_a_callback(folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("FEATX_CACHE", str(cache))
    with pytest.raises(FeatxError, match="no feature store in .*: run featx extract first, or pass featx audit STORE"):
        find_store(None, "featx audit STORE")
    first = Path(shutil.copy(folder / "store.h5", cache / "a.h5"))
    assert find_store(None) == first and find_store(str(first)) == first
    with pytest.raises(MissingPathError, match="^no feature store at x.h5$"):  # before the caller checks its outputs
        find_store("x.h5")
    second = Path(shutil.copy(folder / "store.h5", cache / "b.h5"))
    os.utime(first, (1, 1))  # older
    with pytest.raises(FeatxError, match=r"(?s)several feature stores.*1\. .*b\.h5.*2\. .*a\.h5.*choose one with --features"):
        find_store(None)
    assert find_store(None, choose=lambda listing, found: found[1]) == first and second.exists()


def test_training_digest_and_the_test_csv(folder):
    with FeatureStore.open(folder / "store.h5") as opened:
        digest = opened.training_digest({"clf": "svm"})
        assert digest == opened.training_digest({"clf": "svm"}) != opened.training_digest({"clf": "logreg"})
    paths = [str(folder / p) for p in EXPECTED["cells"][:2]]
    outcomes = Outcomes.of(paths, np.array([0, 1]), np.array([0, 0]), np.array([[0.9, 0.1], [0.6, 0.4]]), "probability")
    (folder / "parts").mkdir()
    written = Report(["defective", "functional"], {}, outcomes=outcomes).write_test_csv(folder / "parts" / "test.csv")
    assert written.read_text().splitlines() == [f"../{EXPECTED['cells'][0]},defective", f"../{EXPECTED['cells'][1]},functional"]

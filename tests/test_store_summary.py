"""`FeatureStore.summary()`: what `featx info` shows, from the library (issue #26); the command only formats it."""
import dataclasses
import json
import os

import pytest
from click.testing import CliRunner

from featx.cli import main
from featx.features._store import FeatureStore, StoreSummary
from test_compat_main import EXPECTED, folder  # noqa: F401 (fixture)


def test_summary_counts_classes_and_files_gone(folder):
    os.remove(folder / EXPECTED["cells"][0])  # a defective cell leaves the folder
    with FeatureStore.open(folder / "store.h5") as opened:
        summary = opened.summary()
    assert isinstance(summary, StoreSummary)
    assert (summary.rows, summary.features, summary.dtype, summary.files) == (12, 1280, "float32", 11)
    assert summary.classes == {"defective": 2, "functional": 3, "likely_defective": 3, "possibly_defective": 3}
    assert (summary.unlabeled, summary.failures, summary.vanished, summary.writer_pid) == (0, {}, {}, None)
    assert summary.gone == {str(folder / EXPECTED["cells"][0]): "defective"}
    assert summary.space == json.loads(EXPECTED["store.h5"]["feature_space"]) and summary.versions["featx"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.rows = 0
    shown = CliRunner().invoke(main, ["info", "--history", str(folder / "store.h5")]).output
    assert "rows:      12 unique images x 1280 features (float32)\nfiles:     11\nclasses:   4\n  defective: 2\n" in shown
    assert "gone:      1 files no longer on disk" in shown and f"  {folder / EXPECTED['cells'][0]} (defective)\n" in shown

"""predict and evaluate people can trust (issue #20): rows already in the training store are read from it and
nothing is written there, reports do not clobber each other, metrics over the classes present, and predict's
CSV has a row per input file, its path as given. CLI runs on real ELPV cells (in a fresh process where what
reaches the terminal matters)."""
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import synthetic_space
from featx.cli import main
from html_checks import parse_html
from PIL import Image

from featx.features._store import FeatureStore

FAST = ["--model", "mobilenet_v3_small", "--weights", "random", "--engine", "torch", "-w", "0", "-q"]


def featx(*args) -> Result:
    """`featx ARGS` in this process."""
    return CliRunner().invoke(main, list(map(str, args)))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder holding cells/ (20 real ELPV cells), their store s.h5, and logreg fitted on it as m.skops
    and m.joblib."""
    from featx.datasets import write_elpv_folder

    root = tmp_path_factory.mktemp("predict")
    write_elpv_folder(root / "cells", per_class=5)
    assert featx("extract", root / "cells", "--store", root / "s.h5", *FAST).exit_code == 0
    for name, fmt in (("m.skops", "skops"), ("m.joblib", "joblib")):
        fitted = featx("fit", "-f", root / "s.h5", "--cv", "2", "-o", root / name, "--format", fmt)
        assert fitted.exit_code == 0, fitted.output
    return root


def fingerprint(path: Path) -> tuple:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluate_on_the_training_folder_reads_the_store_and_changes_nothing(work, tmp_path, private_cache):
    before = fingerprint(work / "s.h5")
    result = featx("evaluate", work / "m.skops", work / "cells", "-q", "--report", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    assert "20 read from the training store, 0 extracted" in result.stderr
    assert fingerprint(work / "s.h5") == before and not private_cache.exists()  # nothing extracted anywhere
    assert json.loads((tmp_path / "ev.json").read_text())["metrics"]["n"] == 20


def test_moved_files_are_found_by_content_the_rest_extracted(work, tmp_path, monkeypatch):
    cell = sorted((work / "cells" / "defective").glob("*.png"))[0]
    (tmp_path / "new").mkdir()
    shutil.copy(cell, tmp_path / "new" / "moved.png")
    Image.open(cell).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "new" / "flipped.png")
    before = fingerprint(work / "s.h5")
    result = featx("predict", work / "m.skops", tmp_path / "new", "-q")
    assert result.exit_code == 0, result.output
    assert "1 read from the training store, 1 extracted" in result.stderr and fingerprint(work / "s.h5") == before


def test_without_its_training_store_everything_is_extracted(work, tmp_path):
    from featx.classify._bundle import load_bundle
    from featx.classify._fitting import fit

    bundle, _ = fit(shutil.copy(work / "s.h5", tmp_path / "copy.h5"), "logreg", cv=2)
    bundle.save(tmp_path / "m.skops")
    (tmp_path / "copy.h5").unlink()
    assert load_bundle(tmp_path / "m.skops").training_store() == tmp_path / "copy.h5"
    result = featx("predict", tmp_path / "m.skops", work / "cells" / "defective", "-q")
    assert result.exit_code == 0, result.output
    assert "0 read from the training store, 5 extracted" in result.stderr
    assert "training store not used: no feature store at" in result.stderr
    with FeatureStore.create_or_open(tmp_path / "copy.h5", synthetic_space()):
        pass  # a store of another feature space where the training store was
    again = featx("predict", tmp_path / "m.skops", work / "cells" / "defective", "-q")
    assert again.exit_code == 0 and "0 read from the training store, 0 extracted, 5 read from the apply cache" in again.stderr
    assert "training store not used: the model was trained on another feature space" in again.stderr


def test_reports_are_named_after_the_model_file(work):
    for model in ("m.skops", "m.joblib"):
        assert json.loads((work / f"{model}.json").read_text())["classifier"] == "logreg"
        assert (work / f"{model}.html").is_file() and (work / f"{model}-confusion.png").is_file()
    assert not (work / "m.html").exists()


def test_evaluation_reports_are_named_after_the_data(work, tmp_path, monkeypatch):
    shutil.copytree(work / "cells", tmp_path / "cells")
    shutil.copytree(work / "cells" / "defective", tmp_path / "other" / "defective")
    model = shutil.copy(work / "m.skops", tmp_path)
    monkeypatch.chdir(tmp_path)

    def evaluate(data: str) -> Path:
        result = featx("evaluate", model, data, "-q")
        assert result.exit_code == 0, result.output
        return tmp_path / result.stdout.splitlines()[0].removeprefix("report: ")

    first = evaluate("cells")
    assert first.name == "m.skops.eval-cells.html"
    kept = fingerprint(first)
    second = evaluate("other/")
    assert second.name == "m.skops.eval-other.html" and fingerprint(first) == kept
    assert json.loads(second.with_suffix(".json").read_text())["metrics"]["n"] == 5
    assert evaluate("./cells") == first and fingerprint(first) != kept  # the same data replaces its own report
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["m.skops.eval-cells.html", "m.skops.eval-other.html"]


def test_metrics_over_the_classes_present_without_warnings():
    from sklearn.metrics import f1_score

    from featx.reports._report import Report, metrics

    true = np.array([0, 0, 0, 1, 1, 1])
    predicted = np.array([0, 2, 0, 1, 1, 3])  # predicts classes absent from the data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics(true, predicted, ["a", "b", "c", "d"])
    assert m["absent_classes"] == ["c", "d"]
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(f1_score(true, predicted, labels=[0, 1], average="macro"))
    table = Report(["a", "b", "c", "d"], m).table()
    assert "absent from these data: c, d (balanced accuracy and macro F1 over the 2 classes present)" in table


def test_evaluate_on_data_lacking_classes_names_them_in_one_line(work, tmp_path, private_cache):
    """In a fresh process: a library warning would reach the terminal. Every cell is in the training store:
    no network runs, and torch is not even imported."""
    from test_startup import CLI, heavy_imports

    for name in ("defective", "functional"):
        shutil.copytree(work / "cells" / name, tmp_path / "two" / name)
    command = [sys.executable, "-c", CLI, "evaluate", str(work / "m.skops"), "two", "-q", "--report", "ev"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and heavy_imports(result) == []
    lines = [line for line in result.stdout.splitlines() if "absent" in line]
    assert lines == ["absent from these data: likely_defective, possibly_defective "
                     "(balanced accuracy and macro F1 over the 2 classes present)"]
    saved = json.loads((tmp_path / "ev.json").read_text())["metrics"]
    recall = [saved["per_class"][c]["recall"] for c in ("defective", "functional")]
    assert saved["absent_classes"] == ["likely_defective", "possibly_defective"]
    assert saved["balanced_accuracy"] == pytest.approx(np.mean(recall))


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_predict_csv_paths_as_given_every_file_a_row(work, tmp_path, monkeypatch):
    new = tmp_path / "new"
    shutil.copytree(work / "cells" / "functional", new)
    (new / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "here").mkdir()
    single = sorted((work / "cells" / "defective").glob("*.png"))[0]
    monkeypatch.chdir(tmp_path / "here")
    result = featx("predict", work / "m.skops", "../new", single, "-q")
    assert result.exit_code == 0, result.output
    rows = rows_of(result.stdout)
    assert rows[0][0] == "path" and rows[0][-1] == "error"
    given = sorted(f"../new/{p.name}" for p in new.iterdir()) + [str(single)]
    assert [row[0] for row in rows[1:]] == given  # relative stays relative, absolute stays absolute
    broken = rows[given.index("../new/broken.png") + 1]
    assert broken[1:-1] == [""] * 5 and broken[-1].startswith("not an image")
    assert all(row[1] and not row[-1] for row in rows[1:] if row[0] != "../new/broken.png")
    assert "1 of 7 files failed" in result.stderr


def test_predict_exits_1_when_every_file_failed_with_every_row_written(work, tmp_path, monkeypatch):
    (tmp_path / "bad").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "bad" / name).write_text("not an image")
    monkeypatch.chdir(tmp_path)
    result = featx("predict", work / "m.skops", "bad", "-q", "-o", "p.csv")
    assert result.exit_code == 1 and "none of the 2 files could be used (2 not an image" in result.stderr
    rows = rows_of((tmp_path / "p.csv").read_text())
    assert [row[0] for row in rows[1:]] == ["bad/a.png", "bad/b.jpg"] and all(row[-1] for row in rows[1:])


def test_finetuned_predict_and_evaluate_reports_list_the_failed_files(tmp_path, monkeypatch):
    import featx as library
    from featx.datasets import write_elpv_folder

    cells = write_elpv_folder(tmp_path / "cells", per_class=3)
    tuned = library.finetune(cells, out=tmp_path / "t.safetensors", image_size=32, freeze_epochs=1, epochs=0,
                             batch_size=16, val_size=0, workers=0, progress=False)
    (cells / "functional" / "broken.png").write_bytes(b"not a png")
    monkeypatch.chdir(tmp_path)
    result = featx("predict", tuned.path, "cells", "-q", "-w", "0", "--report", "p.html")
    assert result.exit_code == 0, result.output
    rows = {row[0]: row for row in rows_of(result.stdout)[1:]}
    assert len(rows) == 13 and rows["cells/functional/broken.png"][-1].startswith("not an image")
    page = parse_html((tmp_path / "p.html").read_text())
    failed = [s for s in page.iter("section") if s.find("h2").text.startswith("Files that could not be read (1)")]
    assert failed and failed[0].find(".//a").text.endswith("broken.png")
    evaluated = featx("evaluate", tuned.path, "cells", "-q", "-w", "0", "--report", "e")
    assert evaluated.exit_code == 0, evaluated.output
    page = parse_html((tmp_path / "e.html").read_text())
    sections = {s.find("h2").text: s for s in page.iter("section")}
    assert any(title.startswith("Files that could not be read (1)") for title in sections), list(sections)

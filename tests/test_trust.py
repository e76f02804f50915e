"""Inputs that cannot be what the user meant are refused loudly; caches go where caches belong (issue #20)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import interrupt_once_rows_are_committed
from featx.cli import main

import featx
from featx.errors import BadInputError

FAST = ["--model", "mobilenet_v3_small", "--weights", "random", "--engine", "torch", "-w", "0", "-q"]


@pytest.fixture
def elpv_with_labels(tmp_path) -> Path:
    """ELPV's own images/ folder and labels.csv (space-separated: path, probability, cell type), 12 rows."""
    from featx.datasets import _elpv_root

    root = _elpv_root()
    lines = (root / "labels.csv").read_text().splitlines()[:12]
    (tmp_path / "images").mkdir()
    for line in lines:
        shutil.copy(root / line.split()[0], tmp_path / line.split()[0])
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "labels.csv"


def test_elpv_space_separated_labels_csv_is_read(elpv_with_labels, tmp_path):
    result = CliRunner().invoke(main, ["extract", str(elpv_with_labels), "--store", str(tmp_path / "s.h5"), *FAST])
    assert result.exit_code == 0, result.output
    data = featx.load_features(tmp_path / "s.h5")
    given = dict(line.split()[:2] for line in elpv_with_labels.read_text().splitlines())
    assert len(data.paths) == 12 and len(set(given.values())) >= 2
    assert {Path(p).name: data.classes[label] for p, label in zip(data.paths, data.labels)} == {
        Path(name).name: str(float(label)) for name, label in given.items()}


@pytest.mark.parametrize("text", ["path;label\n{f};a\n", "{f}\tb\n", '"{f}",c\n'])
def test_other_delimiters_are_detected(elpv_with_labels, text):
    first = elpv_with_labels.read_text().split()[0]
    other = elpv_with_labels.with_name("other.csv")
    other.write_text(text.format(f=first))
    images = featx.images._inputs.find_images(other)
    assert images.paths == [featx.images._inputs.display_path(elpv_with_labels.parent / first)] and len(images.classes) == 1


def test_a_csv_naming_no_existing_file_quotes_its_first_line(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("cells/cell0001.png  1.0  mono\ncells/cell0002.png  0.0  poly\n")
    with pytest.raises(BadInputError, match=r"expected rows of path,label .* First line: 'cells/cell0001.png  1.0  mono'"):
        featx.images._inputs.find_images(bad)


def test_a_run_that_keeps_nothing_exits_1_with_the_reasons_and_leaves_no_store(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    for name in ("a.png", "b.jpg"):
        (junk / name).write_text("not an image")
    store = tmp_path / "s.h5"
    result = CliRunner().invoke(main, ["extract", str(junk), "--store", str(store), *FAST])
    assert result.exit_code == 1 and "none of the 2 files could be used (2 not an image" in result.output
    assert "n/a" in result.output and not store.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["junk"]


def test_exported_graphs_go_to_the_user_cache_not_the_working_folder(elpv_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("FEATX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    pytest.importorskip("onnxruntime")
    store = tmp_path / "out" / "s.h5"
    featx.extract(elpv_folder, "mobilenet_v3_small", weights="random", engine="onnx", store=store, workers=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "xdg"]
    assert len(list((tmp_path / "xdg" / "featx" / "onnx").glob("mobilenet_v3_small-*.onnx"))) == 1


def test_info_on_a_model_file_creates_nothing(tmp_path):
    model = tmp_path / "m.skops"
    model.write_bytes(b"PK\x03\x04")
    result = subprocess.run([sys.executable, "-c", "from featx.cli import main; main()", "info", str(model)], capture_output=True, text=True)
    assert result.returncode == 1 and "is not a featx model (saved by featx fit): not a skops file" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["m.skops"]


def test_the_store_follows_the_folder(elpv_copy, tmp_path):
    """Deleted files leave the view, a moved file takes its new label, a fixed file loses its old failure."""
    store = tmp_path / "s.h5"
    args = ["extract", str(elpv_copy), "--store", str(store), *FAST]
    (elpv_copy / "functional" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert CliRunner().invoke(main, args).exit_code == 0
    gone = sorted((elpv_copy / "defective").glob("*.png"))[:2]
    for path in gone:
        path.unlink()
    moved = sorted((elpv_copy / "functional").glob("cell*.png"))[0]
    moved.rename(elpv_copy / "defective" / moved.name)
    (elpv_copy / "functional" / "broken.png").unlink()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "0 extracted" in again.output  # nothing new to compute
    data = featx.load_features(store)
    assert len(data.paths) == 18 and not any(p.endswith("broken.png") for p in data.paths)
    labels = dict(zip(data.paths, data.classes[data.labels]))
    assert labels[featx.images._inputs.display_path(elpv_copy / "defective" / moved.name)] == "defective"
    assert not any(str(g) in labels or featx.images._inputs.display_path(g) in labels for g in gone)
    info = CliRunner().invoke(main, ["info", str(store), "--history"]).output
    assert "files:     18" in info and "failures:  0" in info and "gone:      4 files" in info
    assert all(g.name in info for g in gone) and "broken.png" in info
    fitted = CliRunner().invoke(main, ["fit", "-f", str(store), "--cv", "2", "--out", str(tmp_path / "m.skops")])
    assert fitted.exit_code == 0, fitted.output  # no stale labels, no conflict naming a deleted file


def test_usage_errors_exit_2(elpv_folder, tmp_path):
    unknown = CliRunner().invoke(main, ["extract", str(elpv_folder), "--model", "vgg17", "-q"])
    missing = CliRunner().invoke(main, ["extract", str(tmp_path / "nowhere"), "-q"])
    assert unknown.exit_code == 2 and "unknown model 'vgg17'" in unknown.output
    assert missing.exit_code == 2 and "no such file or folder" in missing.output


def test_ctrl_c_keeps_what_was_computed_and_says_how_to_resume(tmp_path):
    from featx.datasets import write_elpv_folder

    cells = write_elpv_folder(tmp_path / "cells", per_class=15)
    store = tmp_path / "s.h5"
    command = [sys.executable, "-c", "from featx.cli import main; main()", "extract", str(cells), "--store", str(store),
               "-b", "2", *FAST]
    returncode, err, happened = interrupt_once_rows_are_committed(command, store)
    assert returncode == 130, f"{happened}\n{err}"
    kept = int(err.split("interrupted: the ")[1].split()[0])
    assert f"kept in {store}" in err and "resume with: featx extract" in err and "Traceback" not in err
    assert len(featx.load_features(store).paths) == kept > 0
    resumed = CliRunner().invoke(main, ["extract", str(cells), "--store", str(store), *FAST])
    assert resumed.exit_code == 0 and f"{60 - kept} extracted, {kept} already in the store" in resumed.output


def test_progress_without_a_terminal_is_whole_lines(tmp_path):
    from featx.datasets import write_elpv_folder

    cells = write_elpv_folder(tmp_path / "cells", per_class=2)
    command = [sys.executable, "-c", "from featx.cli import main; main()", "extract", str(cells), "--store",
               str(tmp_path / "s.h5"), *[a for a in FAST if a != "-q"]]
    err = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    assert "\r" not in err and "extract: 100%" in err and "8/8" in err


def test_misuses_name_the_real_cause(elpv_folder, tmp_path):
    image = next(elpv_folder.rglob("*.png"))
    as_model = CliRunner().invoke(main, ["predict", str(image), str(image)])
    assert as_model.exit_code == 1 and "is not a featx model (saved by featx fit)" in as_model.output
    store = tmp_path / "s.h5"
    featx.extract(elpv_folder, "mobilenet_v3_small", weights="random", store=store, workers=0, progress=False)
    shutil.copy(store, tmp_path / "copy.png")
    report = featx.extract(tmp_path / "copy.png", "mobilenet_v3_small", weights="random", store=tmp_path / "t.h5",
                           workers=0, progress=False)
    assert report.failures[0][1] == "an HDF5 file (a feature store?), not an image"
    knn = CliRunner().invoke(main, ["fit", "-f", str(store), "--clf", "knn", "--class-weight", "balanced", "--cv", "2"])
    assert knn.exit_code == 2 and "--class-weight does not apply to knn" in knn.output

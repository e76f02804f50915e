"""Outputs (issue #25 points 2, 8b, 9): every output path is checked before the work (one line, exit 1), every
file is written through a temporary file moved into place with the umask's mode, and a set of outputs ends with
a manifest of which run wrote them. Read-only folders are read-only tmpfs mounts (root ignores chmod)."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from featx.cli import main

from featx.errors import OutputError
from featx.outputs import atomic_write, check_manifest, check_output

FAST = ["--model", "mobilenet_v3_small", "--weights", "random", "--engine", "torch", "-w", "0", "-q"]


def featx(*args) -> Result:
    return CliRunner().invoke(main, list(map(str, args)))


def _mount(folder: Path) -> None:
    """A 2 MB tmpfs at `folder`; the test skips where it cannot be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")


@pytest.fixture
def read_only(tmp_path):
    """make(files): a read-only folder (a tmpfs remounted ro) holding `files` (name -> bytes)."""
    folder = tmp_path / "ro"

    def make(files: dict | None = None) -> Path:
        _mount(folder)
        for name, data in (files or {}).items():
            (folder / name).write_bytes(data)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        return folder

    yield make
    if os.path.ismount(folder):
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """cells/ (20 real ELPV cells), their store s.h5 and logreg fitted on it as m.skops."""
    from featx.datasets import write_elpv_folder

    root = tmp_path_factory.mktemp("outputs")
    write_elpv_folder(root / "cells", per_class=5)
    assert featx("extract", root / "cells", "--store", root / "s.h5", *FAST).exit_code == 0
    fitted = featx("fit", "-f", root / "s.h5", "--cv", "2", "-o", root / "m.skops")
    assert fitted.exit_code == 0, fitted.output
    return root


def assert_one_line(result: Result, path: Path, option: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.stderr.splitlines()) == 1, result.stderr
    assert f"cannot write {path}" in result.stderr and "Read-only file system" in result.stderr
    assert f"choose another {option}" in result.stderr


def test_extract_into_a_read_only_store_folder_is_one_line_before_any_work(elpv_folder, read_only):
    ro = read_only()
    assert_one_line(featx("extract", elpv_folder, "--store", ro / "x.h5", *FAST), ro / "x.h5", "--store")


def test_extract_in_a_read_only_working_folder(elpv_folder, read_only, monkeypatch):
    ro = read_only()
    monkeypatch.delenv("FEATX_CACHE")
    with monkeypatch.context() as inside:  # left before the mount goes
        inside.chdir(ro)
        assert_one_line(featx("extract", elpv_folder, *FAST), Path("cache"), "--store (or set FEATX_CACHE)")


def test_fit_into_a_read_only_folder(work, read_only):
    ro = read_only()
    assert_one_line(featx("fit", "-f", work / "s.h5", "-o", ro / "m.skops"), ro / "m.skops", "--out")


def test_predict_checks_both_outputs_first_and_a_failed_report_keeps_the_csv(work, read_only, tmp_path, monkeypatch):
    ro = read_only()
    cells = work / "cells" / "defective"
    assert_one_line(featx("predict", work / "m.skops", cells, "-q", "--out", ro / "p.csv"), ro / "p.csv", "--out")
    failed = featx("predict", work / "m.skops", cells, "-q", "--out", tmp_path / "p.csv", "--report", ro / "p.html")
    assert_one_line(failed, ro / "p.html", "--report")
    assert not (tmp_path / "p.csv").exists()  # refused before any work
    both = featx("predict", work / "m.skops", cells, "-q", "--out", tmp_path / "p.csv", "--report", tmp_path / "p.csv")
    assert both.exit_code == 1 and "--out writes it too" in both.output and not (tmp_path / "p.csv").exists()

    from featx.classify._inference import Predictions

    def full_disk(self, path):  # the report's folder fills up after the check
        with atomic_write(path, "w") as out:
            out.write("<html>")
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(Predictions, "write_html", full_disk)
    out = tmp_path / "out"
    result = featx("predict", work / "m.skops", cells, "-q", "--out", out / "p.csv", "--report", out / "p.html")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot write {out / 'p.html'}: No space left on device" in result.stderr
    assert len((out / "p.csv").read_text().splitlines()) == 6  # the CSV is kept: a header and 5 rows
    assert os.listdir(out) == ["p.csv"]  # no report, no temporary file


def test_predict_in_a_read_only_working_folder_needs_the_cache_only_for_new_images(work, read_only, monkeypatch):
    from PIL import Image

    cell = next((work / "cells" / "defective").glob("*.png"))
    ro = read_only({"flipped.png": b""})
    monkeypatch.delenv("FEATX_CACHE")
    with monkeypatch.context() as inside:  # left before the mount goes
        inside.chdir(ro)
        assert featx("predict", work / "m.skops", cell, "-q").exit_code == 0  # read from the training store
        new = work / "flipped.png"
        Image.open(cell).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(new)
        result = featx("predict", work / "m.skops", new, "-q")
    assert_one_line(result, Path("cache/apply/mobilenet_v3_small-"), "working folder")


def test_demo_into_a_read_only_folder(read_only):
    ro = read_only()
    assert_one_line(featx("demo", "--dir", ro / "demo", "--per-class", "10", "-q"), ro / "demo", "--dir")


def test_evaluate_beside_a_read_only_model(work, read_only):
    ro = read_only({"m.skops": (work / "m.skops").read_bytes()})
    result = featx("evaluate", ro / "m.skops", work / "cells", "-q")
    assert_one_line(result, ro / "m.skops.eval-cells", "--report")


def test_finetune_into_a_read_only_folder_before_an_epoch(elpv_folder, read_only):
    ro = read_only()
    result = featx("finetune", elpv_folder, "-o", ro / "t.safetensors", "--epochs", "0", "--image-size", "32", "-w", "0")
    assert_one_line(result, ro / "t.safetensors", "--out")


def test_audit_into_a_read_only_folder(work, read_only):
    ro = read_only()
    assert_one_line(featx("audit", work / "s.h5", "--out", ro / "audit"), ro / "audit", "--out")


def test_viz_into_a_read_only_folder(work, read_only):
    ro = read_only()
    image = next((work / "cells" / "defective").glob("*.png"))
    result = featx("viz", "features", image, "--model", "mobilenet_v3_small", "--weights", "random", "-o", ro / "f.png")
    assert_one_line(result, ro / "f.png", "--out")
    result = featx("viz", "attack", image, "--model", "mobilenet_v3_small", "--weights", "random",
                   "-o", work / "a.png", "--compare", ro / "c.png")
    assert_one_line(result, ro / "c.png", "--compare")
    assert not (work / "a.png").exists()


def test_check_output_finds_a_full_disk_and_a_file_in_the_way(tmp_path):
    full = tmp_path / "full"
    _mount(full)
    try:
        (full / "filler").write_bytes(b"\0" * (2 << 20))
    except OSError:
        pass
    try:
        with pytest.raises(OutputError, match="No space left on device"):
            check_output(full / "m.skops", "--out")
    finally:
        subprocess.run(["umount", str(full)], check=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is not a folder"):
        check_output(tmp_path / "file" / "sub" / "m.skops", "--out")
    with pytest.raises(OutputError, match="is not a folder"):
        check_output(tmp_path / "file", "--out", folder=True)
    assert check_output(tmp_path / "new" / "deeper" / "m.skops", "--out") and not (tmp_path / "new").exists()


def test_a_write_failing_midway_leaves_the_old_file_and_no_temporary_file(tmp_path):
    old = tmp_path / "m.csv"
    old.write_text("old, whole\n")
    with pytest.raises(KeyboardInterrupt), atomic_write(old, "w") as out:
        out.write("new, half")
        raise KeyboardInterrupt
    with pytest.raises(OutputError, match=f"cannot write {old}: No space left on device"), atomic_write(old) as out:
        raise OSError(28, "No space left on device")
    assert old.read_text() == "old, whole\n" and os.listdir(tmp_path) == ["m.csv"]


def test_a_kill_during_fit_leaves_the_old_model_whole(work, tmp_path, monkeypatch):
    """The model is written to a temporary file: a kill at its first write leaves the previous good model."""
    import skops.io

    from featx.classify._bundle import load_bundle

    model = tmp_path / "m.skops"
    model.write_bytes((work / "m.skops").read_bytes())

    def killed(state, file):
        Path(file).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(skops.io, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        load_bundle(work / "m.skops").save(model)
    assert model.read_bytes() == (work / "m.skops").read_bytes() and os.listdir(tmp_path) == ["m.skops"]
    load_bundle(model)


def test_new_files_get_the_umask_mode_not_0600(tmp_path, elpv_folder):
    import featx

    mask = os.umask(0o022)
    try:
        out = featx.finetune(elpv_folder, out=tmp_path / "t.safetensors", workers=0, progress=False,
                             image_size=32, freeze_epochs=1, epochs=0, batch_size=8, val_size=0)
        with atomic_write(tmp_path / "a.csv", "w") as f:
            f.write("a\n")
        os.umask(0o027)
        with atomic_write(tmp_path / "b.csv", "w") as f:
            f.write("b\n")
    finally:
        os.umask(mask)
    assert oct(out.path.stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "a.csv").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "b.csv").stat().st_mode & 0o777) == oct(0o640)


def test_fit_and_audit_sets_end_with_a_manifest_of_their_files(work, tmp_path, monkeypatch):
    args = ["fit", "-f", work / "s.h5", "--cv", "2", "-o", tmp_path / "m.skops"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/featx", *map(str, args)])  # as the command line of a real run
    fitted = featx(*args)
    assert fitted.exit_code == 0, fitted.output
    manifest = json.loads((tmp_path / "m.skops.manifest.json").read_text())
    assert sorted(manifest["files"]) == ["m.skops", "m.skops-confusion.png", "m.skops-pca.png", "m.skops.html",
                                         "m.skops.json"]
    assert manifest["command"] == shlex.join(["featx", *map(str, args)]) and manifest["time"]
    assert check_manifest(tmp_path / "m.skops.manifest.json") == []
    (tmp_path / "m.skops-pca.png").write_bytes(b"another run's figure")
    assert check_manifest(tmp_path / "m.skops.manifest.json") == ["m.skops-pca.png"]

    audited = featx("audit", work / "s.h5", "--out", tmp_path / "audit", "--cv", "2")
    assert audited.exit_code == 0, audited.output
    listed = json.loads((tmp_path / "audit" / "manifest.json").read_text())["files"]
    assert sorted(listed) == sorted(p.name for p in (tmp_path / "audit").iterdir() if p.name != "manifest.json")
    assert "audit.html" in listed and "clean.csv" in listed
    assert check_manifest(tmp_path / "audit" / "manifest.json") == []

    evaluated = featx("evaluate", tmp_path / "m.skops", work / "cells", "-q", "--report", tmp_path / "ev")
    assert evaluated.exit_code == 0, evaluated.output
    assert "ev.html" in json.loads((tmp_path / "ev.manifest.json").read_text())["files"]


def test_a_killed_copy_of_the_demo_images_is_not_kept(tmp_path, monkeypatch):
    """write_elpv_folder skips cells already there: a half-copied one must never be there."""
    import shutil

    from featx.datasets import write_elpv_folder

    def killed(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:100])
        raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(shutil, "copyfile", killed)
        write_elpv_folder(tmp_path / "cells", per_class=10)
    assert [p for p in (tmp_path / "cells").rglob("*") if p.is_file()] == []
    write_elpv_folder(tmp_path / "cells", per_class=10)
    assert sum(1 for _ in (tmp_path / "cells").glob("*/*.png")) == 40

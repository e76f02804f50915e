"""A full disk during extraction (a real tmpfs of a few MB): one line, exit 1, whole rows only, and the rerun on
free space gives exactly a clean run's rows."""
import re
import subprocess
import sys

import numpy as np
import pytest

import featx
from featx.features._store import FeatureStore

# 2048-d rows: a new 256 KB chunk of features every 32 rows, so the disk fills mid-run; 64 px: little compute
SETTINGS = dict(model="resnet50", weights="random", image_size=64, engine="torch", workers=0, batch_size=4)
FAST = ["--model", "resnet50", "--weights", "random", "--image-size", "64", "--engine", "torch", "-w", "0", "--batch-size", "4", "-q"]
CLI = "from featx.cli import main; main()"
# the free-space check switched off: the writes themselves meet ENOSPC, as when another process fills the disk
UNCHECKED = "from featx.features._store import FeatureStore; FeatureStore._check_room = lambda *args: None; " + CLI


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    from featx.datasets import write_elpv_folder

    return write_elpv_folder(tmp_path_factory.mktemp("full") / "cells", per_class=10)


@pytest.fixture(scope="module")
def clean(cells, tmp_path_factory):
    """A clean run's rows and files."""
    return contents(featx.extract(cells, progress=False, store=tmp_path_factory.mktemp("clean") / "clean.h5", **SETTINGS).store)


@pytest.fixture
def small_disk(tmp_path, request):
    """A tmpfs of request.param kB; skipped where it cannot be mounted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={request.param}k", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def contents(store) -> tuple[dict, dict]:
    with FeatureStore.open(store) as opened:
        keys = opened.keys()
        return dict(zip(keys, opened.rows(range(len(keys))))), opened.files()


def same_as_clean(store, reference: dict) -> None:
    rows, _ = contents(store)
    assert set(rows) <= set(reference)
    for key, features in rows.items():
        assert np.any(features != 0)
        np.testing.assert_allclose(features, reference[key], rtol=1e-3, atol=1e-4)  # batch composition: float noise


# The store takes 1.3 MB once it holds rows (a first chunk of every table, the quality columns included), its
# reserve 1.4 MB, and a commit's check asks for 1.7 MB more: 3.6 MB stop the second commit of rows at the check;
# 3.0 MB without the check let the writes fail where the second chunk of features is allocated (both sizes
# raised by 0.4 MB when the quality columns came: at 3.2 / 2.6 MB the first commit no longer fit).
@pytest.mark.parametrize(("code", "small_disk"), [(CLI, 3600), (UNCHECKED, 3000)], ids=["checked", "write-fails"],
                         indirect=["small_disk"])
def test_a_full_disk_stops_in_one_line_keeps_whole_rows_and_the_rerun_completes(cells, clean, small_disk, code):
    reference, reference_files = clean
    store = small_disk / "features.h5"
    command = [sys.executable, "-c", code, "extract", str(cells), "--store", str(store), *FAST]
    full = subprocess.run(command, capture_output=True, text=True)
    assert full.returncode == 1, full.stderr
    assert "Traceback" not in full.stderr and "Segmentation" not in full.stderr
    assert re.search(rf"^Error: disk full.* {re.escape(str(store))} keeps its \d+ committed rows", full.stderr, re.M)
    assert f"resume with: featx extract {cells}" in full.stderr.replace("'", "")
    kept = int(re.search(r"keeps its (\d+) committed rows", full.stderr)[1])
    assert 0 < kept < len(reference), full.stderr
    assert len(contents(store)[0]) == kept
    same_as_clean(store, reference)  # whole rows only, each exactly a clean run's
    assert not (small_disk / "features.h5.reserve").exists()

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    rerun = subprocess.run([sys.executable, "-c", CLI, *command[3:]], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(reference) - kept} extracted, {kept} already in the store" in rerun.stdout
    rows, files = contents(store)
    assert set(rows) == set(reference)
    same_as_clean(store, reference)
    assert {p: label for p, (_, label) in files.items()} == {p: label for p, (_, label) in reference_files.items()}


@pytest.mark.parametrize("small_disk", [1024], indirect=True)
def test_a_full_disk_while_fine_tuning_is_one_line_and_leaves_no_partial_file(cells, small_disk):
    """torch's and safetensors' own writers raised a RuntimeError ("unexpected pos") and a SafetensorError on
    ENOSPC: tracebacks. The first checkpoint (after the head's epoch) does not fit in 1 MB."""
    out = small_disk / "m.safetensors"
    full = subprocess.run([sys.executable, "-c", CLI, "finetune", str(cells), "-o", str(out), "--image-size", "32",
                           "--freeze-epochs", "1", "--epochs", "0", "-w", "0", "-q"], capture_output=True, text=True)
    assert full.returncode == 1, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr
    assert f"cannot write {out}.ckpt" in errors[0] and "No space left on device" in errors[0], full.stderr
    assert not any(small_disk.iterdir())

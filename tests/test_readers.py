"""The store's read side (#25 points 6, 7, 8c): readers during a write, files gone since extraction, and the
shared lock held per read, not per run."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import synthetic_space
from featx.cli import main

import featx
from featx.auditing._audit import audit
from featx.classify._fitting import fit as train
from featx.errors import StoreWarning
from featx.features._store import FeatureStore
from featx.images._content import KEY_LENGTH
from featx.images._inputs import display_path

FAST = dict(model="mobilenet_v3_small", weights="random", workers=0, progress=False)
HALF = 20  # rows per commit of WRITER

WRITER = f"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from conftest import synthetic_space
from featx.features._store import FeatureStore

def rows(start):
    labels = np.arange(start, start + {HALF}) % 2
    features = np.random.default_rng(start).normal(size=({HALF}, 8)).astype(np.float32) + 3 * labels[:, None]
    files = [(f"img{{i}}.png", i, int(label)) for i, label in zip(range(start, start + {HALF}), labels)]
    return dict(keys=[f"{{i:0{KEY_LENGTH}d}}" for i in range(start, start + {HALF})], features=features, files=files)

with FeatureStore.create_or_open(sys.argv[1], synthetic_space()) as store:
    start = store.count("rows")
    store.commit(**rows(start), classes=[] if start else ["a", "b"])
    print("committed", flush=True)
    sys.stdin.readline()  # until the test lets it go on
    store.commit(**rows(start + {HALF}))
"""


def start_writer(store: Path, **pipes) -> subprocess.Popen:
    """A process that commits HALF rows to `store`, then HALF more once its stdin gives a line or closes."""
    return subprocess.Popen([sys.executable, "-c", WRITER, str(store), str(Path(__file__).parent)], text=True, **pipes)


def test_fit_and_audit_on_a_store_being_written_name_the_writer_or_wait_for_it(tmp_path):
    """Point 6: the committed rows are used and the writer is named; --wait waits for it and uses them all."""
    store = tmp_path / "s.h5"
    writer = start_writer(store, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == "committed\n"
        with pytest.warns(StoreWarning, match=f"process {writer.pid} .* is writing .*using the {HALF} rows it committed"):
            _, report = train(store, "logreg", cv=2)
        assert report.details["n_train"] + report.details["n_test"] == HALF
        with pytest.warns(StoreWarning, match=f"process {writer.pid} "):
            assert audit(store, cv=2).n_rows == HALF
        result = CliRunner().invoke(main, ["fit", "-f", str(store), "--cv", "2", "-o", str(tmp_path / "m.skops")])
        assert result.exit_code == 0, result.output
        assert f"warning: process {writer.pid} (" in result.stderr and "(--wait to wait for it)" in result.stderr
        threading.Timer(1.0, writer.stdin.close).start()  # the writer commits the rest and ends while fit waits
        result = CliRunner().invoke(main, ["fit", "-f", str(store), "--cv", "2", "--wait", "-o", str(tmp_path / "w.skops")])
        assert result.exit_code == 0, result.output
        assert f"warning: waiting for process {writer.pid} (" in result.stderr and "is writing" not in result.stderr
        assert writer.wait(timeout=60) == 0
        _, report = train(store, "logreg", cv=2)
        assert report.details["n_train"] + report.details["n_test"] == 2 * HALF
    finally:
        writer.kill()
        writer.wait()


def test_a_lock_file_left_by_a_killed_writer_whose_pid_lives_again_names_no_writer(tmp_path):
    """kill -9 leaves STORE.lock; after a restart its PID may be another process's. Readers went by the PID: `info`
    named a writer and `--wait` spun for ever. The flock is what says whether a writer holds the store."""
    store = tmp_path / "s.h5"
    writer = start_writer(store, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert writer.wait(timeout=60) == 0
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / "s.h5.lock").write_text(str(stranger.pid))  # the PID of a live process that holds no lock
        opened = []

        def read() -> None:
            with FeatureStore.open(store, wait=True) as reader:
                opened.append((reader.writer_pid, reader.count("rows")))

        waiting = threading.Thread(target=read, daemon=True)  # a thread: a regression hangs it, not the suite
        waiting.start()
        waiting.join(timeout=30)
        assert opened == [(None, 2 * HALF)]
        result = CliRunner().invoke(main, ["info", str(store)])
        assert result.exit_code == 0 and "is writing" not in result.output, result.output
    finally:
        stranger.kill()
        stranger.wait()


def test_a_reader_holds_the_store_lock_only_while_it_reads(tmp_path):
    """Point 8c: between two reads, an open reader leaves the store free for a commit."""
    store = tmp_path / "s.h5"
    writer = start_writer(store, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert writer.wait(timeout=60) == 0
    with FeatureStore.open(store) as opened:
        assert len(opened.keys()) == 2 * HALF
        fd = os.open(store, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a commit takes: free while the reader is open
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        assert opened.rows([3, 1]).shape == (2, 8) and len(opened.files()) == 2 * HALF


def test_a_writer_waiting_on_a_reader_says_for_whom(tmp_path):
    """Point 8c: a commit kept waiting by a reader says once, on stderr, which process it waits for."""
    store = tmp_path / "s.h5"
    with FeatureStore.create_or_open(store, synthetic_space()):
        pass
    fd = os.open(store, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a reader in the middle of a long read
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            os.close(fd)

    threading.Timer(20.0, release).start()  # without a message, the writer goes on after this
    writer = start_writer(store, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = writer.stderr.readline()  # its message, or "" when it ended without one
    release()
    _, rest = writer.communicate(timeout=60)
    assert writer.returncode == 0, rest
    assert line.startswith(f"featx: waiting for process {os.getpid()} (") and line.endswith(f"to finish reading {store}\n")
    assert "waiting" not in rest  # once


def test_files_gone_since_extraction_are_counted_and_left_out(elpv_copy, tmp_path, monkeypatch):
    """Point 7: a deleted and a moved cell leave the view of info, fit and load_features(only_present=True)."""
    store = tmp_path / "store" / "s.h5"
    featx.extract(elpv_copy, store=store, **FAST)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # paths are stored relative to the store, shown relative to here
    deleted = sorted((elpv_copy / "functional").glob("*.png"))[0]
    moved = sorted((elpv_copy / "defective").glob("*.png"))[0]
    deleted.unlink()
    moved.rename(elpv_copy / "functional" / moved.name)  # still on disk, under another label
    info = CliRunner().invoke(main, ["info", str(store), "--history"])
    assert info.exit_code == 0, info.output
    assert "files:     18\n" in info.output and "gone:      2 files no longer on disk" in info.output
    assert "2 files no longer on disk: featx extract DATA to update" in info.output
    assert f"  {display_path(moved)} (defective)" in info.output
    with pytest.warns(StoreWarning, match="2 files no longer on disk: featx extract DATA to update"):
        _, report = train(store, "logreg", cv=2)
    assert report.details["n_train"] + report.details["n_test"] == 18
    assert len(featx.load_features(store).paths) == 20  # the default keeps what the last extraction saw
    with pytest.warns(StoreWarning, match="2 files no longer on disk"):
        present = featx.load_features(store, only_present=True)
    assert len(present.paths) == 18 and not {display_path(deleted), display_path(moved)} & set(present.paths)
    np.testing.assert_array_equal(present.features, featx.load_features(store).features[
        np.isin(featx.load_features(store).paths, present.paths)])
    away = tmp_path / "away" / "deeper" / "s.h5"  # a store away from its images (copied elsewhere) keeps every file
    away.parent.mkdir(parents=True)
    away.write_bytes(store.read_bytes())
    with FeatureStore.open(away) as opened:
        files, gone = opened.files_on_disk()
    assert len(files) == 20 and not gone


def test_an_audit_says_each_step_on_stderr(tmp_path):
    """Point 8c: a long audit is not silent: a line as each step starts (none with --quiet)."""
    store = tmp_path / "s.h5"
    assert start_writer(store, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).wait(timeout=60) == 0
    result = CliRunner().invoke(main, ["audit", str(store), "--cv", "2", "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    steps = [line.split(": ", 1)[1] for line in result.stderr.splitlines() if line.startswith("audit ")]
    from featx.auditing._labels import CANDIDATES, REFIT_ROUNDS  # --clf auto: each candidate's out-of-fold probabilities, then refits

    refits = [s for s in steps if " refitted without " in s and s.endswith(" likely errors (2 folds)")]
    assert len(refits) == REFIT_ROUNDS, steps
    assert [s for s in steps[1:] if s not in refits] == [
        f"10 nearest neighbours of {2 * HALF} images ({2 * HALF} files)",
        "duplicates, near duplicates (candidate pairs checked on their pixels) and outliers",
        *(f"label errors: out-of-fold probabilities of {name} on {2 * HALF} images (2 folds)" for name in CANDIDATES), "done"]
    assert steps[-1 - REFIT_ROUNDS : -1] == refits, steps
    quiet = CliRunner().invoke(main, ["audit", str(store), "--cv", "2", "-q", "-o", str(tmp_path / "q")])
    assert quiet.exit_code == 0 and "audit " not in quiet.stderr


def test_exact_neighbours_stay_within_their_block_memory(monkeypatch):
    """Point 8c: a 20,000-image audit took 3x the memory of a 5,000-image one; the exact search's blocks now
    hold its similarities and argpartition's indices within BLOCK_BYTES (no negated copy), same results."""
    import tracemalloc

    from featx.features import _neighbours as neighbours

    monkeypatch.setattr(neighbours, "BLOCK_BYTES", 4 << 20)
    x = neighbours.unit_rows(np.abs(np.random.default_rng(0).normal(size=(3000, 64))).astype(np.float32))
    tracemalloc.start()
    sims, index = neighbours.nearest(x, 10, exact=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * neighbours.BLOCK_BYTES, f"peak {peak / 2**20:.1f} MiB"
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_allclose(sims, -np.sort(-full, axis=1)[:, :10], rtol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(full, index, axis=1), sims, rtol=1e-6)

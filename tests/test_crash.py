"""kill -9 a real extraction at random moments: committed rows survive, the rerun completes exactly."""
import random
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import featx
from featx.errors import StoreInUseError
from featx.features._extraction import RACY_NS
from featx.features._store import FeatureStore

SCRIPT = """
import sys, featx
featx.extract(sys.argv[1], store=sys.argv[2], batch_size=4, workers=1, progress=False)
"""


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    from featx.datasets import write_elpv_folder

    folder = write_elpv_folder(tmp_path_factory.mktemp("crash") / "cells", per_class=25)
    time.sleep(RACY_NS / 1e9 + 0.1)  # old enough for the stat index to record them
    return folder


def wait_for_lock_release(store, limit=2.0):
    """The killed run's decode workers die with it and release the store promptly: a writer gets in."""
    with FeatureStore.open(store) as opened:
        space = opened.space
    deadline = time.monotonic() + limit
    while True:
        try:
            FeatureStore.create_or_open(store, space).close()
            return
        except StoreInUseError:
            assert time.monotonic() < deadline, "the store's lock outlived the killed extraction"
            time.sleep(0.02)


def rows_committed(store) -> int:
    """The committed row count, read without the store's lock while a writer runs (a test-only probe:
    a read that meets a half-written header is simply retried)."""
    try:
        with h5py.File(store, "r", locking=False) as h5:
            return int(h5.attrs["rows"])
    except (OSError, KeyError):
        return -1


def committed(store):
    with FeatureStore.open(store) as opened:
        keys = opened.keys()
        return dict(zip(keys, opened.rows(range(len(keys))))), opened.files()


def indexed_contents(store) -> tuple[set, set]:
    """(content keys of every committed stat entry, content keys the store holds as rows or failures)."""
    with FeatureStore.open(store) as opened:
        held = set(opened.keys()) | {key for key, _ in opened.failures().values()}
        return set(opened._column("stat/key").astype(str)), held


def test_kill_at_random_moments_then_resume(cells, tmp_path):
    """kill -9 at random moments, then resume. (This test found that a kill mid-commit could tear HDF5's
    global heap of variable-length path strings; texts are byte arrays since.)"""
    done = featx.extract(cells, store=tmp_path / "clean.h5", batch_size=4, workers=1, progress=False)
    reference, reference_files = committed(done.store)
    window = min(0.3, done.seconds / 4)  # kill within the run's first quarter after a commit: mid-run on any machine
    store = tmp_path / "killed.h5"
    rng = random.Random(1234)
    seen_partial = seen_indexed = 0
    for attempt in range(4):
        before = rows_committed(store) if store.exists() else 0
        process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cells), str(store)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and rows_committed(store) <= before:
            time.sleep(0.01)  # wait until this attempt commits rows, then kill at a random moment after
        time.sleep(rng.uniform(0.0, window))
        process.kill()
        process.wait()
        wait_for_lock_release(store)
        rows, _ = committed(store)  # the store opens, and every committed row is exactly right
        for key, features in rows.items():
            np.testing.assert_allclose(features, reference[key], rtol=1e-4, atol=1e-5)
        seen_partial += 0 < len(rows) < len(reference)
        indexed, held = indexed_contents(store)  # no stat entry names a content the store does not hold
        assert indexed <= held
        seen_indexed += 0 < len(indexed) < len(reference)
        if len(rows) == len(reference):  # this attempt ran to the end: start the next one afresh
            store.unlink()
    assert seen_partial, "no kill landed mid-extraction; the test proved nothing"
    assert seen_indexed, "no kill left a partial stat index; the test proved nothing about it"
    report = featx.extract(cells, store=store, batch_size=4, workers=1, progress=False)
    rows, files = committed(store)
    assert len(rows) == len(reference) == report.n_unique == 100
    for key, features in rows.items():
        np.testing.assert_allclose(features, reference[key], rtol=1e-4, atol=1e-5)
    assert {p: label for p, (_, label) in files.items()} == {p: label for p, (_, label) in reference_files.items()}
    indexed, held = indexed_contents(store)
    assert indexed == held == set(reference)  # every file has its stat entry after the completed run


def test_readers_see_consistent_committed_rows_during_a_write(cells, tmp_path):
    """info, fit and load_features may read a store while another process extracts into it."""
    clean = featx.extract(cells, store=tmp_path / "clean.h5", batch_size=4, workers=1, progress=False).store
    reference, _ = committed(clean)
    store = tmp_path / "live.h5"
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cells), str(store)])
    seen, writers = [], set()
    try:
        while process.poll() is None:
            if not store.exists():
                time.sleep(0.01)
                continue
            with FeatureStore.open(store) as opened:
                writers.add(opened.writer_pid)
                keys = opened.keys()
                rows = opened.rows(range(len(keys)))
                files = opened.files()
            assert all(0 <= row < len(keys) for row, _ in files.values())  # no entry points past the snapshot
            for key, features in zip(keys, rows):
                np.testing.assert_allclose(features, reference[key], rtol=1e-4, atol=1e-5)
            seen.append(len(keys))
    finally:
        process.wait()
    assert process.returncode == 0 and process.pid in writers
    assert any(0 < n < 100 for n in seen), "no read landed mid-extraction; the test proved nothing"
    assert seen == sorted(seen) and len(committed(store)[0]) == 100

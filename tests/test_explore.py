"""Exploring a store (issue #29): featx export, featx similar, featx map."""
from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import synthetic_space
from featx.cli import main

import featx
from featx.features._store import FeatureStore
from featx.images._content import KEY_LENGTH


@pytest.fixture(scope="module")
def store(tmp_path_factory, elpv_folder) -> Path:
    """The 20 ELPV cells of elpv_folder extracted with the default backbone."""
    path = tmp_path_factory.mktemp("explore") / "cells.h5"
    featx.extract(elpv_folder, store=path, progress=False)
    return path


def synthetic_store(path: Path, n: int, width: int, block: int = 10_000, labelled: bool = True) -> Path:
    """A store of n random rows (files f000000.png...), committed in blocks, without a network."""
    rng = np.random.default_rng(0)
    with FeatureStore.create_or_open(path, synthetic_space()) as opened:
        opened.commit(classes=["a", "b"])
        for start in range(0, n, block):
            rows = range(start, min(n, start + block))
            opened.commit(keys=[f"{i:0{KEY_LENGTH}d}" for i in rows],
                          features=rng.normal(size=(len(rows), width)).astype(np.float32),
                          files=[(f"f{i:06d}.png", i, i % 2 if labelled else -1) for i in rows])
    return path


def expected_rows(path: Path) -> tuple[featx.FeatureSet, list[str], list[str]]:
    """load_features's rows, their label names ("" unlabelled) and content keys."""
    loaded = featx.load_features(path)
    with FeatureStore.open(path) as opened:
        keys, files = opened.keys(), opened.files()
    labels = [loaded.classes[i] if i >= 0 else "" for i in loaded.labels]
    return loaded, labels, [keys[files[p][0]] for p in loaded.paths]


# ---- featx export -----------------------------------------------------------------------------------------
def test_parquet_export_reads_back_with_pyarrow_and_pandas_as_load_features(store, tmp_path, monkeypatch):
    import pandas as pd
    import pyarrow.parquet as pq

    monkeypatch.setattr("featx.exploring._export.BLOCK_BYTES", 4 * 1024 * 7)  # several row groups
    out = tmp_path / "cells.parquet"
    result = CliRunner().invoke(main, ["export", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded, labels, keys = expected_rows(store)
    table = pq.read_table(out)
    assert table.schema.field("embedding").type.list_size == loaded.features.shape[1]
    assert pq.ParquetFile(out).metadata.num_row_groups > 1
    frame = pd.read_parquet(out)
    for read in (table.to_pydict(), {name: list(frame[name]) for name in frame.columns}):
        assert read["path"] == list(loaded.paths) and read["label"] == labels and read["key"] == keys
        np.testing.assert_array_equal(np.array([np.asarray(e, np.float32) for e in read["embedding"]]), loaded.features)


def test_npy_export_is_the_matrix_and_a_csv_in_the_same_order(tmp_path):
    path = synthetic_store(tmp_path / "s.h5", 1000, 16, block=300, labelled=False)
    written = featx.export_embeddings(path, "npy", tmp_path / "out" / "e.npy", block_bytes=16 * 4 * 99)
    assert written == [tmp_path / "out" / "e.npy", tmp_path / "out" / "e.csv"]
    loaded, labels, keys = expected_rows(path)
    np.testing.assert_array_equal(np.load(written[0]), loaded.features)
    with open(written[1], newline="") as handle:
        assert list(csv.reader(handle)) == [["path", "label", "key"], *map(list, zip(loaded.paths, labels, keys))]


# Peak RSS from /proc (VmHWM, reset through clear_refs): ru_maxrss would start at the forking parent's RSS.
MEASURE = textwrap.dedent("""
    import re, sys
    import featx, h5py, numpy, pyarrow, pyarrow.parquet
    from featx.exploring._export import export_embeddings

    def peak():
        return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) >> 10
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    with featx.FeatureStore.open(sys.argv[1]) as s:  # the file tables in memory, as the export holds them
        s.files(); s.keys()
    before = peak()
    export_embeddings(sys.argv[1], sys.argv[2], sys.argv[3])
    print(peak() - before)
""")
ROWS, WIDTH, BOUND_MIB = 100_000, 1024, 128  # the features: 390 MiB; measured: 50-110 MiB (parquet), 30 (npy)


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_a_100000_row_store_exports_in_bounded_memory(tmp_path_factory, fmt):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("the peak RSS is measured through Linux's /proc/self/clear_refs")
    path = tmp_path_factory.getbasetemp() / "big.h5"
    if not path.exists():
        synthetic_store(path, ROWS, WIDTH)
    out = tmp_path_factory.mktemp("big") / f"big.{fmt}"
    run = subprocess.run([sys.executable, "-c", MEASURE, str(path), fmt, str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    grew = int(run.stdout)
    print(f"{fmt}: peak RSS grew {grew} MiB exporting {ROWS} x {WIDTH} float32 ({ROWS * WIDTH * 4 >> 20} MiB)")
    assert grew < BOUND_MIB
    assert out.stat().st_size > ROWS * WIDTH * 4


def test_export_refuses_an_empty_store_and_says_how_to_get_pyarrow(tmp_path, monkeypatch):
    empty = tmp_path / "empty.h5"
    FeatureStore.create_or_open(empty, synthetic_space()).close()
    result = CliRunner().invoke(main, ["export", str(empty), "--out", str(tmp_path / "e.parquet")])
    assert result.exit_code == 1 and f"{empty} holds no features" in result.output and "Traceback" not in result.output
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    path = synthetic_store(tmp_path / "s.h5", 10, 4)
    result = CliRunner().invoke(main, ["export", str(path), "--out", str(tmp_path / "e.parquet")])
    assert result.exit_code == 1 and 'pip install "featx[explore]"' in result.output
    assert not (tmp_path / "e.parquet").exists()

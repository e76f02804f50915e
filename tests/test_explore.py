"""Exploring a store (issue #29): featx export, featx similar, featx map."""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import synthetic_space
from featx.cli import main

import featx
from featx.errors import StoreWarning
from featx.features._store import FeatureStore
from featx.images._content import KEY_LENGTH


@pytest.fixture(scope="module")
def store(tmp_path_factory, elpv_folder) -> Path:
    """The 20 ELPV cells of elpv_folder extracted with the default backbone."""
    path = tmp_path_factory.mktemp("explore") / "cells.h5"
    featx.extract(elpv_folder, store=path, progress=False)
    return path


def synthetic_store(path: Path, n: int, width: int, block: int = 10_000, labelled: bool = True, seed: int = 0,
                    features: np.ndarray | None = None) -> Path:
    """A store of n random rows, or of `features` (n x width), one file f000000.png... per row (labels a, b in
    turn), committed in blocks, without a network."""
    rng = np.random.default_rng(seed)
    with FeatureStore.create_or_open(path, synthetic_space()) as opened:
        opened.commit(classes=["a", "b"])
        for start in range(0, n, block):
            rows = range(start, min(n, start + block))
            opened.commit(keys=[f"{i:0{KEY_LENGTH}d}" for i in rows],
                          features=(rng.normal(size=(len(rows), width)) if features is None
                                    else features[rows.start : rows.stop]).astype(np.float32),
                          files=[(f"f{i:06d}.png", i, i % 2 if labelled else -1) for i in rows])
    return path


def image_store(folder: Path, names: list[str], features: np.ndarray | None = None, seed: int = 0) -> tuple[Path, list[str]]:
    """folder/s.h5 holding random features for small random PNGs folder/imgs/NAME (labels a, b in turn), keyed by
    their content as an extraction keys them, without a network; returns (store, image paths)."""
    from PIL import Image

    from featx.images._content import content_keys

    rng = np.random.default_rng(seed)
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    paths = [os.path.join(folder, "imgs", name) for name in names]
    for path in paths:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path, format="PNG")
    if features is None:
        features = rng.normal(size=(len(paths), 4))
    with FeatureStore.create_or_open(folder / "s.h5", synthetic_space()) as opened:
        opened.commit(classes=["a", "b"])
        opened.commit(keys=[hashed.key for hashed in content_keys(paths)], features=np.asarray(features, np.float32),
                      files=[(path, i, i % 2) for i, path in enumerate(paths)])
    return folder / "s.h5", paths


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


def test_export_adds_the_split_of_a_csv_of_path_split(store, tmp_path):
    import pyarrow.parquet as pq

    loaded, _, _ = expected_rows(store)
    named = {os.path.abspath(path): ("test" if i % 3 == 0 else "train") for i, path in enumerate(loaded.paths[:-2])}
    (tmp_path / "split.csv").write_text("path,split\n" + "".join(f"{p},{s}\n" for p, s in named.items()))
    expected = [named.get(os.path.abspath(path)) for path in loaded.paths]  # the last two: in no split
    out = tmp_path / "cells.parquet"
    result = CliRunner().invoke(main, ["export", str(store), "--out", str(out), "--split-csv", str(tmp_path / "split.csv")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("split").to_pylist() == expected
    written = featx.export_embeddings(store, "npy", tmp_path / "e.npy", split=tmp_path / "split.csv")
    with open(written[1], newline="") as handle:
        assert [row["split"] for row in csv.DictReader(handle)] == [s or "" for s in expected]


def test_a_split_csv_naming_none_of_the_stores_files_is_refused_and_one_naming_others_is_said(tmp_path):
    """The paths of a split CSV are relative to it: one written for another folder matched no file and gave an
    empty split column without a word (export and audit read it alike)."""
    from featx.errors import InputWarning

    path, images = image_store(tmp_path, [f"i{i}.png" for i in range(4)])
    _, others = image_store(tmp_path / "other", ["o0.png", "o1.png"])
    split = tmp_path / "split.csv"
    split.write_text("".join(f"{p},test\n" for p in others))
    result = CliRunner().invoke(main, ["export", str(path), "--split-csv", str(split), "--out", str(tmp_path / "e.parquet")])
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert f"{split}: none of its 2 files is among the 4 files of {path}" in errors[0]
    split.write_text("".join(f"{p},test\n" for p in [images[1], *others]))
    with pytest.warns(InputWarning, match=r"split.csv: 2 of its 3 files are not among the files of .*s.h5, left out"):
        written = featx.export_embeddings(path, "npy", tmp_path / "e.npy", split=split)
    with open(written[1], newline="") as handle:
        assert [row["split"] for row in csv.DictReader(handle)] == ["", "test", "", ""]


ODD = os.fsdecode(b"caf\xe9.png")  # byte 0xe9 is not UTF-8: Python holds it as the surrogate \udce9


def test_names_that_are_not_utf8_export_to_parquet_and_similar_writes_them_to_a_strict_stdout(tmp_path):
    """pyarrow refused such a name (a traceback); parquet gets its bytes as \\xNN with a warning, and similar's
    CSV on standard output carries the bytes themselves, as its CSV file does, under a strict UTF-8 stdout."""
    import codecs

    import pyarrow.parquet as pq

    from featx.errors import FeatxWarning

    path, images = image_store(tmp_path, ["a.png", ODD, "b.png"])
    with pytest.warns(FeatxWarning, match=r"1 names are not UTF-8.*caf\\xe9\.png"):
        out = featx.export_embeddings(path, out=tmp_path / "e.parquet")[0]
    written = pq.read_table(out).column("path").to_pylist()
    assert [os.fsdecode(codecs.escape_decode(p.encode())[0]) for p in written] == sorted(images)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    run = subprocess.run([sys.executable, "-c", "from featx.cli import main; main()", "similar", images[0], "--store",
                          str(path), "-k", "2"], capture_output=True, env=env)
    assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr.decode(errors="replace")
    rows = list(csv.reader(io.StringIO(run.stdout.decode("utf-8", "surrogateescape"))))
    assert {row[2] for row in rows[1:]} == set(images[1:])


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


def test_no_command_writes_over_the_store_it_reads_nor_half_an_npy_export(tmp_path, elpv_folder):
    """--out or --report naming the store itself (which export, map, similar and fit read) is one line and the
    store is left whole; an npy export whose CSV would take the matrix's name, or cannot be written, writes nothing."""
    import hashlib

    path = synthetic_store(tmp_path / "s.h5", 30, 4)
    query = str(next(elpv_folder.rglob("*.png")))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    runs = {
        "export": ["export", str(path), "--format", "npy", "--out", str(path)],
        "map": ["map", str(path), "--out", str(path)],
        "similar": ["similar", query, "--store", str(path), "--report", str(path)],
        "fit": ["fit", "--features", str(path), "--out", str(path)],
    }
    for name, args in runs.items():
        result = CliRunner().invoke(main, args)
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert result.exit_code in (1, 2) and len(errors) == 1 and "it is the input" in errors[0], (name, result.output)
        assert "Traceback" not in result.output and hashlib.sha256(path.read_bytes()).hexdigest() == before, name
    (tmp_path / "taken.csv").mkdir()
    for out, said in (("emb.csv", "would share that name"), ("taken.npy", "taken.csv: it is a folder")):
        result = CliRunner().invoke(main, ["export", str(path), "--format", "npy", "--out", str(tmp_path / out)])
        assert result.exit_code in (1, 2) and said in result.output and "Traceback" not in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "taken.csv"]


def test_a_labelled_list_given_as_split_csv_is_refused_by_export_and_audit(tmp_path):
    """featx demo's test.csv (path,label) read as path,split gave class names as the split column, silently."""
    path, images = image_store(tmp_path, [f"i{i}.png" for i in range(6)])
    listing = tmp_path / "test.csv"
    listing.write_text("path,label\n" + "".join(f"{p},{'ab'[i % 2]}\n" for i, p in enumerate(images[:3])))
    expected = f"Error: {listing} names classes (a, b), not splits: give a CSV of path,split (train, test...)"
    for command in (["export", str(path), "--out", str(tmp_path / "e.parquet")], ["audit", str(path), "--out", str(tmp_path / "audit")]):
        result = CliRunner().invoke(main, [*command, "--split-csv", str(listing)])
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith(expected), result.output
        assert "Traceback" not in result.output


def test_no_output_replaces_a_model_audit_split_csv_or_the_other_output(tmp_path):
    """Each file a command reads besides the store (the model and the audit's findings a map is coloured by, the
    split CSV of an export, the npy's CSV beside it) is refused as its output, as is one file for both --out and
    --report; the library's export_embeddings refuses its own store."""
    import hashlib

    from featx.classify._fitting import fit as train

    path, images = image_store(tmp_path, [f"i{i}.png" for i in range(6)])
    model = train(path, "logreg", cv=2)[0].save(tmp_path / "m.skops")
    (tmp_path / "aud").mkdir()
    (tmp_path / "aud" / "findings.csv").write_text(f"path,finding\n{images[1]},outliers\n")
    (tmp_path / "split.csv").write_text(f"path,split\n{images[1]},test\n")
    inputs = [path, model, tmp_path / "aud" / "findings.csv", tmp_path / "split.csv"]
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs]
    runs = {
        "map over its model": (["map", str(path), "--color", "prediction", "--model", str(model), "--out", str(model)], "it is the input"),
        "map over its audit": (["map", str(path), "--color", "finding", "--audit", str(tmp_path / "aud"),
                                "--out", str(tmp_path / "aud" / "findings.csv")], "it is the input"),
        "parquet over its split": (["export", str(path), "--split-csv", str(tmp_path / "split.csv"),
                                    "--out", str(tmp_path / "split.csv")], "it is the input"),
        "npy's CSV over its split": (["export", str(path), "-f", "npy", "--split-csv", str(tmp_path / "split.csv"),
                                      "--out", str(tmp_path / "split.npy")], "it is the input"),
        "similar's CSV and page in one file": (["similar", images[0], "--store", str(path), "--out", str(tmp_path / "same.html"),
                                                "--report", str(tmp_path / "same.html")], "--out writes it too"),
    }
    for name, (args, said) in runs.items():
        result = CliRunner().invoke(main, args)
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert result.exit_code == 1 and len(errors) == 1 and said in errors[0], (name, result.output)
    with pytest.raises(featx.errors.OutputError, match="it is the input"):
        featx.export_embeddings(path, out=path)
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs] == before
    assert not (tmp_path / "split.npy").exists() and not (tmp_path / "same.html").exists()


def test_an_npy_export_that_fails_keeps_the_previous_matrix_and_csv_together(tmp_path, monkeypatch):
    """The CSV failing (a full disk) after the matrix was written left the new matrix beside the old CSV."""
    import errno

    from featx.exploring._export import Rows

    first = featx.export_embeddings(synthetic_store(tmp_path / "a.h5", 30, 4), "npy", tmp_path / "e.npy")
    before = [p.read_bytes() for p in first]

    def full(self, part=slice(None)):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Rows, "columns", full)
    with pytest.raises(featx.errors.OutputError, match="e.csv: No space left on device"):
        featx.export_embeddings(synthetic_store(tmp_path / "b.h5", 50, 8, seed=1), "npy", tmp_path / "e.npy")
    assert [p.read_bytes() for p in first] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5", "e.csv", "e.npy"]  # no temporary left


def test_a_map_without_plotly_says_how_to_get_it_before_any_projection(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setattr("featx.reports._figures.projection", lambda *a: pytest.fail("projected without plotly"))
    result = CliRunner().invoke(main, ["map", str(store), "--out", str(tmp_path / "map.html")])
    assert result.exit_code == 1 and 'pip install "featx[explore]"' in result.output, result.output


# ---- featx similar ----------------------------------------------------------------------------------------
def cells(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def test_a_jpeg_of_a_stored_cell_finds_its_source_first_and_a_stored_query_is_read(store, elpv_folder, tmp_path, monkeypatch):
    from PIL import Image

    from html_checks import embedded_images, no_external_url, parse_html

    source = cells(elpv_folder)[7]
    Image.open(source).convert("RGB").save(tmp_path / "again.jpg", quality=80)
    (tmp_path / "copy.png").write_bytes(cells(elpv_folder)[3].read_bytes())  # stored content, another name
    out, report = tmp_path / "similar.csv", tmp_path / "similar.html"
    args = ["similar", str(tmp_path / "again.jpg"), str(tmp_path / "copy.png"), "--store", str(store), "-k", "5",
            "--out", str(out), "--report", str(report), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "2 of 2 queries: 1 read from" in result.output and "1 extracted" in result.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"] * 2
    first = rows[0]
    assert Path(first["path"]).resolve() == source.resolve() and first["label"] == source.parent.name
    assert float(first["similarity"]) > 0.95
    assert cells(elpv_folder)[3].resolve() not in {Path(r["path"]).resolve() for r in rows[5:]}  # not its own row
    document = parse_html(report.read_text())
    assert len(embedded_images(document)) == 12 and no_external_url(report.read_text())
    # a query the store holds is read, never extracted again
    monkeypatch.setattr("featx.exploring._similar._extract", lambda *a: pytest.fail("a stored query was re-extracted"))
    again = CliRunner().invoke(main, ["similar", str(tmp_path / "copy.png"), "--store", str(store), "-k", "3"])
    assert again.exit_code == 0 and again.output.count("copy.png") == 3


def test_similars_summary_counts_the_queries_and_lists_the_first_failures():
    from featx.exploring._similar import Similar
    from featx.images._failures import FAILURES_SHOWN

    failures = [(f"bad{i}.png", "not an image") for i in range(FAILURES_SHOWN + 5)]
    lines = Similar(Path("s.h5"), ["a.png", "b.png"], [[], []], 1, failures).summary().splitlines()
    assert lines[0] == f"2 of {FAILURES_SHOWN + 7} queries: 1 read from s.h5, 1 extracted"
    assert lines[1:-1] == [f"  failed: bad{i}.png: not an image" for i in range(FAILURES_SHOWN)]
    assert lines[-1] == "  ... and 5 more"


def test_the_similar_page_names_a_quoted_file_once_escaped(tmp_path):
    """The thumbnail's alt text is the file name, escaped once (it was escaped twice: q&quot;uo&#x27;te.png)."""
    from html_checks import parse_html

    from featx.exploring._similar import Neighbour, Similar

    _, (query, other) = image_store(tmp_path, ['q"uo\'te.png', "b&c.png"])
    page = Similar(tmp_path / "s.h5", [query], [[Neighbour(other, "a", 0.5)]]).write_html(tmp_path / "similar.html")
    assert [img.get("alt") for img in parse_html(page.read_text()).iter("img")] == ['q"uo\'te.png', "b&c.png"]


def test_a_store_too_large_for_the_exact_search_says_how_to_get_faiss(tmp_path, monkeypatch):
    import importlib.util

    from featx.errors import FeatxWarning
    from featx.exploring import _similar
    from featx.features._neighbours import unit_rows

    path = synthetic_store(tmp_path / "s.h5", 300, 8)
    monkeypatch.setattr(_similar, "EXACT_ROWS", 100)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else find_spec(name, *a))
    with FeatureStore.open(path) as opened, pytest.warns(FeatxWarning, match=r'300 stored rows searched exactly.*"featx\[audit\]"'):
        _, found = _similar._search(opened, unit_rows(opened.rows([7])), np.array([-1]), np.ones(300, bool), 3, exact=None)
    assert found[0, 0] == 7 and not _similar.index_path(path).exists()


def test_similar_and_map_leave_out_files_no_longer_on_disk_and_export_keeps_them(tmp_path):
    path, images = image_store(tmp_path, [f"i{i}.png" for i in range(6)])
    for gone in images[4:]:
        os.remove(gone)
    with pytest.warns(StoreWarning, match="2 files no longer on disk"):
        found = featx.similar(images[0], path, k=5)
    assert sorted(n.path for n in found.neighbours[0]) == images[1:4]
    with pytest.warns(StoreWarning, match="2 files no longer on disk"):
        out = featx.embedding_map(path, tmp_path / "map.html")
    assert page_data(out)["paths"] == images[:4] and "2 files no longer on disk left out" in out.read_text()
    with open(featx.export_embeddings(path, "npy", tmp_path / "e.npy")[1], newline="") as handle:
        assert [row["path"] for row in csv.DictReader(handle)] == images


def brute_force(features: np.ndarray, queries: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = queries @ x.T
    sims[np.arange(len(own)), own] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_the_neighbours_are_those_of_a_brute_force_search_exact_or_indexed(tmp_path, monkeypatch):
    from featx.exploring import _similar
    from featx.features._neighbours import unit_rows

    path = synthetic_store(tmp_path / "s.h5", 3000, 16, block=1000)
    monkeypatch.setattr(_similar, "BLOCK_BYTES", 16 * 4 * 700)  # several blocks
    own = np.arange(0, 3000, 97)
    with FeatureStore.open(path) as opened:
        features = opened.rows(np.arange(3000))
        queries, usable = unit_rows(features[own]), np.ones(3000, bool)
        expected = brute_force(features, queries, own, 10)
        _, exact = _similar._search(opened, queries, own, usable, 10, exact=True)
        _, indexed = _similar._search(opened, queries, own, usable, 10, exact=False)
    np.testing.assert_array_equal(exact, expected)
    assert not (indexed == own[:, None]).any()  # a query's own row is left out by the index too
    indexed = [[row for row in rows if row >= 0][:10] for rows in indexed]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(indexed, expected)])
    assert recall >= 0.95 and [rows[0] for rows in indexed] == list(expected[:, 0])


def test_rows_that_are_not_finite_take_no_neighbours_place(tmp_path):
    """NaN rows (a store featx info --check reports): argpartition ranked NaN first, so an exact search for 4
    neighbours with 4 NaN rows found none; the exact search and the audit's neighbours skip them."""
    from featx.exploring import _similar
    from featx.features._neighbours import nearest, unit_rows

    features = np.random.default_rng(0).normal(size=(12, 4))
    features[5:9] = np.nan
    finite = np.flatnonzero(np.isfinite(features).all(axis=1))
    path = synthetic_store(tmp_path / "s.h5", *features.shape, features=features)
    queries = unit_rows(features[[0, 3]])
    expected = brute_force(features[finite], queries, np.array([0, 3]), 4)
    with FeatureStore.open(path) as opened:
        _, found = _similar._search(opened, queries, np.array([0, 3]), np.ones(12, bool), 4, exact=True)
    np.testing.assert_array_equal(found, finite[expected])
    _, index = nearest(features, 4, exact=True)
    np.testing.assert_array_equal(index[[0, 3]], finite[expected])


def test_the_index_is_built_once_and_extended_when_the_store_grows(tmp_path):
    from featx.exploring._similar import cached_index, index_path

    path = synthetic_store(tmp_path / "s.h5", 500, 8)
    with FeatureStore.open(path) as opened:
        assert cached_index(opened).ntotal == 500
    built = index_path(path).stat().st_mtime_ns
    with FeatureStore.open(path) as opened:
        cached_index(opened)
    assert index_path(path).stat().st_mtime_ns == built
    with FeatureStore.create_or_open(path, synthetic_space()) as opened:
        opened.commit(keys=["x" * KEY_LENGTH], features=np.ones((1, 8), np.float32), files=[("new.png", 500, 0)])
    with FeatureStore.open(path) as opened:
        index = cached_index(opened)
        assert index.ntotal == 501 and index.search(np.ones((1, 8), np.float32) / np.sqrt(8), 1)[1][0, 0] == 500


def test_an_index_of_another_store_or_no_index_at_all_is_built_again(tmp_path):
    """STORE.hnsw is a cache: one left by an earlier store of the same name and size, or a file that is no index,
    is built again from the store searched (the neighbours are those of a brute-force search of it)."""
    from featx.exploring import _similar
    from featx.features._neighbours import unit_rows

    path = synthetic_store(tmp_path / "s.h5", 400, 8)
    with FeatureStore.open(path) as opened:
        _similar.cached_index(opened)
    path.unlink()
    synthetic_store(path, 400, 8, seed=1)  # the same name, width and rows: other features
    with FeatureStore.open(path) as opened:
        features = opened.rows(np.arange(400))
        own = np.arange(0, 400, 41)
        _, found = _similar._search(opened, unit_rows(features[own]), own, np.ones(400, bool), 5, exact=False)
    assert [rows[rows >= 0][0] for rows in found] == list(brute_force(features, unit_rows(features[own]), own, 1)[:, 0])
    _similar.index_path(path).write_bytes(b"garbage")
    with FeatureStore.open(path) as opened, pytest.warns(StoreWarning, match="is not a faiss index: built again"):
        assert _similar.cached_index(opened).ntotal == 400
    with FeatureStore.open(path) as opened, warnings.catch_warnings():
        warnings.simplefilter("error")  # written back: read the next time, without a word
        assert _similar.cached_index(opened).ntotal == 400


def test_an_index_that_cannot_be_written_is_still_searched(tmp_path, monkeypatch):
    """A store in a read-only folder: the index built (minutes for 100,000 rows) answers the search anyway."""
    import errno

    import faiss

    from featx.exploring import _similar

    path = synthetic_store(tmp_path / "s.h5", 300, 8)

    def read_only(index, name):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(faiss, "write_index", read_only)
    with FeatureStore.open(path) as opened, pytest.warns(
            StoreWarning, match=r"cannot write .*s.h5.hnsw: Read-only file system: the index is built again"):
        query = opened.rows([7])
        _, found = _similar._search(opened, query, np.array([-1]), np.ones(300, bool), 3, exact=False)
    assert found[0, 0] == 7 and not _similar.index_path(path).exists()


def test_similar_says_in_one_line_what_is_wrong_with_its_input(store, tmp_path, private_cache):
    empty = tmp_path / "empty.h5"
    FeatureStore.create_or_open(empty, synthetic_space()).close()
    (tmp_path / "notes.jpg").write_text("not an image")
    cell = next(iter(featx.load_features(store).paths))
    runs = {
        "empty store": ["similar", cell, "--store", str(empty)],
        "not an image": ["similar", str(tmp_path / "notes.jpg"), "--store", str(store), "-q"],
        "no such query": ["similar", str(tmp_path / "missing.png"), "--store", str(store)],
    }
    results = {name: CliRunner().invoke(main, args) for name, args in runs.items()}
    with FeatureStore.open(store) as opened:  # the queries' extraction store holding another feature space
        apply = private_cache / "apply" / opened.space.store_path(opened.dtype).name
    apply.unlink(missing_ok=True)
    FeatureStore.create_or_open(apply, synthetic_space()).close()
    results["another feature space"] = CliRunner().invoke(main, runs["not an image"])
    expected = {"empty store": (1, f"{empty} holds no features"),
                "not an image": (1, "none of the 1 queries could be used"),
                "no such query": (2, "missing.png"),
                "another feature space": (1, "feature space")}
    for name, (code, text) in expected.items():
        result = results[name]
        assert (result.exit_code, text in result.output) == (code, True), (name, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert "Traceback" not in result.output and len(errors) == 1 and text in errors[0], (name, result.output)


# ---- featx map --------------------------------------------------------------------------------------------
def page_data(page: Path) -> dict:
    """The data the map's script holds (D), read back from the page."""
    import json
    import re

    return json.loads(re.search(r"const D = (\{.*?\}), gd =", page.read_text()).group(1))


def test_the_map_page_holds_every_file_and_is_coloured_by_a_models_predictions(store, tmp_path):
    from featx.classify._fitting import fit as train

    out = tmp_path / "map.html"
    result = CliRunner().invoke(main, ["map", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded = featx.load_features(store)
    data = page_data(out)
    assert data["paths"] == list(loaded.paths) and data["labels"] == list(loaded.classes[loaded.labels])
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in data["thumbs"])
    text = out.read_text()
    assert "<script src" not in text and "<link" not in text  # plotly's script is inlined: no network
    bundle, _ = train(store, "logreg", cv=2)
    model = bundle.save(tmp_path / "m.skops")
    result = CliRunner().invoke(main, ["map", str(store), "--color", "prediction", "--model", str(model), "--out", str(out)])
    assert result.exit_code == 0, result.output
    predicted = list(np.asarray(bundle.classes, dtype=object)[bundle.pipeline.predict(loaded.features)])
    assert page_data(out)["predictions"] == predicted
    assert f'"name":"{predicted[0]} ({predicted.count(predicted[0])})"' in out.read_text()  # a legend entry per prediction


def test_the_map_is_coloured_by_the_audits_findings_from_any_folder(store, tmp_path, monkeypatch):
    """Each file's first finding (label errors, duplicates...) is its colour, with the audit and the map run from
    different folders."""
    from featx.auditing._audit import KINDS

    audited = CliRunner().invoke(main, ["audit", str(store), "--out", str(tmp_path / "audit"), "-j", "1"])
    assert audited.exit_code == 0, audited.output
    with open(tmp_path / "audit" / "findings.csv", newline="") as handle:
        first: dict[str, str] = {}
        for row in csv.DictReader(handle):
            first.setdefault(str(Path(row["path"]).resolve()), row["finding"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(main, ["map", str(store), "--color", "finding", "--audit", str(tmp_path / "audit"),
                                       "--out", "map.html"])
    assert result.exit_code == 0, result.output
    shown = Counter(first.get(str(Path(path).resolve()), "no finding") for path in page_data(elsewhere / "map.html")["paths"])
    assert set(shown) - {"no finding"} and set(shown) <= {*KINDS, "no finding"}
    assert all(f'"name":"{kind} ({n})"' in (elsewhere / "map.html").read_text() for kind, n in shown.items())


def test_names_that_look_like_html_stay_inside_the_maps_script(tmp_path):
    """File and class names holding "<!--<script>" (which would keep the script open past its end tag, HTML5's
    double-escaped state) or "</script>": the page's last script ends where it should and holds them all."""
    import html5lib

    names = ["a.png", "<!--<script>x.png", "b&c.png", "d<script>.png"]
    with FeatureStore.create_or_open(tmp_path / "s.h5", synthetic_space()) as opened:
        opened.commit(classes=["<!--<script>", "</script>"])
        opened.commit(keys=[f"{i:0{KEY_LENGTH}d}" for i in range(4)], features=np.eye(4, dtype=np.float32),
                      files=[(str(tmp_path / name), i, i % 2) for i, name in enumerate(names)])
    out = featx.embedding_map(tmp_path / "s.h5", tmp_path / "map.html")
    document = html5lib.HTMLParser(namespaceHTMLElements=False).parse(out.read_text())
    script = list(document.iter("script"))[-1].text
    assert script.rstrip().endswith("})();") and "</script>" not in script
    assert sorted(page_data(out)["names"]) == sorted(names) and set(page_data(out)["labels"]) == {"<!--<script>", "</script>"}


def test_a_map_leaves_out_rows_that_are_not_finite_and_says_so(tmp_path):
    from featx.classify._fitting import fit as train

    rng = np.random.default_rng(0)
    fine = synthetic_store(tmp_path / "fine.h5", 20, 4, features=rng.normal(size=(20, 4)))
    model = train(fine, "logreg", cv=2)[0].save(tmp_path / "m.skops")
    features = rng.normal(size=(20, 4))
    features[[3, 7, 8]] = np.nan
    path = synthetic_store(tmp_path / "s.h5", *features.shape, features=features)
    out = tmp_path / "map.html"
    result = CliRunner().invoke(main, ["map", str(path), "--color", "prediction", "--model", str(model), "--out", str(out)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    said = [line for line in result.output.splitlines() if "NaN" in line]
    assert len(said) == 1 and "3 files" in said[0] and f"featx info --check --repair {path}" in said[0], result.output
    shown = page_data(out)["paths"]
    assert len(shown) == 17 and not {"f000003.png", "f000007.png", "f000008.png"} & {Path(p).name for p in shown}
    assert "3 files whose features hold NaN or infinity left out" in out.read_text()


def test_the_maps_coordinates_are_written_with_four_decimals(tmp_path):
    """Rounded as float64: float32 values rounded to 4 decimals printed as 0.829200029373169 (7.8 MB pages
    for 6.8 at 20,000 points), in the page's data and in plotly's traces alike."""
    import re

    out = featx.embedding_map(synthetic_store(tmp_path / "s.h5", 50, 8), tmp_path / "map.html")
    lists = re.findall(r'"[xy]": ?\[([^\]]*)\]', out.read_text())
    numbers = [number for found in lists for number in found.split(",") if number.strip()]
    assert len(numbers) >= 4 * 50  # the data's x and y, the traces' x and y
    assert max(len(number.strip().lstrip("-").partition(".")[2]) for number in numbers) <= 4


def test_map_says_in_one_line_what_is_wrong_with_its_input(store, tmp_path):
    out = str(tmp_path / "map.html")
    runs = {
        "unknown colouring": (["map", str(store), "--color", "size", "--out", out], 2, "'size' is not one of"),
        "prediction without a model": (["map", str(store), "--color", "prediction", "--out", out], 2, "--color prediction needs --model"),
        "missing model": (["map", str(store), "--color", "prediction", "--model", str(tmp_path / "no.skops"), "--out", out], 1, "no model file"),
        "missing audit": (["map", str(store), "--color", "finding", "--audit", str(tmp_path / "none"), "--out", out], 1, "no audit folder"),
    }
    try:
        import umap  # noqa: F401
    except ImportError:
        runs["umap not installed"] = (["map", str(store), "--method", "umap", "--out", out], 1, 'pip install "featx[umap]"')
    for name, (args, code, text) in runs.items():
        result = CliRunner().invoke(main, args)
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert result.exit_code == code and len(errors) == 1 and text in errors[0], (name, result.output)
    assert not Path(out).exists()


# ---- in a real browser (headless Chromium) ----------------------------------------------------------------
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
browser = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here: apt-get install chromium")
# Run in the page after it loads: counts the points plotly holds, moves the mouse onto the first point (a real
# mousemove on plotly's drag layer), clicks the first legend entry, and writes what it saw into the DOM.
PROBE = """
(async function () {
  const sleep = ms => new Promise(done => setTimeout(done, ms));
  await sleep(500);
  const gd = document.getElementById("map"), seen = {};
  const shown = () => gd.data.filter(t => t.visible !== "legendonly" && t.name !== "found").reduce((n, t) => n + t.x.length, 0);
  seen.points = shown();
  const layout = gd._fullLayout, drag = gd.querySelector(".nsewdrag"), box = drag.getBoundingClientRect();
  drag.dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: box.left + layout.xaxis.l2p(gd.data[0].x[0]),
                                                  clientY: box.top + layout.yaxis.l2p(gd.data[0].y[0])}));
  await sleep(500);
  const panel = document.getElementById("hover"), img = panel.querySelector("img");
  seen.hover = {shown: !panel.hidden, width: img.naturalWidth, path: panel.querySelector(".path").textContent,
                first: gd.data[0].customdata[0]};
  const toggle = document.querySelector(".legend .traces .legendtoggle"), at = toggle.getBoundingClientRect();
  const click = {bubbles: true, clientX: at.x + 5, clientY: at.y + 5, buttons: 1};
  toggle.dispatchEvent(new MouseEvent("mousedown", click));
  toggle.dispatchEvent(new MouseEvent("mouseup", click));
  document.dispatchEvent(new MouseEvent("mouseup", click));
  await sleep(1500);
  seen.after_legend = shown();
  seen.hidden_class = gd.data[0].name;
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
})();
"""
IMAGES = """document.body.insertAdjacentHTML("beforeend", '<pre id="probe">' + JSON.stringify(
  {images: document.images.length, drawn: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length}) + "</pre>");"""


def in_chromium(page: Path, script: str) -> dict:
    """What `script`, run at the end of a copy of `page` in headless Chromium, wrote into #probe."""
    import json
    import re

    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>"))
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                          "--window-size=1200,900", "--virtual-time-budget=20000", "--dump-dom", probe.absolute().as_uri()],
                         capture_output=True, text=True, timeout=300)
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout)
    assert found, run.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@browser
@pytest.mark.slow
def test_in_a_browser_the_map_shows_a_point_per_file_a_thumbnail_on_hover_and_hides_a_class(store, tmp_path):
    out = tmp_path / "map.html"
    assert CliRunner().invoke(main, ["map", str(store), "--out", str(out)]).exit_code == 0
    loaded, data = featx.load_features(store), page_data(out)
    seen = in_chromium(out, PROBE)
    assert seen["points"] == len(loaded.paths) == 20
    first = seen["hover"]["first"]
    assert seen["hover"]["shown"] and seen["hover"]["width"] > 0 and seen["hover"]["path"] == data["paths"][first]
    hidden = seen["hidden_class"].rsplit(" (", 1)[0]
    assert seen["after_legend"] == 20 - sum(label == hidden for label in data["labels"]) == 15


@browser
@pytest.mark.slow
def test_in_a_browser_the_similar_page_shows_every_thumbnail(store, elpv_folder, tmp_path):
    report = tmp_path / "similar.html"
    queries = [str(p) for p in cells(elpv_folder)[:2]]
    result = CliRunner().invoke(main, ["similar", *queries, "--store", str(store), "-k", "4", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert in_chromium(report, IMAGES) == {"images": 10, "drawn": 10}


def test_the_fit_reports_static_map_points_to_featx_map(tmp_path):
    from featx.reports._report import Report, metrics

    labels = np.array([0, 1, 0, 1])
    report = Report(["a", "b"], metrics(labels, labels, ["a", "b"]), {"store": "cache/cells.h5"})
    assert "featx map cache/cells.h5 --color prediction --model MODEL" in report.html({}, tmp_path)

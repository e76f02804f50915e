"""`featx export`: a store's embeddings in a layout that pandas, polars, DuckDB and LanceDB read directly.

parquet: one row per file (path, label, key, [split,] embedding: a fixed-size list of float32); npy: the float32
matrix plus a CSV of the same name (e.npy: e.csv; path, label, key[, split]) in the same order; the split column
when a CSV of path,split is given. Files in `load_features`'s order (sorted by path). Every file the store holds is
exported, also one no longer on disk (its embedding is still the store's; similar and map leave such files out).
The store is read in blocks of rows and each block written before the next is read, so a store larger than memory
exports in bounded memory (tests/test_explore.py measures 100,000 rows).
"""
from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from featx.errors import BadInputError, FeatxError, FeatxWarning, OutputError, UnknownNameError
from featx.features._store import FeatureStore
from featx.images._inputs import CSV_TEXT, splits_of

FORMATS = ("parquet", "npy")
# Feature bytes read and written at a time: exporting 100,000 x 512 float32 (195 MiB) grew the peak RSS by
# 92 MiB with 16 MiB blocks, by 56 MiB with 1-4 MiB ones (glibc keeps freed large blocks in its heap)
BLOCK_BYTES = 4 << 20


def pyarrow() -> tuple[ModuleType, ModuleType]:
    """pyarrow and pyarrow.parquet, or one line saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise FeatxError('parquet files need pyarrow: pip install "featx[explore]"') from None
    return pa, pq


class Rows:
    """The files of a store with features, in `load_features`'s order: path, label name ("" when none),
    content key and row; `blocks` reads their features a block at a time. `split`: a CSV of path,split for a
    split column (`splits_of`). `present`: only the files still on disk (`FeatureStore.present_files`, which
    warns how many are gone; `gone` counts them)."""

    def __init__(self, store: FeatureStore, split: str | os.PathLike | None = None, present: bool = False) -> None:
        files = sorted((store.present_files() if present else store.files()).items())
        self.gone = len(store.files_on_disk()[1]) if present else 0
        if not files:
            raise BadInputError(f"{store.path} holds no features: featx extract DATA --store {store.path} first")
        classes, keys = store.classes(), store.keys()
        self.store = store
        self.paths = [path for path, _ in files]
        self.rows = np.array([row for _, (row, _) in files], dtype=np.int64)
        self.labels = [classes[label] if label >= 0 else "" for _, (_, label) in files]
        self.keys = [keys[row] for row in self.rows]
        self.splits = None if split is None else splits_of(split, self.paths, store.path, store.classes())

    def columns(self, part: slice = slice(None)) -> dict[str, list[str | None]]:
        """The text columns of the files in `part` by name ("" written as null)."""
        texts = {"path": self.paths, "label": self.labels, "key": self.keys,
                 **({"split": self.splits} if self.splits is not None else {})}
        return {name: [value or None for value in column[part]] for name, column in texts.items()}

    def __len__(self) -> int:
        return len(self.paths)

    def blocks(self, block_bytes: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """(slice of the files, their features as float32) for consecutive blocks of at most block_bytes."""
        step = max(1, (block_bytes or BLOCK_BYTES) // (4 * (self.store.n_features or 1)))
        for start in range(0, len(self), step):
            part = slice(start, start + step)
            yield part, self.store.rows(self.rows[part]).astype(np.float32, copy=False)


def export_paths(store: str | os.PathLike, format: str = "parquet", out: str | os.PathLike | None = None) -> list[Path]:
    """The files `export_embeddings` writes: `out` (default: STORE_STEM.FORMAT in the working folder) and, for
    npy, its CSV of metadata beside it."""
    if format not in FORMATS:
        raise UnknownNameError("export format", format, FORMATS)
    out = Path(out) if out else Path(f"{Path(store).stem}.{format}")
    if format == "parquet":
        return [out]
    if out.with_suffix(".csv") == out:
        raise OutputError(f"cannot write {out}: the matrix and its CSV of metadata would share that name; "
                          "choose an --out ending in .npy")
    return [out, out.with_suffix(".csv")]


def export_embeddings(store: str | os.PathLike, format: str = "parquet", out: str | os.PathLike | None = None,
                      block_bytes: int | None = None, split: str | os.PathLike | None = None) -> list[Path]:
    """Write the store's embeddings as `format` ("parquet" or "npy") to `out` (default: STORE_STEM.FORMAT in
    the working folder); returns the files written (npy: the matrix, then its CSV of metadata). `split`: a CSV
    of path,split (as `featx audit --split-csv` reads it) whose names fill a split column ("" for files it omits;
    refused when it names none of the store's files)."""
    from featx.outputs import atomic_path, check_outputs

    out, *meta = export_paths(store, format, out)
    # before the store is opened: neither file may replace the store or the split CSV it reads
    check_outputs({"--out": out, **{"--out (the CSV beside it)": csv_path for csv_path in meta}},
                  reads=[store, *([split] if split is not None else [])])
    with FeatureStore.open(store, warn=True) as opened:
        rows = Rows(opened, split)
        if format == "parquet":
            pa, pq = pyarrow()
            with atomic_path(out) as tmp:
                escaped = _write_parquet(rows, tmp, pa, pq, block_bytes)
            if escaped:
                warnings.warn(FeatxWarning(
                    f"{out}: {len(escaped)} names are not UTF-8, which parquet's strings must be: written with those "
                    f"bytes as \\xNN (e.g. {escaped[0]}); -f npy's CSV keeps them as they are"), stacklevel=2)
            return [out]
        header = {"descr": "<f4", "fortran_order": False, "shape": (len(rows), opened.n_features)}
        # both written aside and moved in only once both are whole: a failure of either keeps the previous pair,
        # never a matrix beside another run's CSV (the CSV is written first and moved last)
        with atomic_path(meta[0]) as csv_tmp:
            with open(csv_tmp, "w", newline="", **CSV_TEXT) as handle:
                columns = rows.columns()
                writer = csv.writer(handle)
                writer.writerow(list(columns))
                writer.writerows(zip(*([value or "" for value in column] for column in columns.values())))
            # written, not memory-mapped: a map's pages count in the RSS
            with atomic_path(out) as npy_tmp, open(npy_tmp, "wb") as handle:
                np.lib.format.write_array_header_2_0(handle, header)
                for _, features in rows.blocks(block_bytes):
                    handle.write(features.astype("<f4", copy=False).tobytes())
        return [out, *meta]


def _write_parquet(rows: Rows, path: Path, pa, pq, block_bytes: int | None) -> list[str]:
    """Write the parquet file; returns the texts that were not UTF-8, as written (see `_utf8`)."""
    width = rows.store.n_features
    texts = list(rows.columns(slice(0)))
    schema = pa.schema([*((name, pa.string()) for name in texts), ("embedding", pa.list_(pa.float32(), width))])
    escaped: list[str] = []
    # dictionaries for the texts only: trying one on the embeddings cost memory and time for nothing
    with pq.ParquetWriter(path, schema, use_dictionary=texts) as writer:
        for part, features in rows.blocks(block_bytes):  # one row group per block
            embedding = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), width)
            columns = [[_utf8(value, escaped) for value in column] for column in rows.columns(part).values()]
            writer.write_table(pa.table([*columns, embedding], schema=schema))
    return escaped


def _utf8(text: str | None, escaped: list[str]) -> str | None:
    """`text`, or, where it holds bytes that are not UTF-8 (a file or folder name as the OS gave it, held as
    surrogate escapes, which pyarrow refuses), those bytes written as \\xNN, and appended to `escaped`.
    Chosen over refusing the export or a binary column: a pandas user gets a str for every row, readable, whose
    bytes `codecs.escape_decode` gives back (for a name with no backslash of its own)."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        escaped.append(text.encode(**CSV_TEXT).decode("utf-8", "backslashreplace"))
        return escaped[-1]

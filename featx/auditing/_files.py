"""The audited files of a store (`read_files`: paths, labels, unique rows, their features, pHashes and
statistics; `row_labels`: each row's one label) and the Table each finding is written as."""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.errors import BadInputError
from featx.features._store import FeatureStore, nonfinite_note


@dataclass
class Table:
    """One finding as a CSV: a header and rows (ranked or grouped as the finding needs)."""

    header: list[str]
    rows: list[list] = field(default_factory=list)

    def write(self, path: Path) -> None:
        from featx.images._inputs import CSV_TEXT
        from featx.outputs import atomic_write

        with atomic_write(path, "w", newline="", **CSV_TEXT) as f:
            writer = csv.writer(f)
            writer.writerow(self.header)
            writer.writerows([f"{v:.4f}" if isinstance(v, float) else v for v in row] for row in self.rows)


@dataclass
class Files:
    """The audited files (sorted by path) and the unique store rows they point at."""

    paths: list[str]
    labels: list[str]  # class name, "" when unlabelled
    row_of_file: np.ndarray  # index into `rows`
    rows: np.ndarray  # store rows
    keys: list[str]  # content key of each row
    features: np.ndarray  # one per row
    measured: np.ndarray | None = None  # rows with a pHash and statistics (featx.images._quality); None: none has
    phash: np.ndarray | None = None  # uint64 per row (0 where not measured)
    stats: np.ndarray | None = None  # rows x STATS (NaN where not measured)

    def __post_init__(self) -> None:
        self.by_row: list[list[int]] = [[] for _ in self.rows]  # files of each row
        for i, r in enumerate(self.row_of_file.tolist()):
            self.by_row[r].append(i)


def read_files(store: FeatureStore, data: str | os.PathLike | Sequence[str | os.PathLike] | None) -> tuple[Files, list[str]]:
    """Files of the store (only those found in `data` when given), with their rows' keys and features."""
    from featx.images._inputs import display_path, find_images

    entries, notes = dict(sorted(store.present_files().items())), []
    if data is not None:
        wanted = {display_path(p) for p in find_images(data).paths}
        missing = len(wanted - entries.keys())
        entries = {p: e for p, e in entries.items() if p in wanted}
        if missing:
            notes.append(f"{missing} files of the data are not in the store (run featx extract on them first)")
    entries, nonfinite = store.without_nonfinite(entries)
    if nonfinite:
        notes.append(f"{nonfinite_note(store.path, nonfinite)}; left out")
    if not entries:
        raise BadInputError(f"{store.path} holds no features of the files to audit")
    store_rows = np.array([row for row, _ in entries.values()], dtype=np.int64)
    rows, row_of_file = np.unique(store_rows, return_inverse=True)
    classes, keys = store.classes(), store.keys()
    labels = [classes[label] if label >= 0 else "" for _, label in entries.values()]
    features = store.rows(rows).astype(np.float32, copy=False)
    files = Files(list(entries), labels, row_of_file, rows, [keys[r] for r in rows], features)
    _read_quality(store, files, notes)
    return files, notes


def _read_quality(store: FeatureStore, files: Files, notes: list[str]) -> None:
    """The rows' pHashes and statistics, measured at extraction; a note when some or all have none."""
    index, hashes, stats = store.quality()
    found = np.array([index.get(key, -1) for key in files.keys], dtype=np.int64)
    measured = found >= 0
    if measured.any():
        files.measured = measured
        files.phash = np.where(measured, hashes[found], 0).astype(np.uint64)
        files.stats = np.where(measured[:, None], stats[found], np.nan)
    if not measured.all():
        which = "this store has" if not measured.any() else f"{int((~measured).sum())} of {len(measured)} images have"
        notes.append(f"{which} no image hashes or statistics (extracted before featx measured them): copies from "
                     f"embeddings only, no image findings for them; featx extract DATA --store {store.path} --rehash adds them")


def row_labels(files: Files) -> list[str | None]:
    """The label of each row: its files' one label, "" when none has one, None when they disagree."""
    labels = []
    for r in range(len(files.rows)):
        names = {files.labels[i] for i in files.by_row[r]} - {""}
        labels.append(names.pop() if len(names) == 1 else ("" if not names else None))
    return labels


"""The HDF5 feature store: one row per unique image content, in one feature space, append-only.

Layout (every dataset is appended; the root attributes hold how many entries of each are committed):
    features  rows x D     float32 or float16, chunked, uncompressed (see _append_features)
    keys      rows         content key of each row (hash of the file bytes)
    files/    path, row, label   one entry per input file; the newest entry of a path wins
    classes   class names  (labels index into them)
    failed/   path, key, reason  files that could not be decoded

Crash safety (h5py has no transactions): data are written past the committed counts, then the counts are
updated, then the file is flushed. A killed writer leaves at most uncommitted tail entries, which readers
ignore and the next writer trims. The default (earliest) file format is used: `libver='latest'`/SWMR files
cannot be reopened for appending after a crash without `h5clear`.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from .content import KEY_LENGTH
from .errors import FeatureSpaceMismatchError, FeatxError, StoreInUseError
from .space import FeatureSpace

FORMAT = "featx-store/1"
_STR = h5py.string_dtype()
_TABLES = {  # dataset -> (dtype, commit counter)
    "keys": (f"S{KEY_LENGTH}", "rows"),
    "files/path": (_STR, "files"),
    "files/row": (np.int64, "files"),
    "files/label": (np.int64, "files"),
    "classes": (_STR, "classes"),
    "failed/path": (_STR, "failed"),
    "failed/key": (f"S{KEY_LENGTH}", "failed"),
    "failed/reason": (_STR, "failed"),
}
COUNTERS = ("rows", "files", "classes", "failed")
CHUNK_BYTES = 1 << 18


class FeatureSet(NamedTuple):
    """Features of the files in a store, one entry per file; labels index into classes (-1: none)."""

    features: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    classes: np.ndarray


class _StoreLock:
    """`<store>.lock`: writers hold it exclusively (with their PID inside), readers share it.

    fcntl.flock rather than a library: the kernel drops it when the process dies (kill -9 included), so
    there is never a stale lock, and the PID inside lets the error name the writer. HDF5's own file lock
    would only say "unable to lock file, errno 11".
    """

    def __init__(self, store: Path) -> None:
        self.path = store.with_name(store.name + ".lock")
        self.store = store
        self.fd: int | None = None

    def acquire(self, exclusive: bool) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            message = self._busy_message(fd)
            os.close(fd)
            raise StoreInUseError(message) from None
        if exclusive:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def _busy_message(self, fd: int) -> str:
        probe = os.open(self.path, os.O_RDONLY)
        try:  # a shared lock still granted means only readers hold it
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return f"feature store {self.store} is being read by another process; try again when it ends"
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            return f"feature store {self.store} is in use by process {pid} (being written)"
        finally:
            os.close(probe)  # closing drops the probe's shared lock

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (deleting it would race)
            self.fd = None


def _encode(texts) -> list[bytes]:
    """File and folder names are bytes on POSIX and need not be UTF-8 (Python holds the odd bytes as
    surrogates): they are stored as their bytes, so that any name round-trips."""
    return [os.fsencode(t) for t in texts]


def _decode(values) -> list[str]:
    return [os.fsdecode(v) if isinstance(v, bytes) else str(v) for v in values]


class FeatureStore:
    """An open store. Use `FeatureStore.open(path)` to read and `FeatureStore.create_or_open(...)` to write."""

    def __init__(self, path: Path, h5: h5py.File, lock: _StoreLock) -> None:
        self.path, self.h5, self._lock = path, h5, lock

    # ---- opening ----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> FeatureStore:
        """Open for reading (committed entries only)."""
        path = Path(path)
        if not path.is_file():
            raise FeatxError(f"no feature store at {path}")
        return cls._open(path, "r", _StoreLock(path), exclusive=False)

    @classmethod
    def _open(cls, path: Path, mode: str, lock: _StoreLock, exclusive: bool) -> FeatureStore:
        """Lock, open the HDF5 file and check it is a store; release everything on failure."""
        lock.acquire(exclusive)
        h5 = None
        try:
            h5 = h5py.File(path, mode)
            store = cls(path, h5, lock)
            store._check_format()
            return store
        except BaseException as exc:
            if h5 is not None:
                h5.close()
            lock.release()
            if isinstance(exc, OSError):
                raise FeatxError(f"{path} is not a readable HDF5 feature store: {exc}") from exc
            raise

    @classmethod
    def create_or_open(cls, path: str | os.PathLike, space: FeatureSpace, dtype: str = "float32") -> FeatureStore:
        """Open for appending, creating the file if needed; refuse another feature space or dtype."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _StoreLock(path)
        if not path.exists():
            lock.acquire(exclusive=True)
            try:
                cls._create(path, space, dtype)
            finally:
                lock.release()
        store = cls._open(path, "a", lock, exclusive=True)
        try:
            store._check_space(space, dtype)
            store._trim_uncommitted()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        if self.h5.id.valid:
            self.h5.close()
        self._lock.release()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _create(path: Path, space: FeatureSpace, dtype: str) -> None:
        """Write an empty store beside `path`, then rename it into place: a kill never leaves half a store."""
        import torch
        import torchvision

        from . import __version__

        partial = path.with_name(path.name + ".partial")
        with h5py.File(partial, "w") as h5:
            attrs = h5.attrs
            attrs["format"] = FORMAT
            attrs["feature_space"] = space.to_json()
            attrs["dtype"] = dtype
            attrs["versions"] = json.dumps(
                {"featx": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__, "h5py": h5py.__version__}
            )
            for name, (dt, _) in _TABLES.items():
                h5.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,))
            for counter in COUNTERS:
                attrs[counter] = 0
        os.replace(partial, path)

    def _check_format(self) -> None:
        if self.h5.attrs.get("format") != FORMAT:
            raise FeatxError(f"{self.path} is not a featx feature store (format {self.h5.attrs.get('format')!r})")

    def _check_space(self, space: FeatureSpace, dtype: str) -> None:
        self.space.check_same(
            space, "store has", "run asks",
            f"{self.path} holds another feature space; feature spaces are never mixed: use another --store",
        )
        if self.dtype != dtype:
            raise FeatureSpaceMismatchError(f"{self.path} stores {self.dtype} features, this run asks {dtype}")

    def _trim_uncommitted(self) -> None:
        """Drop entries a killed writer wrote past the committed counts."""
        for name, (_, counter) in _TABLES.items():
            if self.h5[name].shape[0] != self.count(counter):
                self.h5[name].resize((self.count(counter),))
        if "features" in self.h5 and self.h5["features"].shape[0] != self.count("rows"):
            self.h5["features"].resize(self.count("rows"), axis=0)
        self.h5.flush()

    # ---- reading ----------------------------------------------------------------------------------------
    @property
    def space(self) -> FeatureSpace:
        return FeatureSpace.from_json(self.h5.attrs["feature_space"])

    @property
    def dtype(self) -> str:
        return str(self.h5.attrs["dtype"])

    @property
    def versions(self) -> dict:
        return json.loads(self.h5.attrs["versions"])

    def count(self, counter: str) -> int:
        return int(self.h5.attrs[counter])

    def _column(self, name: str) -> np.ndarray:
        return self.h5[name][: self.count(_TABLES[name][1])]

    @property
    def n_features(self) -> int | None:
        return self.h5["features"].shape[1] if "features" in self.h5 else None

    def keys(self) -> list[str]:
        return _decode(self._column("keys"))

    def classes(self) -> list[str]:
        return _decode(self._column("classes"))

    def _stored_path(self, path: str) -> str:
        """Paths are stored relative to the store's folder: the same file has one name whatever the cwd."""
        return os.path.relpath(os.path.abspath(path), self.path.parent.absolute())

    def _user_path(self, stored: str) -> str:
        from .inputs import display_path

        return display_path(os.path.join(self.path.parent, stored))

    def newest_entries(self) -> dict[str, tuple[int, int]]:
        """path -> (row, label) of the newest entry of each path; row -1: the file failed last time."""
        paths = [self._user_path(p) for p in _decode(self._column("files/path"))]
        return dict(zip(paths, zip(self._column("files/row").tolist(), self._column("files/label").tolist())))

    def files(self) -> dict[str, tuple[int, int]]:
        """path -> (row, label) of every file whose features are in the store (the newest entry wins)."""
        return {path: entry for path, entry in self.newest_entries().items() if entry[0] >= 0}

    def failures(self) -> dict[str, tuple[str, str]]:
        """path -> (key, reason) of files that failed and have no features since (newest entry wins)."""
        paths = [self._user_path(p) for p in _decode(self._column("failed/path"))]
        failed = dict(zip(paths, zip(_decode(self._column("failed/key")), _decode(self._column("failed/reason")))))
        newest = self.newest_entries()
        return {path: entry for path, entry in failed.items() if newest.get(path, (-1,))[0] < 0}

    def rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Feature rows in the given order (any order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, self.n_features or 0), dtype=self.dtype)
        unique, inverse = np.unique(rows, return_inverse=True)
        if unique[-1] >= self.count("rows"):
            raise FeatxError(f"{self.path}: row {unique[-1]} is not committed")
        return self.h5["features"][unique][inverse]

    def features_for(self, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(features of the given files in their order, mask of the files found); missing rows are zero."""
        from .inputs import display_path

        files = self.files()
        rows = [files.get(display_path(p), (-1, -1))[0] for p in paths]
        found = np.array([r >= 0 for r in rows], dtype=bool)
        features = np.zeros((len(paths), self.n_features or 0), dtype=self.dtype)
        if found.any():
            features[found] = self.rows([r for r in rows if r >= 0])
        return features, found

    def load(self) -> FeatureSet:
        files = dict(sorted(self.files().items()))
        rows = np.fromiter((row for row, _ in files.values()), dtype=np.int64, count=len(files))
        n = self.count("rows")
        features = self.h5["features"][:n][rows] if n else np.zeros((0, self.n_features or 0), self.dtype)
        labels = np.fromiter((label for _, label in files.values()), dtype=np.int64, count=len(files))
        return FeatureSet(features, labels, np.array(list(files), dtype=object), np.array(self.classes(), dtype=object))

    # ---- writing (committed as a unit: data, then counts, then flush) ------------------------------------
    def _append(self, name: str, values, counter_values: dict[str, int]) -> None:
        start = counter_values[_TABLES[name][1]]
        dataset = self.h5[name]
        dataset.resize((start + len(values),))
        dataset[start:] = values

    def commit(
        self,
        keys: Sequence[str] = (),
        features: np.ndarray | None = None,
        files: Sequence[tuple[str, int, int]] = (),
        failed: Sequence[tuple[str, str, str]] = (),
        classes: Sequence[str] = (),
    ) -> None:
        """Append rows (keys + features), file entries (path, row, label), failures (path, key, reason)
        and class names, then commit them all at once."""
        counts = {c: self.count(c) for c in COUNTERS}
        if len(keys):
            features = np.asarray(features, dtype=self.dtype)
            self._append_features(features, counts["rows"])
            self._append("keys", np.array(keys, dtype=f"S{KEY_LENGTH}"), counts)
        if files:
            self._append("files/path", _encode(self._stored_path(f[0]) for f in files), counts)
            self._append("files/row", [f[1] for f in files], counts)
            self._append("files/label", [f[2] for f in files], counts)
        if failed:
            self._append("failed/path", _encode(self._stored_path(f[0]) for f in failed), counts)
            self._append("failed/key", np.array([f[1] for f in failed], dtype=f"S{KEY_LENGTH}"), counts)
            self._append("failed/reason", _encode(f[2] for f in failed), counts)
        if classes:
            self._append("classes", _encode(classes), counts)
        self.h5.flush()  # the data reach the file before the counts that make them visible
        for counter, added in (("rows", len(keys)), ("files", len(files)), ("failed", len(failed)), ("classes", len(classes))):
            if added:
                self.h5.attrs[counter] = counts[counter] + added
        self.h5.flush()

    def _append_features(self, features: np.ndarray, start: int) -> None:
        if "features" not in self.h5:
            dim = features.shape[1]
            chunk_rows = max(1, CHUNK_BYTES // (dim * features.itemsize))
            self.h5.create_dataset(
                "features", shape=(0, dim), maxshape=(None, dim), dtype=self.dtype,
                # No compression: appending rewrites the last, partly filled chunk, and a compressed chunk
                # changes size (moved or rewritten in place), so a kill mid-write could corrupt committed
                # rows. An uncompressed chunk keeps its address and its committed bytes are rewritten as is.
                chunks=(chunk_rows, dim),
            )
        dataset = self.h5["features"]
        if features.shape[1] != dataset.shape[1]:
            raise FeatureSpaceMismatchError(f"{self.path} holds {dataset.shape[1]}-d features, got {features.shape[1]}-d")
        dataset.resize(start + len(features), axis=0)
        dataset[start:] = features


def load_features(store: str | os.PathLike) -> FeatureSet:
    """(features, labels, paths, classes) of every file in a store, sorted by path, as numpy arrays."""
    with FeatureStore.open(store) as opened:
        return opened.load()

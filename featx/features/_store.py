"""The HDF5 feature store: one row per unique image content, in one feature space, append-only.

Layout (every dataset is appended; the root attributes hold how many entries of each are committed):
    features  rows x D     float32 or float16, chunked, uncompressed (see _append_features)
    keys      rows         content key of each row (hash of the file bytes)
    files/    path, row, label   one entry per input file; the newest entry of a path wins (row -1: the
                                 file failed; -2: it vanished from disk, its row stays as a cache)
    classes   class names  (labels index into them)
    failed/   path, key, reason  files that could not be decoded
    stat/     path, key, size, mtime_ns, inode, ctime_ns   the stat index: a file whose stat is unchanged
              since its entry holds the content `key` and is not read again (the newest entry of a path wins)
    quality/  key, phash, brightness, contrast, blur, entropy, width, height   of a content, measured on the
              decoded image at extraction (featx.images._quality; the audit's copies and image findings);
              stores made before have none until `featx extract --rehash` fills them in
Text columns (paths, reasons, class names) are stored as `<column>.bytes` (uint8, the texts concatenated) and
`<column>.ends` (int64, where each text ends), not as HDF5 variable-length strings: those live in HDF5's
global heap, whose collections are rewritten in place as strings are added, and a writer killed mid-commit
left heap references that the next writer could not overwrite ("bad heap index"). Byte arrays are plain
chunked data, crash-safe like the features. Stores of format "featx-store/1" are read as they are and
upgraded when first opened for writing (docs/compatibility.md).

Crash safety (h5py has no transactions): data are written past the committed counts, then the counts are
updated, then the file is flushed. A killed writer leaves at most uncommitted tail entries, which readers
ignore and the next writer trims. A stat entry is committed with or after the row (or failure) of its
content, and its counter is updated last, so it never names a content the store does not hold; readers
check that anyway (`Run` hashes a file whose entry names an unknown content). The default (earliest) file
format is used: `libver='latest'`/SWMR files cannot be reopened for appending after a crash without `h5clear`.

A full disk (or any failed write): HDF5 cannot take back a failed write. A flush that fails with ENOSPC leaves
the file unreadable ("addr overflow") and h5py's close then crashes (measured on a 1 MB tmpfs), so a commit
first checks the disk's free space against its bytes plus a new chunk of every table (`_check_room`) and
stops with `StoreWriteError` before writing anything. Should a write fail anyway (another process took the
space), `<store>.reserve`, space set aside while the writer runs, is given back and the file flushed again:
its counts are those of the last whole commit (they are set only after the data were flushed), the tail
written past them is trimmed by the next writer, and the error is one line saying how many rows are kept.

Concurrency: see featx.features._locks.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from featx.errors import (
    DamagedStoreError,
    FeatureSpaceMismatchError,
    FeatxError,
    MissingPathError,
    StoreWarning,
    StoreWriteError,
)
from featx.features._locks import FileLock, WriterLock, describe
from featx.features._space import FeatureSpace
from featx.images._content import KEY_LENGTH, FileStat
from featx.images._quality import STATS
from featx.names import DTYPES

FORMAT = "featx-store/2"
FORMAT_0_1_0 = "featx-store/1"  # text columns as variable-length strings (read, upgraded on write)
_TEXT = "text"  # a text column: <name>.bytes + <name>.ends (see the module docstring)
_TABLES = {  # dataset -> (dtype, commit counter)
    "keys": (f"S{KEY_LENGTH}", "rows"),
    "files/path": (_TEXT, "files"),
    "files/row": (np.int64, "files"),
    "files/label": (np.int64, "files"),
    "classes": (_TEXT, "classes"),
    "failed/path": (_TEXT, "failed"),
    "failed/key": (f"S{KEY_LENGTH}", "failed"),
    "failed/reason": (_TEXT, "failed"),
    "stat/path": (_TEXT, "stat"),
    "stat/key": (f"S{KEY_LENGTH}", "stat"),
    "stat/size": (np.int64, "stat"),
    "stat/mtime_ns": (np.int64, "stat"),
    "stat/inode": (np.uint64, "stat"),
    "stat/ctime_ns": (np.int64, "stat"),
    "quality/key": (f"S{KEY_LENGTH}", "quality"),
    "quality/phash": (np.uint64, "quality"),
    **{f"quality/{name}": (np.float32, "quality") for name in STATS},
}
COUNTERS = ("rows", "files", "classes", "failed", "quality", "stat")  # committed in this order: the stat index last
CHUNK_BYTES = 1 << 18
_CHUNK = 4096  # entries per chunk of the other tables
_TEXT_PARTS = ((".bytes", np.uint8, 1 << 16), (".ends", np.int64, _CHUNK))  # a text column's datasets, chunk sizes
METADATA_BYTES = 1 << 16  # room for HDF5's own records in a commit (B-tree nodes, headers, the counts)
FAILED, VANISHED = -1, -2  # the row of a file entry whose file failed, or is no longer on disk


class FeatureSet(NamedTuple):
    """Features of the files in a store, one entry per file; labels index into classes (-1: none)."""

    features: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class StoreSummary:
    """What `featx info` shows of a store (`FeatureStore.summary()`); `gone` and `vanished` map a path to its
    class (None: unlabeled)."""

    rows: int
    features: int
    dtype: str
    files: int
    classes: dict[str, int]  # class name -> files of that class, in the store's class order
    unlabeled: int
    failures: dict[str, str]  # path -> reason
    gone: dict[str, str | None]  # no longer on disk since the last extraction (a stat each)
    vanished: dict[str, str | None]  # found gone by an extraction
    writer_pid: int | None
    space: dict
    versions: dict


class _Reserve:
    """`<store>.reserve`: disk space set aside while a writer runs, given back when a write fails so that
    HDF5 can still flush the file to a readable state (see the module docstring); removed when it ends."""

    def __init__(self, store: Path, size: int) -> None:
        self.path = store.with_name(store.name + ".reserve")
        try:
            self.path.unlink(missing_ok=True)  # one a killed writer left; never one planted as a link to a victim
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError:
            pass  # no room even for this: the first commit's free-space check stops the run

    def release(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


def _encode(texts) -> list[bytes]:
    """File and folder names are bytes on POSIX and need not be UTF-8 (Python holds the odd bytes as
    surrogates): they are stored as their bytes, so that any name round-trips."""
    return [os.fsencode(t) for t in texts]


def _decode(values) -> list[str]:
    return [os.fsdecode(v) if isinstance(v, bytes) else str(v) for v in values]


class FeatureStore:
    """An open store. Use `FeatureStore.open(path)` to read and `FeatureStore.create_or_open(...)` to write."""

    def __init__(self, path: Path, h5: h5py.File, file_lock: FileLock, writer: WriterLock | None) -> None:
        self.path, self.h5 = path, h5
        self._resolved: dict[str, dict[str, str]] = {}  # cwd -> stored path -> user path
        self._file_lock, self._writer = file_lock, writer
        self._reserve: _Reserve | None = None
        self._damaged = False  # a write failed and the file could not be flushed even with the reserve
        # a reader sees the rows committed when it opened while another process writes: the root attributes
        # (counts included) as they were then, and the features' width
        self.writer_pid = None if writer else WriterLock.active_writer(path)
        self._attrs = h5.attrs if writer else dict(h5.attrs)
        self._width = h5["features"].shape[1] if writer is None and "features" in h5 else None
        self._on_disk: tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]] | None = None

    # ---- opening ----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, *, wait: bool = False, warn: bool = False, damaged: bool = False) -> FeatureStore:
        """Open for reading: the entries committed now, a consistent snapshot even while another process
        writes. Creates no file. `wait`: first wait until no process writes it (a StoreWarning says for
        whom); `warn`: a StoreWarning names the process writing it, if any (its committed rows are read).
        A damaged store is refused unless `damaged` (`check`, `salvage`, which keep the file open throughout)."""
        path = _store_file(path)
        writer = WriterLock.active_writer(path)
        if wait and writer:
            warnings.warn(StoreWarning(f"waiting for {describe(writer)} to finish writing {path}"), stacklevel=2)
            WriterLock.wait_until_written(path)
        file_lock = FileLock(path)
        file_lock.lock(exclusive=False)
        store = cls._open(path, "r", file_lock, None, damaged)  # on failure, closes the lock's file: no lock left
        if not damaged:
            store.h5.close()  # reopened for each read (`_file`)
            file_lock.unlock()
        if warn and store.writer_pid:
            warnings.warn(StoreWarning(
                f"{describe(store.writer_pid)} is writing {path}: using the {store.count('rows')} rows it "
                "committed so far (--wait to wait for it)"), stacklevel=2)
        return store

    @classmethod
    def _open(
        cls, path: Path, mode: str, file_lock: FileLock, writer: WriterLock | None, damaged: bool = False
    ) -> FeatureStore:
        """Open the HDF5 file (its locks are featx's own: HDF5's would refuse readers during a write) and
        check it is a store; release everything on failure."""
        h5 = None
        try:
            # a writer keeps no chunk cache: a chunk is written when its data are, so a failed write raises there;
            # cached chunks were written when h5py dropped a dataset object, and an error then was only printed
            # ("Exception ignored"), leaving rows of zeros behind counts that went on (measured on a full tmpfs)
            h5 = h5py.File(path, mode, locking=False, **({} if mode == "r" else {"rdcc_nbytes": 0}))
            store = cls(path, h5, file_lock, writer)
            store._check_format()
            problems = [] if damaged else store._damage()
            if problems:
                raise DamagedStoreError(
                    f"{path} is a damaged feature store: {problems[0]}; featx info --check {path} says what can be "
                    "recovered"
                )
            return store
        except BaseException as exc:
            if h5 is not None:
                h5.close()
            file_lock.close()
            if writer is not None:
                writer.release()
            if isinstance(exc, OSError):
                cut = "; a file cut short (a copy or download stopped): nothing in it can be read, extract again into " \
                      "a new store" if "truncated file" in str(exc) else ""
                raise FeatxError(f"{path} is not a readable HDF5 feature store: {exc}{cut}") from exc
            raise

    @classmethod
    def create_or_open(cls, path: str | os.PathLike, space: FeatureSpace, dtype: str = "float32") -> FeatureStore:
        """Open for appending, creating the file if needed; refuse another feature space or dtype, and a
        second writer."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = WriterLock(path)
        writer.acquire()
        try:
            if path.exists():
                _check_hdf5(path, "give another path, or remove it")  # HDF5 would write its header into any file
            else:
                cls._create(path, space, dtype)
            file_lock = FileLock(path)
        except BaseException:
            writer.release()
            raise
        file_lock.lock(exclusive=True)
        store = cls._open(path, "a", file_lock, writer)
        store._reserve = _Reserve(path, _tables_chunk_bytes() + METADATA_BYTES)
        try:
            store._check_space(space, dtype)
            store._trim_uncommitted()
            _upgrade(store.h5)
        except BaseException:
            store.close()
            raise
        file_lock.unlock()
        return store

    @property
    def weights_file(self) -> Path | None:
        """The file the latest run read this store's weights from (`--weights FILE`), as an absolute path:
        how a model fitted on these features finds them again (`ModelBundle.extractor`)."""
        recorded = self._attrs.get("weights_file")
        return Path(recorded) if recorded is not None else None

    def record_weights_file(self, path: Path) -> None:
        """Remember the weights file of this run (see `weights_file`)."""
        path = path.absolute()
        if self.weights_file != path:
            self._file_lock.lock(exclusive=True)
            try:
                self.h5.attrs["weights_file"] = str(path)
                self.h5.flush()
            finally:
                self._file_lock.unlock()

    def close(self) -> None:
        if self._writer is not None:
            self._file_lock.lock(exclusive=True)  # HDF5 may write as it closes
        try:
            if self.h5.id.valid:
                self.h5.close()
        except (OSError, RuntimeError):
            if not self._damaged:  # after a failed write, the error already said what is kept
                raise
        finally:
            self._file_lock.close()
            if self._reserve is not None:
                self._reserve.release()
            if self._writer is not None:
                self._writer.release()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _create(path: Path, space: FeatureSpace, dtype: str) -> None:
        """Write an empty store beside `path`, then rename it into place: a kill never leaves half a store."""
        import torch
        import torchvision

        from featx import __version__

        from featx.outputs import new_file_beside

        partial = None
        try:
            # a new file of its own: a fixed name (s.h5.partial), planted as a link in a shared or cloned
            # folder, had HDF5 write the store into the file it named
            partial = new_file_beside(path, ".partial")
            with h5py.File(partial, "w") as h5:
                attrs = h5.attrs
                attrs["format"] = FORMAT
                attrs["feature_space"] = space.to_json()
                attrs["dtype"] = dtype
                attrs["versions"] = json.dumps(
                    {"featx": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__, "h5py": h5py.__version__}
                )
                _create_tables(h5)
        except (OSError, RuntimeError) as exc:
            if partial is not None:
                partial.unlink(missing_ok=True)
            raise StoreWriteError(f"cannot create the feature store {path}: {_write_problem(exc)}", path, 0) from None
        os.replace(partial, path)

    def _check_format(self) -> None:
        if self.h5.attrs.get("format") not in (FORMAT, FORMAT_0_1_0):
            raise FeatxError(f"{self.path} is not a featx feature store (format {self.h5.attrs.get('format')!r})")
        if outside := self.h5.visit_links(self._outside):  # the first one found
            raise FeatxError(f"{self.path} is not a feature store featx wrote: {outside}, which reads data from "
                             "outside the file")

    def _outside(self, name: str) -> str | None:
        """What featx never writes and HDF5 would follow, said: a link (soft or to another file) or a dataset
        whose data live elsewhere (external raw storage, a virtual dataset). A crafted store could otherwise read
        any file the user can read (/etc/passwd as class names) into reports and models sent back."""
        link = self.h5.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            return f"{name!r} is a {type(link).__name__}"
        item = self.h5[name]
        if isinstance(item, h5py.Dataset) and (item.external or item.is_virtual):
            return f"{name!r} is {'external storage' if item.external else 'a virtual dataset'}"
        return None

    def _damage(self) -> list[str]:
        """What makes this store unreadable as featx wrote it: missing or unreadable metadata, counts past
        their tables. Cheap (attributes and shapes): checked on every open."""
        attrs, problems = self.h5.attrs, []
        for name, read in (("feature_space", FeatureSpace.from_json), ("versions", json.loads), ("dtype", DTYPES.index)):
            if name not in attrs:
                problems.append(f"its {name} attribute is missing")
                continue
            try:
                read(attrs[name])
            except Exception as exc:  # bad JSON, an unknown dtype
                problems.append(f"its {name} attribute cannot be read ({type(exc).__name__}: {exc})")
        for counter in COUNTERS:
            value = attrs.get(counter, 0)
            if not isinstance(value, (int, np.integer)) or value < 0:
                problems.append(f"its count of {counter} is {value!r}")
        if problems:
            return problems
        try:
            lengths = {name: self._table_length(name) for name in _TABLES}
            lengths["features"] = self._stored("features")
        except (OSError, RuntimeError) as exc:  # HDF5's own structures overwritten ("wrong B-tree signature")
            return [f"its tables cannot be read ({type(exc).__name__}: {exc})"]
        for name, length in lengths.items():
            count = self.count(_TABLES[name][1] if name in _TABLES else "rows")
            if length < count:
                problems.append(f"{count} {name} entries are committed, its table holds {length}")
        return problems

    def _stored(self, name: str) -> int:
        """Entries the dataset `name` holds, committed or not (0 when it is missing)."""
        return self.h5[name].shape[0] if name in self.h5 else 0

    def _table_length(self, name: str) -> int:
        """Entries a table holds, committed or not (a text column: those whose bytes are all there)."""
        dtype, counter = _TABLES[name]
        if dtype is not _TEXT or not self._text_layout:
            return self._stored(name)
        ends, size = self.h5[name + ".ends"], self.h5[name + ".bytes"].shape[0]
        count = min(self.count(counter), ends.shape[0])
        return count if not count or int(ends[count - 1]) <= size else 0

    def _check_space(self, space: FeatureSpace, dtype: str) -> None:
        self.space.check_same(
            space, "store has", "run asks",
            f"{self.path} holds another feature space; feature spaces are never mixed: use another --store",
        )
        if self.dtype != dtype:
            raise FeatureSpaceMismatchError(f"{self.path} stores {self.dtype} features, this run asks {dtype}")

    def _trim_uncommitted(self) -> None:
        """Drop entries a killed writer wrote past the committed counts."""
        for name, (dtype, counter) in _TABLES.items():
            count = self.count(counter)
            if dtype is _TEXT and self._text_layout:
                ends = self.h5[name + ".ends"]
                _shrink(ends, count)
                _shrink(self.h5[name + ".bytes"], int(ends[count - 1]) if count else 0)
            elif name in self.h5:  # a featx-store/1 store lacks the stat index until upgraded
                _shrink(self.h5[name], count)
        if "features" in self.h5 and self.h5["features"].shape[0] != self.count("rows"):
            self.h5["features"].resize(self.count("rows"), axis=0)
        self.h5.flush()

    # ---- reading ----------------------------------------------------------------------------------------
    @contextmanager
    def _file(self) -> Iterator[h5py.File]:
        """The HDF5 file for one read. A writer keeps its own open; a reader opens it for each read, under
        the shared lock, and closes it after: a commit then waits for one read, not for a whole fit or
        audit, and each read sees the file as a commit left it (HDF5 caches metadata, such as the chunk
        index, that another process's commit rewrites). Reopening took 6 ms on a loaded 2-core machine."""
        if self._writer is not None:
            yield self.h5
            return
        with self._file_lock.held(), h5py.File(self.path, "r", locking=False) as h5:
            yield h5

    @property
    def space(self) -> FeatureSpace:
        return FeatureSpace.from_json(self._attrs["feature_space"])

    @property
    def dtype(self) -> str:
        return str(self._attrs["dtype"])

    @property
    def versions(self) -> dict:
        return json.loads(self._attrs["versions"])

    def count(self, counter: str) -> int:
        return int(self._attrs.get(counter, 0))  # a store opened read-only may predate a table

    @property
    def _text_layout(self) -> bool:
        """Text columns as byte arrays (this format), not featx-store/1's variable-length strings."""
        return self._attrs["format"] == FORMAT

    def _column(self, name: str) -> np.ndarray | list[bytes]:
        """The committed entries of a table: an array, or a list of bytes for a text column."""
        dtype, counter = _TABLES[name]
        count = self.count(counter)
        if not count:
            return [] if dtype is _TEXT else np.zeros(0, dtype)
        with self._file() as h5:
            if dtype is _TEXT:
                return _read_texts(h5, name, count) if self._text_layout else list(h5[name][:count])
            return h5[name][:count]

    @property
    def n_features(self) -> int | None:
        if self._writer is None:
            return self._width
        return self.h5["features"].shape[1] if "features" in self.h5 else None

    @property
    def chunk_rows(self) -> int | None:
        """Feature rows per HDF5 chunk (reads of whole chunks are the cheapest); None: not chunked."""
        with self._file() as h5:
            chunks = h5["features"].chunks
        return chunks[0] if chunks else None

    def row_ranges(self, starts: Sequence[int], length: int) -> np.ndarray:
        """The committed rows [start, start + length) of each start, one after the other, in one read."""
        n = self.count("rows")
        with self._file() as h5:
            return np.concatenate([h5["features"][a : min(a + length, n)] for a in starts])

    def keys(self) -> list[str]:
        return _decode(self._column("keys"))

    def classes(self) -> list[str]:
        return _decode(self._column("classes"))

    def _stored_path(self, path: str) -> str:
        """Paths are stored relative to the store's folder: the same file has one name whatever the cwd."""
        return os.path.relpath(os.path.abspath(path), self.path.parent.absolute())

    def _user_path(self, stored: str) -> str:
        from featx.images._inputs import display_path

        return display_path(os.path.join(self.path.parent, stored))

    def _user_paths(self, column: str) -> list[str]:
        """The user paths of a path column. The files, failures and stat tables name the same paths, so each
        is resolved once per working directory (most of a rerun's time is spent here)."""
        cache = self._resolved.setdefault(os.getcwd(), {})
        stored = _decode(self._column(column))
        return [cache[p] if p in cache else cache.setdefault(p, self._user_path(p)) for p in stored]

    def newest_entries(self) -> dict[str, tuple[int, int]]:
        """path -> (row, label) of the newest entry of each path; row FAILED or VANISHED: no features now."""
        paths = self._user_paths("files/path")
        return dict(zip(paths, zip(self._column("files/row").tolist(), self._column("files/label").tolist())))

    def files(self) -> dict[str, tuple[int, int]]:
        """path -> (row, label) of every file whose features are in the store (the newest entry wins)."""
        return {path: entry for path, entry in self.newest_entries().items() if entry[0] >= 0}

    def failures(self) -> dict[str, tuple[str, str]]:
        """path -> (key, reason) of files that failed and have no features since (newest entry wins)."""
        paths = self._user_paths("failed/path")
        failed = dict(zip(paths, zip(_decode(self._column("failed/key")), _decode(self._column("failed/reason")))))
        newest = self.newest_entries()
        return {path: entry for path, entry in failed.items() if newest.get(path, (FAILED,))[0] == FAILED}

    def vanished(self) -> dict[str, int]:
        """path -> label of files that were extracted or failed before and are no longer on disk."""
        return {path: label for path, (row, label) in self.newest_entries().items() if row == VANISHED}

    def stat_index(self) -> dict[str, tuple[FileStat, str]]:
        """path -> (stat, content key) of the newest stat entry of each path."""
        paths = self._user_paths("stat/path")
        columns = [self._column(f"stat/{field}").tolist() for field in FileStat._fields]
        return dict(zip(paths, zip(map(FileStat._make, zip(*columns)), _decode(self._column("stat/key")))))

    def quality(self) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
        """(content key -> index, uint64 pHashes, rows x STATS float32) of the contents measured at extraction
        (the newest entry of a key wins); empty for a store made before these columns."""
        keys = [k.decode() for k in self._column("quality/key")]
        stats = np.column_stack([self._column(f"quality/{name}") for name in STATS]) if keys else np.zeros((0, len(STATS)), np.float32)
        return {key: i for i, key in enumerate(keys)}, self._column("quality/phash"), stats

    def rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Feature rows in the given order (any order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, self.n_features or 0), dtype=self.dtype)
        unique, inverse = np.unique(rows, return_inverse=True)
        if unique[-1] >= self.count("rows"):
            raise FeatxError(f"{self.path}: row {unique[-1]} is not committed")
        with self._file() as h5:
            return h5["features"][unique][inverse]

    def features_for(self, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(features of the given files in their order, mask of the files found); missing rows are zero."""
        from featx.images._inputs import display_path

        files = self.files()
        rows = [files.get(display_path(p), (-1, -1))[0] for p in paths]
        found = np.array([r >= 0 for r in rows], dtype=bool)
        features = np.zeros((len(paths), self.n_features or 0), dtype=self.dtype)
        if found.any():
            features[found] = self.rows([r for r in rows if r >= 0])
        return features, found

    def files_on_disk(self) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
        """`files()` split into (those on disk, those no longer on disk), by one stat each (no file is
        opened: 20,000 stats took 0.7 s on a loaded 2-core machine). A store none of whose files is here
        (moved away from its images, or read on another machine) keeps them all, and lists none. Computed
        once per opening."""
        if self._on_disk is None:
            files = self.files()
            gone = {path: entry for path, entry in files.items() if not os.path.exists(path)}  # a stat each
            if len(gone) == len(files):
                gone = {}
            self._on_disk = {p: e for p, e in files.items() if p not in gone}, gone
        return self._on_disk

    def present_files(self) -> dict[str, tuple[int, int]]:
        """`files_on_disk()`'s files; the first call warns (StoreWarning) how many it leaves out."""
        told = self._on_disk is not None
        files, gone = self.files_on_disk()
        if gone and not told:
            warnings.warn(StoreWarning(f"{self.path}: {gone_note(len(gone))}, left out"), stacklevel=2)
        return files

    def load(self, only_present: bool = False) -> FeatureSet:
        files = dict(sorted((self.present_files() if only_present else self.files()).items()))
        rows = np.fromiter((row for row, _ in files.values()), dtype=np.int64, count=len(files))
        n = self.count("rows")
        if n:
            with self._file() as h5:
                features = h5["features"][:n][rows]
        else:
            features = np.zeros((0, self.n_features or 0), self.dtype)
        labels = np.fromiter((label for _, label in files.values()), dtype=np.int64, count=len(files))
        return FeatureSet(features, labels, np.array(list(files), dtype=object), np.array(self.classes(), dtype=object))

    def summary(self) -> StoreSummary:
        """The counts, failures and files gone that `featx info` shows."""
        (files, gone), classes = self.files_on_disk(), self.classes()
        counts = Counter(label for _, label in files.values())

        def named(label: int) -> str | None:
            return classes[label] if label >= 0 else None

        return StoreSummary(
            self.count("rows"), self.n_features or 0, self.dtype, len(files),
            {name: counts.get(i, 0) for i, name in enumerate(classes)}, counts.get(-1, 0),
            {path: reason for path, (_, reason) in self.failures().items()},
            {path: named(label) for path, (_, label) in gone.items()},
            {path: named(label) for path, label in self.vanished().items()},
            self.writer_pid, self.space.as_dict(), self.versions)

    def training_digest(self, settings: dict) -> str:
        """A digest of what a fit would see: every labelled file (path, content, class) and the fit's
        `settings`. `featx demo` reuses a saved model whose digest equals this one instead of fitting again."""
        import hashlib

        from featx import __version__

        keys, classes = self.keys(), self.classes()
        view = sorted((path, keys[row], classes[label]) for path, (row, label) in self.files().items() if label >= 0)
        text = json.dumps({"featx": __version__, "settings": settings, "files": view})
        return hashlib.sha256(text.encode()).hexdigest()

    # ---- checking and salvaging a damaged store ----------------------------------------------------------
    def check(self) -> list[str]:
        """Every problem found: `_damage`, then unreadable texts, file entries past the rows, rows that are all
        zero or not finite (what a full disk could leave before commits checked the free space)."""
        problems = self._damage()
        if problems:
            return problems
        for name, (dtype, _) in _TABLES.items():
            try:
                self._column(name)
            except Exception as exc:  # HDF5 or decoding errors: the table cannot be read back
                problems.append(f"its {name} entries cannot be read ({type(exc).__name__}: {exc})")
        n = self.count("rows")
        if not problems and (self._column("files/row") >= n).any():
            problems.append(f"some file entries name rows past its {n} committed rows")
        bad = self._bad_rows()
        if bad.size:
            problems.append(f"{bad.size} of its {n} rows are all zero, not finite or unreadable (rows {bad[:5].tolist()}...)")
        return problems

    def without_nonfinite(self, files: dict[str, tuple[int, int]]) -> tuple[dict[str, tuple[int, int]], list[str]]:
        """`files` (path -> (row, label)) less those whose rows hold NaN or infinity (left by an earlier version
        on a full disk; scikit-learn refuses them), and the paths left out, sorted. Reads the rows in blocks of
        4096, each one read."""
        n, bad = self.count("rows"), set()
        for start in range(0, n, 4096):
            with self._file() as h5:
                block = h5["features"][start : min(n, start + 4096)]
            bad.update((start + np.flatnonzero(~np.isfinite(block).all(axis=1))).tolist())
        return ({path: entry for path, entry in files.items() if entry[0] not in bad},
                sorted(path for path, (row, _) in files.items() if row in bad))

    def _bad_rows(self, n: int | None = None) -> np.ndarray:
        """Of the first `n` rows (default: the committed ones), those that are all zero, hold NaN or infinity, or
        cannot be read (all of them without a features table), read in 4096-row blocks."""
        bad, n = [], self.count("rows") if n is None else n
        if "features" not in self.h5:
            return np.arange(n)
        for start in range(0, n, 4096):
            try:
                block = self.h5["features"][start : min(n, start + 4096)]
            except (OSError, RuntimeError):
                bad.append(np.arange(start, min(n, start + 4096)))
                continue
            bad.append(start + np.flatnonzero(~np.isfinite(block).all(axis=1) | ~block.any(axis=1)))
        return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)

    def salvage(self, target: Path) -> tuple[int, int]:
        """Copy what can be read into a new store at `target`: the good rows, the file entries of those rows
        and of failed files, class names and failures; the stat index is left out (the next extraction hashes
        the files again). Returns (rows, file entries) copied."""
        if target.exists():
            raise FeatxError(f"{target} already exists: remove it, or move it away, to repair {self.path} into it")
        try:
            space, dtype = self.space, self.dtype
        except Exception:
            raise DamagedStoreError(
                f"{self.path}: its feature space cannot be read, so neither can its rows: extract again into a new store"
            ) from None
        try:
            n = min(self.count("rows"), self._table_length("keys"), self._stored("features"))
            keys = _decode(self.h5["keys"][:n]) if n else []  # n is 0 without a keys or features table
        except (OSError, RuntimeError):
            raise DamagedStoreError(f"{self.path}: its rows' keys cannot be read, so no row can be copied: extract "
                                    "again into a new store") from None
        keep = np.setdiff1d(np.arange(n), self._bad_rows(n))
        new_row = {int(row): i for i, row in enumerate(keep)}
        try:
            classes, failures = self.classes(), self.failures()
            files = [
                (path, new_row[row] if row >= 0 else row, label)
                for path, (row, label) in self.newest_entries().items()
                if row < 0 or row in new_row
            ]
        except Exception:  # the texts are damaged: the rows still spare their computing again
            classes, failures, files = [], {}, []
        with FeatureStore.create_or_open(target, space, dtype) as repaired:
            for start in range(0, len(keep), 4096):
                block = keep[start : start + 4096]
                repaired.commit(keys=[keys[row] for row in block], features=self.h5["features"][block])
            repaired.commit(classes=classes)
            repaired.commit(files=files, failed=[(path, key, reason) for path, (key, reason) in failures.items()])
        return len(keep), len(files)

    # ---- writing (committed as a unit: data, then counts, then flush) ------------------------------------
    def _append(self, name: str, values, counter_values: dict[str, int]) -> None:
        dtype, counter = _TABLES[name]
        start = counter_values[counter]
        if dtype is _TEXT:
            _append_texts(self.h5, name, start, values)
        else:
            _write_from(self.h5[name], start, values)

    def commit(
        self,
        keys: Sequence[str] = (),
        features: np.ndarray | None = None,
        files: Sequence[tuple[str, int, int]] = (),
        failed: Sequence[tuple[str, str, str]] = (),
        classes: Sequence[str] = (),
        stats: Sequence[tuple[str, FileStat, str]] = (),
        quality: Sequence[tuple[str, int, Sequence[float]]] = (),
    ) -> None:
        """Append rows (keys + features), file entries (path, row, label), failures (path, key, reason),
        class names, stat entries (path, stat, key) and measures (key, pHash, STATS values), then commit
        them all at once."""
        self._file_lock.lock(exclusive=True)
        try:
            self._check_room(features, [*files, *failed, *stats, *quality], classes)
            try:
                self._commit(keys, features, files, failed, classes, stats, quality)
            except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError for a failed flush
                raise self._write_failed(exc) from None
        finally:
            self._file_lock.unlock()

    def _check_room(self, features: np.ndarray | None, entries: Sequence[tuple], classes: Sequence[str]) -> None:
        """Refuse a commit the disk cannot hold: its bytes, a new chunk of every table and HDF5's records."""
        texts = [str(entry[0]) + str(entry[-1]) for entry in entries] + list(classes)
        need = (
            (0 if features is None else np.asarray(features).size * np.dtype(self.dtype).itemsize)
            + 2 * sum(map(len, texts)) + 64 * len(texts)  # paths are stored relative to the store: up to 2x
            + _tables_chunk_bytes() + METADATA_BYTES
        )
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise StoreWriteError(
                f"disk full: {self.path} keeps its {self.count('rows')} committed rows ({free / 1e6:.1f} MB free on "
                f"its disk, the next commit needs {need / 1e6:.1f} MB); free space or move the store",
                self.path, self.count("rows"),
            )

    def _write_failed(self, exc: BaseException) -> StoreWriteError:
        """After a failed write: give back the reserve and flush again, so that the file holds the counts
        of the last whole commit (the data past them are trimmed by the next writer)."""
        if self._reserve is not None:
            self._reserve.release()
        try:
            self.h5.flush()
        except (OSError, RuntimeError):
            self._damaged = True
        kept = self.count("rows")
        message = f"{_write_problem(exc)}: {self.path} keeps its {kept} committed rows"
        if self._damaged:
            message += f", but its file may be damaged: featx info --check {self.path}"
        return StoreWriteError(message, self.path, kept)

    def _commit(self, keys, features, files, failed, classes, stats, quality=()) -> None:
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
        if stats:
            self._append("stat/path", _encode(self._stored_path(s[0]) for s in stats), counts)
            self._append("stat/key", np.array([s[2] for s in stats], dtype=f"S{KEY_LENGTH}"), counts)
            for n, field in enumerate(FileStat._fields):
                self._append(f"stat/{field}", [s[1][n] for s in stats], counts)
        if quality:
            self._append("quality/key", np.array([q[0] for q in quality], dtype=f"S{KEY_LENGTH}"), counts)
            self._append("quality/phash", np.array([q[1] for q in quality], dtype=np.uint64), counts)
            for n, name in enumerate(STATS):
                self._append(f"quality/{name}", [q[2][n] for q in quality], counts)
        self.h5.flush()  # the data reach the file before the counts that make them visible
        added = {"rows": len(keys), "files": len(files), "failed": len(failed), "classes": len(classes), "stat": len(stats),
                 "quality": len(quality)}
        for counter in COUNTERS:
            if added[counter]:
                self.h5.attrs[counter] = counts[counter] + added[counter]
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


def _store_file(path: str | os.PathLike) -> Path:
    """`path`, refused (one line) where it names no file, a folder, or a file that is no HDF5 file."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"no feature store at {path}")
    if not path.is_file():
        raise FeatxError(f"{path} is a folder, not a feature store")
    _check_hdf5(path)
    return path


def _check_hdf5(path: Path, remedy: str = "give a store that featx extract wrote") -> None:
    if not h5py.is_hdf5(path):
        from featx.images._decode import ZIP_SIGNATURE

        with open(path, "rb") as f:
            zipped = f.read(len(ZIP_SIGNATURE)) == ZIP_SIGNATURE
        kind = "; a zip archive: a featx model?" if zipped else ""
        raise FeatxError(f"{path} is not a featx feature store (not an HDF5 file{kind}): {remedy}")


def _write_problem(exc: BaseException) -> str:
    """'disk full' for ENOSPC (h5py puts the errno in its message), else the error in one line."""
    from featx.backbones._weights import one_line

    text = one_line(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or f"errno = {errno.ENOSPC}" in text or "No space left" in text:
        return "disk full"
    return f"write failed ({text})"


def _tables_chunk_bytes() -> int:
    """Bytes of one chunk of every table: what a commit may allocate beyond its own data (about 1.2 MB)."""
    total = CHUNK_BYTES  # features (a chunk of at most CHUNK_BYTES, or one row)
    for dtype, _ in _TABLES.values():
        parts = [(part_dtype, chunk) for _, part_dtype, chunk in _TEXT_PARTS] if dtype is _TEXT else [(dtype, _CHUNK)]
        total += sum(chunk * np.dtype(part_dtype).itemsize for part_dtype, chunk in parts)
    return total


def _shrink(dataset: h5py.Dataset, length: int) -> None:
    if dataset.shape[0] != length:
        dataset.resize(length, axis=0)


def _write_from(dataset: h5py.Dataset, start: int, values) -> None:
    """Write values at `start`, past the committed entries, growing the dataset to fit."""
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values


def _read_texts(h5: h5py.File, name: str, count: int) -> list[bytes]:
    ends = h5[name + ".ends"][:count].tolist()
    blob = h5[name + ".bytes"][: ends[-1]].tobytes()
    return [blob[start:end] for start, end in zip([0, *ends[:-1]], ends)]


def _append_texts(h5: h5py.File, name: str, start: int, texts: Sequence[bytes]) -> None:
    """Append texts after the first `start` (committed) ones: their bytes, then where each ends."""
    ends = h5[name + ".ends"]
    offset = int(ends[start - 1]) if start else 0
    _write_from(h5[name + ".bytes"], offset, np.frombuffer(b"".join(texts), dtype=np.uint8))
    _write_from(ends, start, offset + np.cumsum([len(t) for t in texts], dtype=np.int64))


def _create_tables(h5: h5py.File) -> None:
    """Create the tables and counters a store lacks: all of them in a new store; this format's in a featx-store/1 one."""
    for name, (dtype, _) in _TABLES.items():
        if dtype is _TEXT:
            for part, part_dtype, chunk in _TEXT_PARTS:
                if name + part in h5:  # left by an upgrade that was killed before it committed
                    del h5[name + part]
                h5.create_dataset(name + part, shape=(0,), maxshape=(None,), dtype=part_dtype, chunks=(chunk,))
    _add_tables(h5)


def _add_tables(h5: h5py.File) -> None:
    """Create the (empty) tables other than text columns, and counters, that a store lacks."""
    for name, (dtype, _) in _TABLES.items():
        if dtype is not _TEXT and name not in h5:
            h5.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_CHUNK,))
    for counter in COUNTERS:
        if counter not in h5.attrs:
            h5.attrs[counter] = 0


def _upgrade(h5: h5py.File) -> None:
    """Give a "featx-store/1" store this format's tables (byte-array text columns, the stat index). The committed
    texts are copied into byte arrays, and the format attribute, written last, commits the upgrade: a kill
    before it leaves a store that upgrades again next time. The old variable-length datasets stay, unused.
    A store of this format made before the quality columns gains them, empty."""
    if h5.attrs["format"] == FORMAT:
        _add_tables(h5)
        return
    texts = {}
    for name, (dtype, counter) in _TABLES.items():
        count = int(h5.attrs.get(counter, 0))
        if dtype is _TEXT and count:
            texts[name] = list(h5[name][:count])
    _create_tables(h5)
    for name, values in texts.items():
        _append_texts(h5, name, 0, values)
    h5.flush()
    h5.attrs["format"] = FORMAT
    h5.flush()


def nonfinite_note(store: str | os.PathLike, paths: Sequence[str]) -> str:
    """What to say of `paths`, whose features in `store` hold NaN or infinity, and what to do."""
    return (f"the features of {len(paths)} file(s) in {store} hold NaN or infinity ({paths[0]}"
            f"{' ...' if len(paths) > 1 else ''}): featx info --check --repair {store} copies the others into a new "
            "store, where featx extract redoes them")


def gone_note(n: int) -> str:
    return f"{n} files no longer on disk: featx extract DATA to update"


def load_features(store: str | os.PathLike, only_present: bool = False) -> FeatureSet:
    """(features, labels, paths, classes) of every file in a store, sorted by path, as numpy arrays.

    `only_present`: leave out the files no longer on disk (deleted or moved since they were extracted,
    found by a stat each; a StoreWarning counts them), as `featx fit` does. The default keeps every file
    the store's last extraction saw, as earlier versions did."""
    with FeatureStore.open(store) as opened:
        return opened.load(only_present)


def stores_in(folder: str | os.PathLike) -> list[Path]:
    """Feature stores (*.h5) in a folder, newest first."""
    folder = Path(folder)
    return sorted(folder.glob("*.h5"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []


def find_store(store: str | os.PathLike | None, option: str = "--features STORE",
               choose: Callable[[str, list[Path]], Path] | None = None) -> Path:
    """The store given, else the only store in the cache folder; several: `choose(listing, stores)` picks one
    (the CLI asks on a terminal), else an error listing them. `option`: how the caller names a store."""
    from featx.features._space import cache_dir

    if store:
        return _store_file(store)  # before the caller checks its outputs: a model given as a store is named so
    found = stores_in(cache_dir())
    if not found:
        raise FeatxError(f"no feature store in {cache_dir()}/: run featx extract first, or pass {option}")
    if len(found) == 1:
        return found[0]
    listing = f"several feature stores in {cache_dir()}/ (newest first):\n" + "\n".join(
        f"  {i}. {path}" for i, path in enumerate(found, 1)
    )
    if choose is None:
        raise FeatxError(f"{listing}\nchoose one with {option}")
    return choose(listing, found)

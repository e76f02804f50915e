"""`featx.extract`: images -> content keys -> only the unseen contents through the network -> the store."""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from featx.backbones._registry import get_backbone
from featx.errors import ExtractionInterrupted, ParameterError, UnknownNameError

if TYPE_CHECKING:
    from featx.features._loader import FeatureBatch

from featx.backbones._weights import FileWeights
from featx.features._extractor import Extractor, settle_space
from featx.features._space import FeatureSpace
from featx.features._store import FAILED, VANISHED, FeatureStore
from featx.images._content import FileStat, content_keys, stats
from featx.images._inputs import ImageList, find_images
from featx.names import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DTYPES

RACY_NS = 2_000_000_000  # 2 s: the coarsest file timestamp granularity in common use (FAT; 1 s on ext3, HFS+)


@dataclass
class ExtractReport:
    """What one extraction run did; `failures` lists (path, reason) for this run's files that failed."""

    store: Path
    n_files: int
    n_unique: int
    n_cached: int
    n_extracted: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def summary(self) -> str:
        rate = f"{self.n_extracted / self.seconds:.1f} images/s" if self.n_extracted and self.seconds else "n/a"
        lines = [
            f"{_count(self.n_files, 'file')}, {_count(self.n_unique, 'unique image')}: {self.n_extracted} extracted, "
            f"{self.n_cached} already in the store, {_count(self.n_failed, 'file')} failed ({self.seconds:.1f} s, {rate})",
            f"store: {self.store}" if self.store.exists() else "store: none written (nothing to keep)",
        ]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failures[:20]]
        if self.n_failed > 20:
            lines.append(f"  ... and {self.n_failed - 20} more (see: featx info {self.store})")
        return "\n".join(lines)


class _Lines:
    """A stream that turns tqdm's carriage-return redraws into whole lines, for logs and pipes."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, enabled: bool = True) -> tqdm:
    """A progress bar on stderr: redrawn on a terminal, a line every few seconds otherwise (pipes, logs)."""
    if sys.stderr.isatty():
        return tqdm(total=total, unit="img", desc="extract", disable=not enabled, file=sys.stderr)
    return tqdm(total=total, unit="img", desc="extract", disable=not enabled, file=_Lines(sys.stderr), mininterval=5, ascii=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def extract(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    model: str = DEFAULT_MODEL,
    *,
    weights: str | os.PathLike | None = None,
    layer: str | Sequence[str] | None = None,
    pooling: str = "avg",
    image_size: int | None = None,
    tta: str = "none",
    store: str | os.PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    label_pattern: str | None = None,
    progress: bool = True,
    engine: str = "auto",
    ray: str | None = None,
    ray_actors: int | None = None,
    decode: str | None = None,
    rehash: bool = False,
) -> ExtractReport:
    """Extract features of the images in `data` into an HDF5 store and return what was done.

    `data`: folders (one subfolder per class, or flat), image files and CSV files of path,label.
    Only image contents not yet in the store go through the network; unreadable files are recorded
    and skipped. Read the result with `featx.load_features(report.store)`.
    `engine`: 'torch', 'compile' (torch.compile), 'onnx' (ONNX Runtime, CPU) or 'auto' (onnx on a CPU when
    onnxruntime is installed, else torch); the features, and so the store, are the same with any.
    `image_size`: resize the shorter side to this and centre-crop a square of it, instead of the weights'
    own resize and crop (e.g. a data set's native resolution). `tta`: 'none', or 'd4' for features
    averaged over the 8 symmetries of the square (rotations and mirror images; 8x the compute).
    `ray`: extract on a Ray cluster ('auto' or an address, see `featx.features._ray.connect`; docs/distributed.md)
    with `ray_actors` copies of the network; same store, same dedup and resume as a local run.
    `decode`: 'reduced' (the default for a new store) shrinks an image at least 4x larger than the resize
    target by a whole factor first (JPEG: DCT scaling while decoding, never below twice the target; then
    `Image.reduce` with Pillow's reducing gap 3); 'full' decodes every pixel, as featx 0.1.0 did (its
    stores are extended in that mode unless `decode` is given). The two give slightly different features,
    so they are different feature spaces.
    A file whose size, modification time, inode and change time are those recorded in the store's stat
    index is not read again; `rehash` reads and hashes every file regardless.
    """
    get_backbone(model)  # an unknown model is said before the inputs are searched
    images = find_images(data, label_pattern)
    extractor = Extractor.create(model, weights, layer, pooling, image_size, tta, device, engine, decode=decode)
    extractor = settle_space(extractor, decode, Path(store) if store is not None else None, dtype)
    return extract_files(
        images, extractor, store=store, dtype=dtype, batch_size=batch_size, workers=workers, progress=progress,
        ray=ray, ray_actors=ray_actors, rehash=rehash,
    )


def _check_run(dtype: str, batch_size: int) -> None:
    if dtype not in DTYPES:
        raise UnknownNameError("dtype", dtype, DTYPES)
    if batch_size < 1:
        raise ParameterError(f"batch size must be at least 1, not {batch_size}")


def extract_files(
    images: ImageList,
    extractor: Extractor,
    *,
    store: str | os.PathLike | None = None,
    dtype: str = "float32",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    progress: bool = True,
    ray: str | None = None,
    ray_actors: int | None = None,
    rehash: bool = False,
) -> ExtractReport:
    """`extract` for found images and a ready extractor (whose network is reused across calls)."""
    _check_run(dtype, batch_size)
    path = Path(store) if store is not None else extractor.space.store_path(dtype)
    if ray is not None:
        from featx.features._ray import import_ray

        import_ray()  # a missing Ray is said at once, before the inputs are hashed
    if not path.exists():
        extractor.validate(progress)  # a new store is made only for a network that can be built
    preprocessing = extractor.space.preprocessing

    def compute(paths: list[str], keys: list[str]) -> Iterator[FeatureBatch]:
        extractor.weights.fetch(progress)  # download on first use (here, not silently in the network's build)
        if ray is not None:
            from featx.features._ray import ray_batches

            return ray_batches(paths, keys, extractor, batch_size, ray, ray_actors)
        from featx.features._loader import ImageFiles, local_batches

        return local_batches(ImageFiles(paths, keys, preprocessing, measure=True), extractor.runner(), batch_size, workers)

    weights_file = extractor.weights.path if isinstance(extractor.weights, FileWeights) else None
    return _execute(path, extractor.space, dtype, _Run(images, rehash=rehash), compute, progress, weights_file)


def extract_arrays(
    images: Sequence[Image.Image],
    keys: Sequence[str],
    extractor: Extractor,
    *,
    store: str | os.PathLike,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    names: Sequence[str] | None = None,
) -> ExtractReport:
    """In-memory RGB images, keyed by their pixels (`memory.image_key`), through the same run as files:
    only contents not yet in the store are computed. They get no file entries; failures are reported
    under `names` (default "image <i>")."""
    _check_run("float32", batch_size)
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    run = _Run(ImageList(names, np.full(len(names), -1, dtype=np.int64)), items=list(images), keys=list(keys))

    def compute(items: list, _keys: list[str]) -> Iterator[FeatureBatch]:
        from featx.features._loader import ImageArrays, local_batches

        return local_batches(ImageArrays(items, extractor.space.preprocessing), extractor.runner(), batch_size, 0)

    return _execute(Path(store), extractor.space, "float32", run, compute, progress)


def _execute(
    path: Path, space: FeatureSpace, dtype: str, run: _Run, compute, progress: bool, weights_file: Path | None = None
) -> ExtractReport:
    created = not path.exists()
    with FeatureStore.create_or_open(path, space, dtype) as opened:
        try:
            if weights_file is not None:
                opened.record_weights_file(weights_file)
            start = time.perf_counter()
            report = run.execute(opened, compute, progress)
            report.seconds = time.perf_counter() - start
        finally:
            # a run that kept no row (all files failed, the weights did not load, the disk was full) leaves no
            # empty store behind, which would be taken for the store of this folder (still locked: no race)
            if created and not opened.count("rows"):
                os.remove(path)
        return report


class _Run:
    """One pass over images against an open store.

    Files (the default) are keyed by their bytes and get file entries (path, row, label) and failure records.
    In-memory images come as `items` with their `keys`: only their rows are stored.
    """

    def __init__(
        self, images: ImageList, items: list | None = None, keys: list[str] | None = None, rehash: bool = False
    ) -> None:
        self.images, self.rehash = images, rehash
        self.new_stats: dict[str, list[tuple[str, FileStat, str]]] = defaultdict(list)  # key -> stat entries
        self.items = images.paths if items is None else items
        self.given_keys = keys
        self.records_files = items is None
        self.failures: list[tuple[str, str]] = []

    def _open(self, store: FeatureStore) -> None:
        self.store = store
        self.entries = store.newest_entries() if self.records_files else {}
        self.known_failures = store.failures() if self.records_files else {}
        self.labels = self._store_labels() if self.records_files else [-1] * len(self.images)

    def _store_labels(self) -> list[int]:
        """Each file's label as an index into the store's classes (new class names are appended)."""
        known = self.store.classes()
        new = [c for c in self.images.classes if c not in known]
        if new:
            self.store.commit(classes=new)
        index = {name: i for i, name in enumerate(known + new)}
        # a file given without a label (predict, a flat folder) keeps the label the store has for it
        return [
            index[self.images.classes[label]] if label >= 0 else self.entries.get(path, (-1, -1))[1]
            for path, label in zip(self.images.paths, self.images.labels)
        ]

    def _failure(self, index: int, key: str, reason: str, new: list, entries: list) -> None:
        """Report a failed file; record it, and shadow features its path had before, unless already so."""
        path = self.images.paths[index]
        self.failures.append((path, reason))
        if not self.records_files:
            return
        if self.known_failures.get(path) != (key, reason):
            new.append((path, key, reason))
        if self.entries.get(path, (FAILED,))[0] != FAILED:
            entries.append((path, FAILED, self.labels[index]))

    def execute(
        self, store: FeatureStore, compute: Callable[[list, list[str]], Iterable[FeatureBatch]], progress: bool
    ) -> ExtractReport:
        """`compute(items, keys)` yields the features of those items (see `FeatureBatch`); it is called only
        when some content needs extracting, with one item per content. Files are keyed through the stat
        index unless `rehash` (see `_content_keys`)."""
        self._open(store)
        rows = {key: row for row, key in enumerate(self.store.keys())}
        files = self.entries
        bad_contents = {key: reason for key, reason in self.known_failures.values() if key}
        entries, failed, pending = [], [], defaultdict(list)  # pending: key -> indices of its files
        if self.given_keys is None:
            keys = self._content_keys(rows.keys() | bad_contents.keys())
        else:
            keys = [(key, None) for key in self.given_keys]
        for i, (key, error) in enumerate(keys):
            path = self.images.paths[i]
            if key is None:
                self._failure(i, "", error, failed, entries)
            elif key in rows:
                if self.records_files and files.get(path) != (rows[key], self.labels[i]):
                    entries.append((path, rows[key], self.labels[i]))
            elif key in bad_contents:
                self._failure(i, key, bad_contents[key], failed, entries)
            else:
                pending[key].append(i)
        if self.records_files:
            entries += self._vanished()
        known = [key for key in self.new_stats if key in rows or key in bad_contents]
        self.store.commit(files=entries, failed=failed, stats=self._stats_of(known))
        if self.rehash and self.records_files:
            self._measure_unmeasured(keys, rows)
        unique = {key for key, _ in keys if key}
        n_extracted = self._extract(pending, compute, progress) if pending else 0
        return ExtractReport(
            store=self.store.path,
            n_files=len(self.images),
            n_unique=len(unique),
            n_cached=len(unique & rows.keys()),
            n_extracted=n_extracted,
            failures=self.failures,
        )

    def _measure_unmeasured(self, keys: list[tuple[str | None, str | None]], rows: dict[str, int]) -> None:
        """Measure (pHash, statistics) the stored contents of these files that have none (stores made before
        the measures), decoding one file of each, without the network: what `--rehash` adds to old stores."""
        from featx.images._quality import measure_files

        measured = self.store.quality()[0]
        first: dict[str, str] = {}  # unmeasured content -> a file holding it
        for path, (key, _) in zip(self.images.paths, keys):
            if key in rows and key not in measured:
                first.setdefault(key, path)
        found = measure_files(list(first.values()), list(first))
        self.store.commit(quality=[(key, *m) for key, m in zip(first, found) if m is not None])

    def _vanished(self) -> list[tuple[str, int, int]]:
        """Entries for the files the store knows below this run's folders that are no longer on disk: the
        store follows the folder (a deleted or moved file leaves the labelled view; its row stays as a cache)."""
        listed = set(self.images.paths)
        roots = tuple(os.path.join(root, "") for root in self.images.roots)
        known = {**{path: (FAILED, -1) for path in self.known_failures}, **self.entries}
        return [
            (path, VANISHED, label)
            for path, (row, label) in known.items()
            if row != VANISHED and path not in listed and os.path.abspath(path).startswith(roots)
            and not os.path.lexists(path)
        ]

    def _content_keys(self, known: set[str]) -> list[tuple[str | None, str | None]]:
        """Each file's (content key, None) or (None, why it cannot be read).

        From the stat index when the file's stat is the one recorded and its content is in the store (as
        features or as a known failure); otherwise the file is read and hashed, and a new stat entry for it
        is kept in `new_stats`, to be committed with its content. A file changed less than `RACY_NS` before
        it was read gets no entry: a second change within the same timestamp tick could leave its stat as is.
        """
        paths = self.images.paths
        index = self.store.stat_index()
        lookup = {} if self.rehash else index
        current = stats(paths) if lookup else [None] * len(paths)
        keys: list[tuple[str | None, str | None]] = [(None, None)] * len(paths)
        todo = []
        for i, path in enumerate(paths):
            stat, key = lookup.get(path, (None, None))
            if stat is not None and stat == current[i] and key in known:
                keys[i] = (key, None)
            else:
                todo.append(i)
        settled = time.time_ns() - RACY_NS  # taken before the files are read
        for i, hashed in zip(todo, content_keys([paths[i] for i in todo])):
            keys[i] = (hashed.key, hashed.error)
            if hashed.key and max(hashed.stat.mtime_ns, hashed.stat.ctime_ns) < settled:
                if index.get(paths[i]) != (hashed.stat, hashed.key):
                    self.new_stats[hashed.key].append((paths[i], hashed.stat, hashed.key))
        return keys

    def _stats_of(self, keys: Iterable[str]) -> list[tuple[str, FileStat, str]]:
        """The new stat entries of files holding these contents, now in the store (each given once)."""
        return [entry for key in keys for entry in self.new_stats.pop(key, ())]

    def _extract(self, pending: dict, compute, progress: bool) -> int:
        """Compute the features of one file per pending content, committing after every batch.

        Commits run on a writer thread, one batch behind the network (which releases the GIL), so
        writing never stalls compute; commits stay in order and the last is waited for.
        """
        todo = list(pending)
        paths = self.images.paths
        record = self.records_files
        first_row = next_row = self.store.count("rows")
        committing = None
        try:
            with (
                progress_bar(len(todo), progress) as bar,
                ThreadPoolExecutor(1, thread_name_prefix="featx-writer") as writer,
            ):
                for indices, features, bad, measured in compute([self.items[pending[key][0]] for key in todo], todo):
                    keys = [todo[i] for i in indices]
                    quality = [(key, *m) for key, m in zip(keys, measured)] if measured else []
                    entries = [(paths[j], next_row + n, self.labels[j]) for n, key in enumerate(keys) for j in pending[key]] if record else []
                    failed: list = []
                    for i, reason, permanent in bad:
                        # bad bytes fail every copy; a transient failure (unreadable, changed) only the file read
                        for j in pending[todo[i]] if permanent else pending[todo[i]][:1]:
                            self._failure(j, todo[i] if permanent else "", reason, failed, entries)
                    stat_entries = self._stats_of(keys + [todo[i] for i, _, permanent in bad if permanent])
                    if committing is not None:
                        committing.result()
                    committing = writer.submit(self.store.commit, keys, features, entries, failed, stats=stat_entries, quality=quality)
                    next_row += len(keys)
                    bar.update(len(indices) + len(bad))
                if committing is not None:
                    committing.result()
        except KeyboardInterrupt:
            if committing is not None:
                committing.result()  # what was computed is committed before stopping
            raise ExtractionInterrupted(self.store.path, self.store.count("rows") - first_row) from None
        return next_row - first_row

"""`featx.extract`: images -> content keys -> only the unseen contents through the network -> the store."""
from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from featx.errors import ExtractionInterrupted, FeatxError

if TYPE_CHECKING:
    from featx.features._loader import FeatureBatch

from featx.backbones._weights import FileWeights
from featx.features._extractor import Extractor, settle_space
from featx.features._space import FeatureSpace, cache_dir
from featx.features._store import FAILED, VANISHED, FeatureStore
from featx.images._content import FileStat, content_keys, stats
from featx.images._failures import failure_lines
from featx.images._inputs import ImageList, find_images
from featx.names import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, validate_parameters
from featx.outputs import progress_bar

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
        return "\n".join(lines + failure_lines(self.failures, more=f" (see: featx info {self.store})"))


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
    `Image.reduce` with Pillow's reducing gap 3); 'full' decodes every pixel (a store made that way is
    extended in that mode unless `decode` is given, see `settle_space`). The two give slightly different features,
    so they are different feature spaces.
    A file whose size, modification time, inode and change time are those recorded in the store's stat
    index is not read again; `rehash` reads and hashes every file regardless.
    """
    # the registry entry is looked up once, before the inputs are searched (an unknown model is said first)
    extractor = Extractor.create(model, weights, layer, pooling, image_size, tta, device, engine, decode=decode)
    images = find_images(data, label_pattern)
    extractor = settle_space(extractor, decode, Path(store) if store is not None else None, dtype)
    return extract_files(
        images, extractor, store=store, dtype=dtype, batch_size=batch_size, workers=workers, progress=progress,
        ray=ray, ray_actors=ray_actors, rehash=rehash,
    )


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
    validate_parameters(dtype=dtype, batch_size=batch_size, workers=workers, ray_actors=ray_actors)
    path = Path(store) if store is not None else extractor.space.store_path(dtype)
    if ray is not None:
        from featx.features._ray import import_ray

        import_ray()  # a missing Ray is said at once, before the inputs are hashed
    if not path.exists():
        extractor.validate(progress)  # a new store is made only for a network that can be built
    preprocessing = extractor.preprocessing

    def compute(paths: list[str], keys: list[str]) -> Iterator[FeatureBatch]:
        extractor.weights.fetch(progress)  # download on first use (here, not silently in the network's build)
        if ray is not None:
            from featx.features._ray import ray_batches

            return ray_batches(paths, keys, extractor, batch_size, ray, ray_actors)
        from featx.features._loader import ImageFiles, local_batches

        return local_batches(ImageFiles(paths, keys, preprocessing, measure=True), extractor.runner(), batch_size, workers)

    weights_file = extractor.weights.path if isinstance(extractor.weights, FileWeights) else None
    return _execute(path, extractor.space, dtype, FileInputs(images, rehash), compute, progress, weights_file)


def extract_arrays(
    images: Sequence[Image.Image],
    keys: Sequence[str],
    extractor: Extractor,
    *,
    store: str | os.PathLike,
    dtype: str = "float32",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
    names: Sequence[str] | None = None,
) -> ExtractReport:
    """In-memory RGB images, keyed by their pixels (`memory.image_key`), through the same run as files:
    only contents not yet in the store are computed. They get no file entries; failures are reported
    under `names` (default "image <i>")."""
    validate_parameters(batch_size=batch_size)
    inputs = ArrayInputs(images, keys, names if names is not None else [f"image {i}" for i in range(len(images))])

    def compute(items: list, _keys: list[str]) -> Iterator[FeatureBatch]:
        from featx.features._loader import ImageArrays, local_batches

        return local_batches(ImageArrays(items, extractor.preprocessing), extractor.runner(), batch_size, 0)

    return _execute(Path(store), extractor.space, dtype, inputs, compute, progress)


def extract_aside(
    images: ImageList,
    extractor: Extractor,
    dtype: str,
    width: int,
    check: Callable[[FeatureSpace, str], None],
    store: str | os.PathLike | None = None,
    **options: object,
) -> tuple[np.ndarray, np.ndarray, ExtractReport]:
    """Features of `images` that belong to no data set (images predicted, evaluated or searched for), extracted
    into `store`, by default a store of their own under cache/apply/ (never a store they are compared with:
    they must not join the next fit's training data): (features, zero where missing; mask of the images that
    have them; the report). `check(space, dtype)` refuses that store's feature space if it is not the caller's."""
    from featx.outputs import check_output

    if store is None:
        store = check_output(cache_dir() / "apply" / extractor.space.store_path(dtype).name,
                             "working folder (or set FEATX_CACHE)")
    done = extract_files(images, extractor, store=store, dtype=dtype, **options)
    if not done.store.exists():  # every file failed, and no store was kept
        return np.zeros((len(images), width), np.float32), np.zeros(len(images), dtype=bool), done
    with FeatureStore.open(done.store) as opened:
        check(opened.space, opened.dtype)
        features, found = opened.features_for(images.paths)
    return features, found, done


def _execute(
    path: Path, space: FeatureSpace, dtype: str, inputs: Inputs, compute, progress: bool, weights_file: Path | None = None
) -> ExtractReport:
    created = not path.exists()
    with FeatureStore.create_or_open(path, space, dtype) as opened:
        try:
            if weights_file is not None:
                opened.record_weights_file(weights_file)
            start = time.perf_counter()
            try:
                plan = plan_run(inputs, opened)  # hashing every new file: minutes for a large folder
            except KeyboardInterrupt:
                raise ExtractionInterrupted(path, 0) from None
            report = run_plan(plan, opened, compute, progress)
            report.seconds = time.perf_counter() - start
        finally:
            # a run that kept no row (all files failed, the weights did not load, the disk was full) leaves no
            # empty store behind, which would be taken for the store of this folder (still locked: no race)
            if created and not opened.count("rows"):
                os.remove(path)
        return report


Key = tuple[str | None, str | None]  # an input's (content key, None) or (None, why it cannot be read)
FileEntry = tuple[str, int, int]  # (path, row or FAILED/VANISHED, label)
StatEntry = tuple[str, FileStat, str]  # (path, stat, content key)


class FileRecords:
    """What the store records of a run's files: their entries and failures, and each file's label."""

    def __init__(self, images: ImageList, store: FeatureStore) -> None:
        self.paths = images.paths
        self.entries = store.newest_entries()
        self.known_failures = store.failures()
        known = store.classes()
        self.new_classes = [c for c in images.classes if c not in known]
        index = {name: i for i, name in enumerate(known + self.new_classes)}
        # a file given without a label (predict, a flat folder) keeps the label the store has for it
        self.labels = [
            index[images.classes[label]] if label >= 0 else self.entries.get(path, (-1, -1))[1]
            for path, label in zip(images.paths, images.labels)
        ]
        self.roots = tuple(os.path.join(root, "") for root in images.roots)

    def entry(self, i: int, row: int) -> list[FileEntry]:
        """Input i's file entry pointing at `row` (none when the store has it already)."""
        entry = (self.paths[i], row, self.labels[i])
        return [] if self.entries.get(entry[0]) == entry[1:] else [entry]

    def failure(self, i: int, key: str, reason: str) -> tuple[list[tuple[str, str, str]], list[FileEntry]]:
        """(failure record, entry shadowing the features the path had before) of a failed file, unless known."""
        path = self.paths[i]
        failed = [(path, key, reason)] if self.known_failures.get(path) != (key, reason) else []
        shadow = [(path, FAILED, self.labels[i])] if self.entries.get(path, (FAILED,))[0] != FAILED else []
        return failed, shadow

    def vanished(self) -> list[FileEntry]:
        """Entries for the files the store knows below this run's folders that are no longer on disk: the
        store follows the folder (a deleted or moved file leaves the labelled view; its row stays as a cache)."""
        listed = set(self.paths)
        known = {**{path: (FAILED, -1) for path in self.known_failures}, **self.entries}
        return [
            (path, VANISHED, label)
            for path, (row, label) in known.items()
            if row != VANISHED and path not in listed and os.path.abspath(path).startswith(self.roots)
            and not os.path.lexists(path)
        ]


class NoRecords:
    """`FileRecords` of in-memory images: they have no files, so nothing is recorded but their rows."""

    def __init__(self) -> None:
        self.new_classes: list[str] = []
        self.known_failures: dict[str, tuple[str, str]] = {}

    def entry(self, i: int, row: int) -> list[FileEntry]:
        return []

    def failure(self, i: int, key: str, reason: str) -> tuple[list, list]:
        return [], []

    def vanished(self) -> list[FileEntry]:
        return []


class FileInputs:
    """Image files, keyed by their bytes through the store's stat index (`rehash`: every file read again)."""

    def __init__(self, images: ImageList, rehash: bool = False) -> None:
        self.images, self.rehash = images, rehash
        self.names = self.items = images.paths

    def records(self, store: FeatureStore) -> FileRecords:
        return FileRecords(self.images, store)

    def content_keys(self, store: FeatureStore, known: set[str]) -> tuple[list[Key], dict[str, list[StatEntry]]]:
        """Each file's key, and the new stat entries by content key (to be committed with their content).

        From the stat index when the file's stat is the one recorded and its content is in the store (as
        features or as a known failure); otherwise the file is read and hashed, and gets a new stat entry. A
        file changed less than `RACY_NS` before it was read gets none: a second change within the same
        timestamp tick could leave its stat as is.
        """
        paths = self.names
        index = store.stat_index()
        lookup = {} if self.rehash else index
        current = stats(paths) if lookup else [None] * len(paths)
        keys: list[Key] = [(None, None)] * len(paths)
        new_stats: dict[str, list[StatEntry]] = defaultdict(list)
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
                    new_stats[hashed.key].append((paths[i], hashed.stat, hashed.key))
        return keys, new_stats


class ArrayInputs:
    """In-memory RGB images with their keys (their pixels' hash); failures are reported under `names`."""

    def __init__(self, images: Sequence[Image.Image], keys: Sequence[str], names: Sequence[str]) -> None:
        self.items, self.keys, self.names = list(images), list(keys), list(names)

    def records(self, store: FeatureStore) -> NoRecords:
        return NoRecords()

    def content_keys(self, store: FeatureStore, known: set[str]) -> tuple[list[Key], dict[str, list[StatEntry]]]:
        return [(key, None) for key in self.keys], {}


Inputs = FileInputs | ArrayInputs


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, decided from its inputs and the store before anything is written or computed: the
    entries and failures to record now, and the contents to compute (`pending`: key -> its inputs)."""

    inputs: Inputs
    records: FileRecords | NoRecords
    keys: list[Key]
    entries: list[FileEntry]
    failed: list[tuple[str, str, str]]
    failures: list[tuple[str, str]]  # (name, reason) of the inputs that failed
    pending: dict[str, list[int]]
    new_stats: dict[str, list[StatEntry]]
    known_stats: list[StatEntry]  # those of contents the store has: committed with the entries
    n_cached: int

    def stats_of(self, keys: Iterable[str]) -> list[StatEntry]:
        """The new stat entries of files holding these contents."""
        return [entry for key in keys for entry in self.new_stats.get(key, ())]


class _Failures:
    """The failures of a step of a run: reported (name, reason), failure records and shadowing entries."""

    def __init__(self, inputs: Inputs, records: FileRecords | NoRecords) -> None:
        self.inputs, self.records = inputs, records
        self.reported: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str, str]] = []
        self.entries: list[FileEntry] = []

    def add(self, i: int, key: str, reason: str) -> None:
        self.reported.append((self.inputs.names[i], reason))
        failed, shadows = self.records.failure(i, key, reason)
        self.failed += failed
        self.entries += shadows


def plan_run(inputs: Inputs, store: FeatureStore) -> RunPlan:
    """The plan of a run of `inputs` against `store` (reads the store and hashes files; writes nothing)."""
    records = inputs.records(store)
    rows = {key: row for row, key in enumerate(store.keys())}
    bad_contents = {key: reason for key, reason in records.known_failures.values() if key}
    keys, new_stats = inputs.content_keys(store, rows.keys() | bad_contents.keys())
    entries, failures, pending = [], _Failures(inputs, records), defaultdict(list)  # pending: key -> its inputs
    for i, (key, error) in enumerate(keys):
        if key in rows:
            entries += records.entry(i, rows[key])
        elif key is None or key in bad_contents:
            failures.add(i, key or "", error if key is None else bad_contents[key])
        else:
            pending[key].append(i)
    known = [entry for key, group in new_stats.items() if key in rows or key in bad_contents for entry in group]
    return RunPlan(
        inputs, records, keys, entries + failures.entries + records.vanished(), failures.failed, failures.reported,
        dict(pending), new_stats, known, len({key for key, _ in keys if key} & rows.keys()),
    )


def run_plan(
    plan: RunPlan, store: FeatureStore, compute: Callable[[list, list[str]], Iterable[FeatureBatch]], progress: bool
) -> ExtractReport:
    """Record what the plan decided, then compute its pending contents. `compute(items, keys)` yields the
    features of those items (see `FeatureBatch`); it is called only when some content needs extracting,
    with one item per content."""
    if plan.records.new_classes:
        store.commit(classes=plan.records.new_classes)
    store.commit(files=plan.entries, failed=plan.failed, stats=plan.known_stats)
    if isinstance(plan.inputs, FileInputs) and plan.inputs.rehash:
        _measure_unmeasured(plan, store)
    failures = _Failures(plan.inputs, plan.records)
    n_extracted = _compute_and_commit(plan, store, compute, progress, failures) if plan.pending else 0
    return ExtractReport(
        store=store.path,
        n_files=len(plan.keys),
        n_unique=len({key for key, _ in plan.keys if key}),
        n_cached=plan.n_cached,
        n_extracted=n_extracted,
        failures=plan.failures + failures.reported,
    )


def _measure_unmeasured(plan: RunPlan, store: FeatureStore) -> None:
    """Measure (pHash, statistics) the stored contents of the plan's files that have none (stores made before
    the measures), decoding one file of each, without the network: what `--rehash` adds to old stores."""
    from featx.images._quality import measure_files

    measured, rows = store.quality()[0], set(store.keys())
    first: dict[str, str] = {}  # unmeasured content -> a file holding it
    for path, (key, _) in zip(plan.inputs.names, plan.keys):
        if key in rows and key not in measured:
            first.setdefault(key, path)
    found = measure_files(list(first.values()), list(first))
    store.commit(quality=[(key, *m) for key, m in zip(first, found) if m is not None])


def _compute_and_commit(plan: RunPlan, store: FeatureStore, compute, progress: bool, failures: _Failures) -> int:
    """Compute the features of one input per pending content, committing after every batch.

    Commits run on a writer thread, one batch behind the network (which releases the GIL), so
    writing never stalls compute; commits stay in order and the last is waited for.
    """
    todo = list(plan.pending)
    pending, records = plan.pending, plan.records
    first_row = next_row = store.count("rows")
    committing = None
    try:
        with (
            progress_bar(len(todo), progress) as bar,
            ThreadPoolExecutor(1, thread_name_prefix="featx-writer") as writer,
        ):
            for indices, features, bad, measured in compute([plan.inputs.items[pending[key][0]] for key in todo], todo):
                keys = [todo[i] for i in indices]
                quality = [(key, *m) for key, m in zip(keys, measured)] if measured else []
                entries = [e for n, key in enumerate(keys) for j in pending[key] for e in records.entry(j, next_row + n)]
                failures.failed, failures.entries = [], []  # this batch's
                for i, reason, permanent in bad:
                    # bad bytes fail every copy, for good; a transient failure (unreadable, changed, out of memory)
                    # fails this run's copies, recorded under no key: the next run reads them again
                    read, *others = pending[todo[i]]
                    failures.add(read, todo[i] if permanent else "", reason)
                    for j in others:
                        failures.add(j, todo[i] if permanent else "", reason if permanent else
                                     f"not read: its copy {plan.inputs.names[read]} failed ({reason})")
                entries += failures.entries
                failed = failures.failed
                stat_entries = plan.stats_of(keys + [todo[i] for i, _, permanent in bad if permanent])
                if committing is not None:
                    committing.result()
                committing = writer.submit(store.commit, keys, features, entries, failed, stats=stat_entries, quality=quality)
                next_row += len(keys)
                bar.update(len(indices) + len(bad))
            if committing is not None:
                committing.result()
    except KeyboardInterrupt:
        if committing is not None:
            committing.result()  # what was computed is committed before stopping
        raise ExtractionInterrupted(store.path, store.count("rows") - first_row) from None
    except (MemoryError, RuntimeError) as exc:
        from featx.features._loader import out_of_memory, worker_died

        if not (out_of_memory(exc) or worker_died(exc)):
            raise
        if committing is not None:
            committing.result()
        kept = store.count("rows") - first_row
        said = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        problem = (f"a decode worker died ({said}; out of memory?): lower --workers or --batch-size" if worker_died(exc)
                   else f"out of memory computing a batch ({said}): lower --batch-size or --image-size")
        raise FeatxError(f"{problem}; the {kept} images computed are kept in {store.path}") from None
    return next_row - first_row

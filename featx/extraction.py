"""`featx.extract`: images -> content keys -> only the unseen contents through the network -> the store."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .backbones import DEFAULT_MODEL, Backbone, get_backbone
from .content import content_keys
from .device import resolve_device
from .engines import build_runner
from .errors import FeatxError
from .inputs import ImageList, find_images
from .loader import FeatureBatch, local_batches
from .network import parse_layers
from .store import FeatureStore
from .weights import WeightsSource

DTYPES = ("float32", "float16")


def cache_dir() -> Path:
    """Where stores go by default: $FEATX_CACHE, else ./cache."""
    return Path(os.environ.get("FEATX_CACHE", "cache"))


def feature_space(
    backbone: Backbone, weights: WeightsSource, layer, pooling: str, image_size: int | None = None, tta: str = "none"
) -> dict:
    """Everything that determines a feature vector; a store holds exactly one feature space.

    `tta` is recorded only when used, so stores made before it existed keep their feature space.
    """
    return {
        "model": backbone.name,
        "weights": weights.id,
        "preprocessing": backbone.preprocessing().at_size(image_size).as_dict(),
        "layer": parse_layers(layer) or ["default:" + (backbone.feature_node or "forward_features")],
        "pooling": pooling,
        **({"tta": tta} if tta != "none" else {}),
    }


def default_store_path(space: dict, dtype: str = "float32") -> Path:
    """cache/<model>-<hash of the feature space>[-float16].h5: one file per feature space and dtype."""
    digest = hashlib.sha256(json.dumps(space, sort_keys=True).encode()).hexdigest()[:8]
    suffix = "" if dtype == "float32" else f"-{dtype}"
    return cache_dir() / f"{space['model'].replace('/', '_')}-{digest}{suffix}.h5"


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
        rate = self.n_extracted / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.n_files} files, {self.n_unique} unique images: {self.n_extracted} extracted, "
            f"{self.n_cached} already in the store, {self.n_failed} files failed "
            f"({self.seconds:.1f} s, {rate:.1f} images/s)",
            f"store: {self.store}",
        ]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failures[:20]]
        if self.n_failed > 20:
            lines.append(f"  ... and {self.n_failed - 20} more (see: featx info {self.store})")
        return "\n".join(lines)


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
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    label_pattern: str | None = None,
    progress: bool = True,
    engine: str = "auto",
    ray: str | None = None,
    ray_actors: int | None = None,
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
    `ray`: extract on a Ray cluster ('auto' or an address, see `featx.distributed.connect`; docs/distributed.md)
    with `ray_actors` copies of the network; same store, same dedup and resume as a local run.
    """
    if dtype not in DTYPES:
        raise FeatxError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    if batch_size < 1:
        raise FeatxError("batch size must be at least 1")
    backbone = get_backbone(model)
    images = find_images(data, label_pattern)
    source = backbone.weights(weights)
    space = feature_space(backbone, source, layer, pooling, image_size, tta)
    preprocessing = backbone.preprocessing().at_size(image_size)
    path = Path(store) if store is not None else default_store_path(space, dtype)
    if ray is not None:
        from .distributed import import_ray

        import_ray()  # a missing Ray is said at once, before the inputs are hashed
    target = resolve_device("cpu" if ray is not None else device)  # on Ray, each actor resolves `device`

    def make_runner(on=target):
        return build_runner(backbone, source, layer, pooling, space, on, engine)

    # A new store is created only once the network builds (layer names, weights checked); an existing
    # store of this feature space was checked when made, so its network is built only if there is work.
    runner = None if path.exists() else make_runner()

    def compute(paths: list[str], keys: list[str]) -> Iterator[FeatureBatch]:
        if ray is not None:
            from .distributed import ray_batches

            return ray_batches(paths, keys, make_runner, device, preprocessing, batch_size, ray, ray_actors)
        return local_batches(paths, keys, runner or make_runner(), preprocessing, batch_size, workers)

    with FeatureStore.create_or_open(path, space, dtype) as opened:
        start = time.perf_counter()
        report = _Run(opened, images).execute(compute, progress)
        report.seconds = time.perf_counter() - start
        return report


class _Run:
    """One pass over an image list against an open store."""

    def __init__(self, store: FeatureStore, images: ImageList) -> None:
        self.store, self.images = store, images
        self.entries = store.newest_entries()
        self.labels = self._store_labels()
        self.failures: list[tuple[str, str]] = []
        self.known_failures = store.failures()

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
        if self.known_failures.get(path) != (key, reason):
            new.append((path, key, reason))
        if self.entries.get(path, (-1,))[0] >= 0:
            entries.append((path, -1, self.labels[index]))

    def execute(self, compute: Callable[[list[str], list[str]], Iterable[FeatureBatch]], progress: bool) -> ExtractReport:
        """`compute(paths, keys)` yields the features of those files (see `FeatureBatch`); it is called only
        when some content needs extracting, with one file per content."""
        rows = {key: row for row, key in enumerate(self.store.keys())}
        files = self.entries
        bad_contents = {key: reason for key, reason in self.known_failures.values() if key}
        entries, failed, pending = [], [], defaultdict(list)  # pending: key -> indices of its files
        keys = content_keys(self.images.paths)
        for i, (key, error) in enumerate(keys):
            path = self.images.paths[i]
            if key is None:
                self._failure(i, "", error, failed, entries)
            elif key in rows:
                if files.get(path) != (rows[key], self.labels[i]):
                    entries.append((path, rows[key], self.labels[i]))
            elif key in bad_contents:
                self._failure(i, key, bad_contents[key], failed, entries)
            else:
                pending[key].append(i)
        self.store.commit(files=entries, failed=failed)
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

    def _extract(self, pending: dict, compute, progress: bool) -> int:
        """Compute the features of one file per pending content, committing after every batch.

        Commits run on a writer thread, one batch behind the network (which releases the GIL), so
        writing never stalls compute; commits stay in order and the last is waited for.
        """
        todo = list(pending)
        paths = self.images.paths
        quiet = not progress or not sys.stderr.isatty()
        first_row = next_row = self.store.count("rows")
        committing = None
        with (
            tqdm(total=len(todo), unit="img", desc="extract", disable=quiet, file=sys.stderr) as bar,
            ThreadPoolExecutor(1, thread_name_prefix="featx-writer") as writer,
        ):
            for indices, features, bad in compute([paths[pending[key][0]] for key in todo], todo):
                keys = [todo[i] for i in indices]
                entries = [(paths[j], next_row + n, self.labels[j]) for n, key in enumerate(keys) for j in pending[key]]
                failed: list = []
                for i, reason, permanent in bad:
                    # bad bytes fail every copy; a transient failure (unreadable, changed) only the file read
                    for j in pending[todo[i]] if permanent else pending[todo[i]][:1]:
                        self._failure(j, todo[i] if permanent else "", reason, failed, entries)
                if committing is not None:
                    committing.result()
                committing = writer.submit(self.store.commit, keys, features, entries, failed)
                next_row += len(keys)
                bar.update(len(indices) + len(bad))
            if committing is not None:
                committing.result()
        return next_row - first_row

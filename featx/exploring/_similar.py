"""`featx similar`: the stored images nearest to query images by cosine similarity in the store's space.

Queries whose content the store holds are read from it (found by content key, never re-extracted); the others
are extracted with the store's own feature space (backbone, weights, preprocessing) into cache/apply/, as
predict does. Up to `EXACT_ROWS` stored rows the search is exact (matrix products over blocks of the store);
beyond, faiss's HNSW index of featx/features/_neighbours.py, built once and kept beside the store as
STORE.hnsw: the store is append-only, so when it has grown only its new rows are added to the index. Without
faiss the search stays exact, in blocks. A query's own row (its content, under any file name) is left out, as
are stored files no longer on disk (a StoreWarning counts them).
"""
from __future__ import annotations

import csv
import importlib.util
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from featx.errors import BadInputError, FeatxWarning, OutputError, StoreWarning
from featx.exploring._export import Rows
from featx.features._neighbours import EXACT_ROWS, HNSW_EF, hnsw_index, top, unit_rows
from featx.features._store import FeatureStore
from featx.images._failures import failure_line, failure_lines

if TYPE_CHECKING:
    import faiss

    from featx.features._space import FeatureSpace

K = 10
BLOCK_BYTES = 64 << 20  # stored features read at a time by the exact search and the index's additions


@dataclass
class Neighbour:
    """A stored file near a query: its path, label ("" when none) and cosine similarity."""

    path: str
    label: str
    similarity: float


@dataclass
class Similar:
    """Each query (a path) with its k nearest stored files, most similar first; queries that failed."""

    store: Path
    queries: list[str]
    neighbours: list[list[Neighbour]]
    n_extracted: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def write_csv(self, out: TextIO) -> None:
        writer = csv.writer(out)
        writer.writerow(["query", "rank", "path", "label", "similarity"])
        for query, found in zip(self.queries, self.neighbours):
            writer.writerows((query, rank, n.path, n.label, f"{n.similarity:.6f}") for rank, n in enumerate(found, 1))

    def write_html(self, path: str | os.PathLike) -> Path:
        """One page: each query's thumbnail first, then its neighbours' with label and similarity."""
        from featx.outputs import check_output
        from featx.reports._html import GalleryItem, file_list, gallery, page, section, write

        check_output(path, "--report", reads=[self.store, *self.queries])
        base = Path(path).absolute().parent
        sections = [
            section(f"{Path(query).name}", gallery(
                [GalleryItem(query, ["query"]),
                 *(GalleryItem(n.path, [f"#{rank} {n.label or '(no label)'}", f"cosine {n.similarity:.3f}"])
                   for rank, n in enumerate(found, 1))], base))
            for query, found in zip(self.queries, self.neighbours)
        ]
        if self.failures:
            sections.append(section("Queries that could not be read", file_list(self.failures, base)))
        return write(path, page("Similar images", sections, f"nearest stored images in {self.store}"))

    def summary(self) -> str:
        """How many queries were searched, read or extracted, then the failed ones (the first few, the rest counted)."""
        read, given = len(self.queries) - self.n_extracted, len(self.queries) + len(self.failures)
        return "\n".join([f"{len(self.queries)} of {given} queries: {read} read from {self.store}, {self.n_extracted} "
                          "extracted", *failure_lines(self.failures)])


def similar(queries: str | os.PathLike | Sequence[str | os.PathLike], store: str | os.PathLike, k: int = K, *,
            exact: bool | None = None, device: str = "auto", engine: str = "auto", progress: bool = False) -> Similar:
    """The `k` stored files nearest to each query image (files, folders or CSVs, as for extract) by cosine
    similarity. `exact` None: exact search up to EXACT_ROWS stored rows, else the cached faiss index."""
    from featx.images._content import content_keys
    from featx.images._inputs import find_images

    if k < 1:
        raise BadInputError(f"k must be at least 1, got {k}")
    images = find_images(queries)
    with FeatureStore.open(store, warn=True) as opened:
        stored = Rows(opened, present=True)  # a neighbour no longer on disk is no image to look at
        row_of = {key: row for row, key in enumerate(opened.keys())}
        own = np.array([row_of.get(hashed.key, -1) for hashed in content_keys(images.paths)], dtype=np.int64)
        features = np.zeros((len(images), opened.n_features), np.float32)
        features[own >= 0] = opened.rows(own[own >= 0])
        found, failures = own >= 0, []
        new = [images.paths[i] for i in np.flatnonzero(~found)]
        if new:
            features[~found], found[~found], failures = _extract(opened, new, device, engine, progress)
        if not found.any():
            raise BadInputError(f"none of the {len(images)} queries could be used ({failure_line(failures)})")
        of_row: dict[int, list[tuple[str, str]]] = {}
        for path, row, label in zip(stored.paths, stored.rows.tolist(), stored.labels):
            of_row.setdefault(row, []).append((path, label))
        usable = np.zeros(opened.count("rows"), bool)
        usable[list(of_row)] = True
        sims, rows = _search(opened, unit_rows(features[found]), own[found], usable, k, exact)
    neighbours = []
    for query_sims, query_rows in zip(sims, rows):
        listed = [Neighbour(path, label, float(sim))
                  for sim, row in zip(query_sims, query_rows) if row in of_row for path, label in of_row[row]]
        neighbours.append(listed[:k])
    return Similar(Path(store), [p for p, ok in zip(images.paths, found) if ok], neighbours, len(new) - len(failures), failures)


def _extract(opened: FeatureStore, paths: list[str], device: str, engine: str,
             progress: bool) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(features, found mask, failures) of `paths` extracted in the store's own feature space, aside (never into
    the store searched: queries are not part of the data)."""
    from featx.features._extraction import extract_aside
    from featx.features._extractor import Extractor
    from featx.images._inputs import ImageList

    space = opened.space

    def check(applied: FeatureSpace, dtype: str) -> None:
        space.check_same(applied, "searched store has", "query store has",
                         f"the queries' store holds another feature space than {opened.path}: remove it")

    extractor = Extractor(space, space.weights_source(opened.weights_file), device, engine)
    images = ImageList(paths, np.full(len(paths), -1, dtype=np.int64))
    features, found, done = extract_aside(images, extractor, opened.dtype, opened.n_features, check, progress=progress)
    return features, found, done.failures


def _search(opened: FeatureStore, queries: np.ndarray, own: np.ndarray, usable: np.ndarray, k: int,
            exact: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, stored rows) of the best candidates of each unit query, best first: at least k usable
    rows other than the query's own."""
    n = len(usable)
    if exact is None:
        indexed = importlib.util.find_spec("faiss") is not None
        if n > EXACT_ROWS and not indexed:  # still right, but every search reads the whole store
            warnings.warn(FeatxWarning(f"{n:,} stored rows searched exactly, the store read whole at each search: "
                                       'pip install "featx[audit]" for a faiss index kept beside it'), stacklevel=3)
        exact = n <= EXACT_ROWS or not indexed
    if exact:
        return _exact(opened, queries, own, usable, k)
    index = cached_index(opened)
    wanted = min(n, k + 1 + int(n - usable.sum()))  # room for the own row and the rows with no file now
    index.hnsw.efSearch = max(HNSW_EF, wanted)
    sims, rows = index.search(queries, wanted)
    mine = rows == own[:, None]
    return np.where(mine, -np.inf, sims), np.where(mine, -1, rows)


def _exact(opened: FeatureStore, queries: np.ndarray, own: np.ndarray, usable: np.ndarray,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    n, step = len(usable), max(1, BLOCK_BYTES // (4 * queries.shape[1]))
    best_sims, best_rows = np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    for start in range(0, n, step):
        block = queries @ unit_rows(opened.row_ranges([start], step)).T
        block[:, ~usable[start : start + step]] = -np.inf
        mine = (own >= start) & (own < start + step)
        block[np.flatnonzero(mine), own[mine] - start] = -np.inf
        sims, rows = top(block, k)
        merged_rows = np.hstack([best_rows, rows + start])
        best_sims, picked = top(np.hstack([best_sims, sims]), k)
        best_rows = np.take_along_axis(merged_rows, picked, axis=1)
    return best_sims, np.where(np.isfinite(best_sims), best_rows, -1)


def index_path(store: Path) -> Path:
    """Where the faiss index of `store` is kept: beside it, as STORE.hnsw."""
    return store.with_name(f"{store.name}.hnsw")


def cached_index(opened: FeatureStore) -> faiss.Index:
    """The faiss index of every committed row, read from STORE.hnsw and completed with the rows added since
    (the store is append-only); written back when it changed. An index that is no faiss file, or not of this
    store (another store was written under its name), is built again; one that cannot be written is used anyway."""
    import faiss

    from featx.outputs import atomic_path

    path, n = index_path(opened.path), opened.count("rows")
    index = _read_index(path)
    if index is None or not _indexes(index, opened, n):
        index = hnsw_index(opened.n_features, n)
    if index.ntotal < n:
        step = max(1, BLOCK_BYTES // (4 * opened.n_features))
        for start in range(index.ntotal, n, step):
            index.add(unit_rows(opened.row_ranges([start], step)))
        try:
            with atomic_path(path) as tmp:
                faiss.write_index(index, str(tmp))
        except OutputError as exc:  # a read-only folder: the index built is still good for this search
            warnings.warn(StoreWarning(f"{exc}: the index is built again at the next search"), stacklevel=3)
    return index


def _read_index(path: Path) -> faiss.Index | None:
    """The index in `path`; None when there is none or it is no faiss index (said: it is built again)."""
    import faiss

    if not path.exists():
        return None
    try:
        return faiss.read_index(str(path))
    except RuntimeError:
        warnings.warn(StoreWarning(f"{path} is not a faiss index: built again"), stacklevel=4)
        return None


def _indexes(index: faiss.Index, opened: FeatureStore, n: int) -> bool:
    """Whether `index` holds the first rows of this store: its width, at most its rows, and the same vectors at
    eight rows spread over them (an earlier store of the same name differs there)."""
    if index.d != opened.n_features or index.ntotal > n:
        return False
    sample = np.unique(np.linspace(0, index.ntotal - 1, 8).astype(np.int64)) if index.ntotal else []
    held = np.array([index.reconstruct(int(row)) for row in sample], np.float32).reshape(-1, index.d)
    return np.allclose(held, unit_rows(opened.rows(sample)), atol=1e-5)

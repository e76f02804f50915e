"""k nearest neighbours of every row by cosine similarity, among the rows themselves.

Exact search (numpy matrix products in blocks) up to EXACT_ROWS rows; beyond that an approximate index
(see `_approximate`; the choice and its measurement are in docs/audit.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import faiss

EXACT_ROWS = 20_000
HNSW_M, HNSW_EF = 32, 80  # graph degree, build and search breadth (docs/audit.md)
BLOCK_BYTES = 256 << 20  # similarity block computed at a time by the exact search


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero row stays zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def nearest(x: np.ndarray, k: int, exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices), each n x k, of the k rows most similar to each row (itself excluded),
    most similar first. `exact` None: exact up to EXACT_ROWS rows."""
    x = unit_rows(x)
    k = min(k, len(x) - 1)
    if k < 1:
        return np.zeros((len(x), 0), np.float32), np.zeros((len(x), 0), np.int64)
    if exact is None:
        exact = len(x) <= EXACT_ROWS
    return _exact(x, k) if exact else _approximate(x, k)


def _exact(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    sims, index = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    # A block row holds n similarities (float32) and argpartition's n indices (int64), and the largest k are
    # taken without a negated copy: at 12,000 rows the peak fell from 1,538 to 428 MiB (tracemalloc), with
    # the same similarities (measured for #25 point 8c)
    step = max(1, BLOCK_BYTES // (12 * n))
    for start in range(0, n, step):
        block = x[start : start + step] @ x.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not its own neighbour
        sims[start : start + step], index[start : start + step] = top(block, k)
    return sims, index


def top(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, column indices) of the k largest values of each row of `block`, largest first. NaN (of a
    row `featx info --check` reports) is set to -inf in `block` itself (no copy of a large block): argpartition
    ranks NaN above everything, so NaN rows took the places of real neighbours."""
    np.copyto(block, -np.inf, where=np.isnan(block))
    k = min(k, block.shape[1])
    found = np.argpartition(block, -k, axis=1)[:, -k:]
    sims = np.take_along_axis(block, found, axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(found, order, axis=1)


def hnsw_index(width: int, rows: int) -> faiss.Index:
    """An empty faiss HNSW graph for unit rows of `width` (inner product = cosine), with the measured
    settings; `rows`: how many it will hold, for the message when faiss is missing."""
    try:
        import faiss
    except ImportError:
        from featx.errors import FeatxError

        raise FeatxError(f'{rows} images need an approximate neighbour index: pip install "featx[audit]"') from None
    index = faiss.IndexHNSWFlat(width, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF
    return index


def _approximate(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's HNSW graph (inner product on unit rows = cosine). Chosen by the measurement in docs/audit.md:
    as fast and as exact as hnswlib, and faiss-cpu ships wheels where hnswlib compiles at install. Each row
    is asked for k + 1 neighbours and itself is dropped."""
    index = hnsw_index(x.shape[1], len(x))
    index.add(x)
    index.hnsw.efSearch = max(HNSW_EF, k + 1)
    sims, found = index.search(x, k + 1)
    others = found != np.arange(len(x))[:, None]
    others[others.all(axis=1), -1] = False  # itself not returned: drop the farthest instead
    return sims[others].reshape(len(x), k), found[others].reshape(len(x), k).astype(np.int64)

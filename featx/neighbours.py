"""k nearest neighbours of every row by cosine similarity, among the rows themselves.

Exact search (numpy matrix products in blocks) up to EXACT_ROWS rows; beyond that an approximate index
(see `_approximate`; the choice and its measurement are in docs/audit.md).
"""
from __future__ import annotations

import numpy as np

EXACT_ROWS = 20_000
HNSW_M, HNSW_EF = 32, 80  # graph degree and search breadth (recall 0.98 at 100,000 rows, docs/audit.md)
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
    step = max(1, BLOCK_BYTES // (4 * n))
    for start in range(0, n, step):
        block = x[start : start + step] @ x.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not its own neighbour
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        sims[start : start + step] = np.take_along_axis(top_sims, order, axis=1)
        index[start : start + step] = np.take_along_axis(top, order, axis=1)
    return sims, index


def _approximate(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """hnswlib's HNSW graph (inner product on unit rows = cosine); chosen over faiss by the measurement in
    docs/audit.md. Each row is asked for k + 1 neighbours and itself is dropped."""
    try:
        import hnswlib
    except ImportError:
        from .errors import FeatxError

        raise FeatxError(f'{len(x)} images need an approximate neighbour index: pip install "featx[audit]"') from None
    index = hnswlib.Index(space="ip", dim=x.shape[1])
    index.init_index(max_elements=len(x), M=HNSW_M, ef_construction=HNSW_EF)
    index.add_items(x, np.arange(len(x)))
    index.set_ef(max(HNSW_EF, k + 1))
    found, distance = index.knn_query(x, k=k + 1)
    found = found.astype(np.int64)
    sims = 1 - distance  # hnswlib's "ip" distance is 1 - inner product
    others = found != np.arange(len(x))[:, None]
    others[others.all(axis=1), -1] = False  # itself not returned: drop the farthest instead
    return sims[others].reshape(len(x), k).astype(np.float32), found[others].reshape(len(x), k)

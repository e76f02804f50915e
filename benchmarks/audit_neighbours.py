"""Nearest-neighbour search for `featx audit` at scale: exact numpy (featx.features._neighbours) vs faiss-cpu vs hnswlib.

Synthetic vectors of the default backbone's dimension (1280, EfficientNet-Lite0), clustered like embeddings
(non-negative, 2,000 centres plus noise), unit length; k = 10 neighbours of every row among the rows
themselves, as the audit asks. Prints CPU seconds (process time, all threads: robust on a shared machine,
where wall time depends on the other processes) for all rows (index build + queries) and recall@10 against
the exact answer (on --sample rows), and each time as a ratio of the exact numpy search in the same run.
The two exact searches cost the same for every query: they are timed on --sample queries and scaled to all
rows (said in their line); the approximate indexes are timed in full.

    python benchmarks/audit_neighbours.py [--rows 100000] [--dim 1280] [--threads 1] [--sample 5000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from featx.features._neighbours import unit_rows

K = 10


def vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.5, 1.0, size=(2000, dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + rng.gamma(0.5, 0.6, size=(n, dim)).astype(np.float32)
    return unit_rows(x)


def exact_sample(x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """featx's exact search (featx.features._neighbours), for some rows only: the same blocks of matrix products."""
    sims = x[queries] @ x.T
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
    return top


def faiss_flat(x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index.search(x[queries], K + 1)[1]


def faiss_ivf(x: np.ndarray, nprobe: int = 16) -> np.ndarray:
    import faiss

    nlist = int(4 * np.sqrt(len(x)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(x[np.random.default_rng(0).permutation(len(x))[: 40 * nlist]])
    index.add(x)
    index.nprobe = nprobe
    return index.search(x, K + 1)[1]


def faiss_hnsw(x: np.ndarray, m: int = 32, ef: int = 64) -> np.ndarray:
    import faiss

    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(x)
    index.hnsw.efSearch = ef
    return index.search(x, K + 1)[1]


def hnswlib_index(x: np.ndarray, m: int = 32, ef: int = 64, threads: int = 2) -> np.ndarray:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=x.shape[1])
    index.init_index(max_elements=len(x), M=m, ef_construction=80)
    index.add_items(x, num_threads=threads)
    index.set_ef(ef)
    return index.knn_query(x, k=K + 1, num_threads=threads)[0].astype(np.int64)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true 10 neighbours found (the row itself, returned by the libraries, is not counted)."""
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample", type=int, default=5000)
    args = parser.parse_args()
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(args.threads)
    x = vectors(args.rows, args.dim)
    queries = np.sort(np.random.default_rng(1).choice(args.rows, args.sample, replace=False))
    scale = args.rows / args.sample
    print(f"{args.rows} synthetic unit vectors, {args.dim}-d, k={K}, {args.threads} threads; recall on {args.sample} rows")
    with threadpool_limits(args.threads):
        start = time.process_time()
        truth = exact_sample(x, queries)
        base = (time.process_time() - start) * scale
    print(f"{'exact numpy (featx)':28s} {base:8.1f} s CPU  recall 1.000  ratio 1.00  (timed on {args.sample} queries x {scale:.0f})", flush=True)
    start = time.process_time()
    found = faiss_flat(x, queries)
    seconds = (time.process_time() - start) * scale
    print(f"{'faiss IndexFlatIP (exact)':28s} {seconds:8.1f} s CPU  recall {recall(found, truth):.3f}  ratio {seconds / base:.2f}"
          f"  (timed on {args.sample} queries x {scale:.0f})", flush=True)
    runs = {
        "faiss IVFFlat nprobe16": lambda: faiss_ivf(x),
        "hnswlib M32 ef64": lambda: hnswlib_index(x, threads=args.threads),
        "faiss HNSW M32 ef64": lambda: faiss_hnsw(x),
    }
    for name, run in runs.items():
        start = time.process_time()
        try:
            found = run()[queries]
        except ImportError as exc:  # hnswlib has no wheels for every platform: an optional comparison
            print(f"{name:28s} skipped: {exc}", flush=True)
            continue
        seconds = time.process_time() - start
        print(f"{name:28s} {seconds:8.1f} s CPU  recall {recall(found, truth):.3f}  ratio {seconds / base:.2f}", flush=True)

if __name__ == "__main__":
    main()

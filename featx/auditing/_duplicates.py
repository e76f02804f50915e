"""Exact duplicates (files sharing a store row) and near duplicates: clusters joined by embedding similarity,
close pHashes and, for candidate pairs, their files' pixels (featx.images._copies); thresholds in docs/audit.md."""
from __future__ import annotations

from collections import Counter

import numpy as np

from featx.auditing._files import Files, Table

NEAR_FLOOR = 0.90  # cosine similarity: copies of photographs lie above it, distinct photographs far below
NEAR_SCALE = 0.25  # share of the data set's median nearest-neighbour distance within which copies lie
HASH_MAX = 8  # pHash bits (of 64) beyond which two images are never copies
HASH_SCALE = 0.1  # share of the data set's median nearest-hash distance within which copies lie
PIXEL_NEIGHBOURS, PIXEL_COSINE = 5, 0.7  # candidates checked by pixels: nearest rows above a loose cosine (or pHash within HASH_MAX)
REFUTE = 0.5  # pixel difference (featx.images._copies) above which no pair is a copy: copies <= 0.2, distinct photographs >= 1.9
THUMBNAILS = 4096  # grey thumbnails kept in memory at a time (16 KB each)


def exact_duplicates(files: Files) -> tuple[Table, set[str], int]:
    """Groups of files with identical content; conflict when two of their labels differ (an unlabelled copy
    conflicts with none). Flags every copy but the first of a group, and every file of a conflicting group."""
    table = Table(["group", "path", "label", "key", "conflict"])
    flagged, conflicts, group = set(), 0, 0
    for r, members in enumerate(files.by_row):
        if len(members) < 2:
            continue
        group += 1
        conflict = len({files.labels[i] for i in members} - {""}) > 1
        conflicts += conflict
        for n, i in enumerate(members):
            table.rows.append([group, files.paths[i], files.labels[i], files.keys[r], conflict])
            if conflict or n:
                flagged.add(files.paths[i])
    return table, flagged, conflicts


def _n_pairs(a: np.ndarray, b: np.ndarray) -> int:
    """How many distinct pairs of rows (a[i], b[i]) name: nearest neighbours find most pairs from both ends."""
    return len(np.unique(np.sort(np.stack([a, b], axis=1), axis=1), axis=0)) if len(a) else 0


def near_threshold(nearest_similarity: np.ndarray) -> float:
    """The default near-duplicate threshold: NEAR_FLOOR, raised for data sets of very alike images to a
    cosine distance of NEAR_SCALE x the median distance of an image to its nearest neighbour.

    Measured (docs/audit.md): copies (JPEG q75-95, resized, 1-3% crops) of photographs stay above 0.90 while
    distinct photographs stay below 0.5; but ELPV cells lie at a median 0.972 from their nearest distinct
    cell, closer than many of their own copies, so no fixed threshold serves both. The median makes the rule
    robust as long as fewer than half the images have a near duplicate.
    """
    if not len(nearest_similarity):
        return NEAR_FLOOR
    return float(max(NEAR_FLOOR, 1 - NEAR_SCALE * (1 - np.median(nearest_similarity))))


def hash_threshold(nearest_bits: np.ndarray) -> int:
    """Hamming distance of pHashes up to which two images are copies: HASH_SCALE x the median distance of an
    image's hash to its nearest other one, at most HASH_MAX. Measured (docs/audit.md): JPEG re-encodings and
    resizes stay within 2-4 bits of their source, 2-5% crops of photos within 12; distinct photographs lie at
    a median 23 bits from their nearest, but ELPV cells at 10, and 1.8% of distinct cells share a hash."""
    if not len(nearest_bits):
        return 0
    return int(min(HASH_MAX, HASH_SCALE * np.median(nearest_bits)))


def hash_pairs(hashes: np.ndarray, rows: np.ndarray, bits_threshold: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(a, b, bits, threshold): pairs of `rows` (a < b) whose 64-bit hashes differ in at most HASH_MAX bits (the
    pixel check's candidates), and the threshold of copies, `bits_threshold` (None: `hash_threshold`); all
    pairs compared in blocks (n^2 / 2 XORs: 20,000 rows in seconds)."""
    from featx.images._quality import hamming

    found, nearest, block = [], np.full(len(rows), 64, dtype=np.int64), max(1, (1 << 24) // max(len(rows), 1))
    for start in range(0, len(rows), block):
        bits = hamming(hashes[rows[start : start + block], None], hashes[None, rows])
        bits[np.arange(len(bits)), np.arange(start, start + len(bits))] = 65  # not itself
        nearest[start : start + len(bits)] = bits.min(axis=1)
        a, b = np.nonzero(bits <= HASH_MAX)
        keep = a + start < b
        found.append((a[keep] + start, b[keep], bits[a[keep], b[keep]]))
    threshold = hash_threshold(nearest) if bits_threshold is None else bits_threshold
    a, b, bits = (np.concatenate(parts) for parts in zip(*found)) if found else (np.zeros(0, int),) * 3
    return rows[a], rows[b], bits, threshold


def _among(a: np.ndarray, b: np.ndarray, listed: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Whether each pair of rows (a[i], b[i]) is one of the `listed` pairs, in either order."""
    known = {(min(x, y), max(x, y)) for x, y in zip(listed[0].tolist(), listed[1].tolist())}
    return np.array([(min(x, y), max(x, y)) in known for x, y in zip(a.tolist(), b.tolist())], dtype=bool)


def _pixel_pairs(files: Files, sims: np.ndarray, index: np.ndarray, known: tuple[np.ndarray, np.ndarray],
                 loose: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(a, b, difference, unreadable): the pixel check (featx.images._copies) of candidate pairs of rows: the
    `known` pairs, each row's PIXEL_NEIGHBOURS nearest above PIXEL_COSINE and the `loose` pHash pairs (within
    HASH_MAX bits); difference NaN where a file cannot be read as it was extracted; unreadable: how many rows."""
    from functools import lru_cache

    from featx.images._copies import pixel_differences, thumbnail, turned_differences

    k = min(PIXEL_NEIGHBOURS, sims.shape[1])
    near = sims[:, :k] >= PIXEL_COSINE
    a, b = [np.repeat(np.arange(len(sims)), k)[near.ravel()], known[0], loose[0]], [index[:, :k][near], known[1], loose[1]]
    pairs = np.unique(np.sort(np.stack([np.concatenate(a), np.concatenate(b)], axis=1).astype(np.int64), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]

    @lru_cache(maxsize=THUMBNAILS)
    def thumb(r: int) -> np.ndarray | None:
        return next((t for i in files.by_row[r] if (t := thumbnail(files.paths[i], files.keys[r])) is not None), None)

    found = pixel_differences(thumb, pairs[:, 0], pairs[:, 1])
    again = np.flatnonzero((found > REFUTE) & _among(pairs[:, 0], pairs[:, 1], known))
    found[again] = np.fmin(found[again], turned_differences(thumb, pairs[again, 0], pairs[again, 1]))  # mirrored copies
    unreadable = len({int(r) for r in pairs[np.isnan(found)].ravel() if thumb(int(r)) is None})
    return pairs[:, 0], pairs[:, 1], found, unreadable


def near_duplicates(files: Files, sims: np.ndarray, index: np.ndarray, threshold: float, split: list[str],
                    bits_threshold: int | None = None, pixels: bool = True) -> tuple[Table, set[str], dict]:
    """Clusters of rows joined (transitively) by embedding similarities at or above `threshold` or, for rows
    measured at extraction, by pHashes within `hash_threshold` bits whose embeddings are at least as similar
    as the median nearest neighbours (on ELPV this keeps 1/3 of the distinct cells sharing a hash, and the
    q85 copies: docs/audit.md). With `pixels`, candidate pairs are checked on the files' pixels (`_pixel_pairs`):
    a pair whose aligned images differ by at most DIFFERENCE is a copy (found by "pixels"), one that differs by
    more than REFUTE is not, whatever its embedding or hash; a pair whose files cannot be read is judged
    without. Flags every file of a cluster but the first, and every file of a cluster that spans classes."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(files.rows)
    a, b = np.nonzero(sims >= threshold)
    pairs = (a, index[a, b], sims[a, b])
    best = np.full(n, -np.inf)  # highest similarity of a row to another row of its cluster
    np.maximum.at(best, pairs[0], pairs[2])
    np.maximum.at(best, pairs[1], pairs[2])
    bits = np.full(n, 99)  # fewest differing hash bits of a row to another row of its cluster
    la, lb, lbits, bits_threshold = (hash_pairs(files.phash, np.flatnonzero(files.measured), bits_threshold) if files.measured is not None
                                     else (np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), None))
    close = lbits <= (bits_threshold or 0)
    ha, hb, hbits = la[close], lb[close], lbits[close]
    if len(ha):  # a hash match counts when the embeddings agree at least as well as typical neighbours do
        unit = files.features / np.maximum(np.linalg.norm(files.features, axis=1, keepdims=True), 1e-12)
        agree = np.einsum("ij,ij->i", unit[ha], unit[hb]) >= (np.median(sims[:, 0]) if sims.shape[1] else -1)
        ha, hb, hbits = ha[agree], hb[agree], hbits[agree]
    pa, pb, unreadable, refuted = np.zeros(0, int), np.zeros(0, int), None, 0
    if pixels and n > 1:
        from featx.images._copies import DIFFERENCE

        ca, cb, difference, unreadable = _pixel_pairs(files, sims, index, (np.concatenate([pairs[0], ha]), np.concatenate([pairs[1], hb])),
                                                        (la, lb))
        no = (ca[difference > REFUTE], cb[difference > REFUTE])
        keep = [~_among(p, q, no) for p, q in ((pairs[0], pairs[1]), (ha, hb))]
        refuted = _n_pairs(np.concatenate([pairs[0][~keep[0]], ha[~keep[1]]]), np.concatenate([pairs[1][~keep[0]], hb[~keep[1]]]))
        pairs, (ha, hb, hbits) = tuple(p[keep[0]] for p in pairs), (ha[keep[1]], hb[keep[1]], hbits[keep[1]])
        pa, pb = ca[difference <= DIFFERENCE], cb[difference <= DIFFERENCE]
        best = np.full(n, -np.inf)  # again, without the refuted pairs
        np.maximum.at(best, pairs[0], pairs[2])
        np.maximum.at(best, pairs[1], pairs[2])
    by_pixels = np.zeros(n, dtype=bool)
    by_pixels[pa], by_pixels[pb] = True, True
    np.minimum.at(bits, ha, hbits)
    np.minimum.at(bits, hb, hbits)
    edges = (np.concatenate([pairs[0], ha, pa]), np.concatenate([pairs[1], hb, pb]))
    _, component = connected_components(coo_matrix((np.ones(len(edges[0])), edges), shape=(n, n)), directed=False)
    table = Table(["cluster", "path", "label", "split", "similarity", "hash_bits", "found_by", "spans_classes", "spans_split"])
    flagged, counts = set(), Counter(embedding_pairs=_n_pairs(pairs[0], pairs[1]), hash_pairs=_n_pairs(ha, hb), hash_threshold=bits_threshold,
                                     pixel_pairs=len(pa), refuted=refuted, unreadable=unreadable)
    members_of: dict[int, list[int]] = {}
    for r in np.flatnonzero(np.isfinite(best) | (bits < 99) | by_pixels).tolist():
        members_of.setdefault(int(component[r]), []).append(r)
    for number, rows in enumerate(sorted(members_of.values(), key=lambda rows: (bits[rows].min(), -best[rows].max())), 1):
        members = sorted(i for r in rows for i in files.by_row[r])
        spans_classes = len({files.labels[i] for i in members} - {""}) > 1
        spans_split = len({split[i] for i in members} - {""}) > 1
        counts.update(clusters=1, spans_classes=spans_classes, spans_split=spans_split, files=len(members))
        for n_member, i in enumerate(members):
            r = int(files.row_of_file[i])
            by = " and ".join(kind for kind, found in (("embedding", np.isfinite(best[r])), ("hash", bits[r] < 99), ("pixels", by_pixels[r])) if found)
            table.rows.append([number, files.paths[i], files.labels[i], split[i], float(max(best[r], -1)),
                               int(bits[r]) if bits[r] < 99 else "", by, spans_classes, spans_split])
            if spans_classes or n_member:
                flagged.add(files.paths[i])
    return table, flagged, counts


"""`featx audit`: duplicates, leaks, outliers and likely label errors, from a store's keys and embeddings.

Reads the store only (nothing is extracted, moved or rewritten). A store row is one image content, so
exact duplicates are the rows that several paths point at. The other findings work on rows:
- near duplicates: cosine similarity of embeddings at or above a threshold, joined into clusters; a cluster
  is marked when it spans classes or a split (a train/test leak). The default threshold adapts to how
  alike the data set's images are (`near_threshold`; calibrated in docs/audit.md);
- outliers: mean cosine distance to the k nearest rows, flagged above a modified z-score of 3.5;
- likely label errors: out-of-fold probabilities of the featx classifier that cross-validation shows best
  (or the one given), ranked by cleanlab's confident learning (label quality = self-confidence, issues =
  prune by noise rate).
"""
from __future__ import annotations

import csv
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from featx.errors import BadInputError, FeatxError, ParameterError, UnknownNameError
from featx.features._store import FeatureStore
from featx.images._quality import STATS

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

NEAR_FLOOR = 0.90  # cosine similarity: copies of photographs lie above it, distinct photographs far below
NEAR_SCALE = 0.25  # share of the data set's median nearest-neighbour distance within which copies lie
HASH_MAX = 8  # pHash bits (of 64) beyond which two images are never copies
HASH_SCALE = 0.1  # share of the data set's median nearest-hash distance within which copies lie
PIXEL_NEIGHBOURS, PIXEL_COSINE = 5, 0.7  # candidates checked by pixels: nearest rows above a loose cosine (or pHash within HASH_MAX)
REFUTE = 0.5  # pixel difference (featx.images._copies) above which no pair is a copy: copies <= 0.2, distinct photographs >= 1.9
THUMBNAILS = 4096  # grey thumbnails kept in memory at a time (16 KB each)
NEIGHBOURS = 10
OUTLIER_Z = 3.5  # modified z-score cut-off (Iglewicz and Hoaglin)
IMAGE_FINDINGS = ("dark", "bright", "blurry", "low_information", "odd_size", "odd_aspect_ratio")  # see _image_findings
DARK, BRIGHT = 0.12, 0.85  # mean grey level (0-1): ELPV 1st-99th percentile 0.28-0.79, photographs 0.08-0.77
LOW_ENTROPY = 2.0  # bits of the grey histogram: ELPV >= 3.5, photographs >= 1.4 (a binary silhouette), a blank image 0
ODD_AREA, ODD_ASPECT = 2.0, 0.585  # log2: 4x the median area or a quarter of it; 1.5x the median aspect ratio
KINDS = ("duplicates", "near-duplicates", "outliers", "label-errors", *(f.replace("_", "-") for f in IMAGE_FINDINGS))
DEFAULT_DROP = ("duplicates", "near-duplicates", "label-errors")
# the numbers `audit` accepts, (low, high, low excluded, high excluded); featx audit's options are made from them
RANGES = {
    "threshold": (0.0, 1.0, True, False),  # a cosine similarity
    "neighbours": (1, None, False, False),
    "cv": (2, None, False, False),
    "refit_rounds": (0, None, False, False),
    "test_size": (0.0, 1.0, True, True),
}


def _check_parameters(drop: Sequence[str], clf: str, **values) -> None:
    """ParameterError for a value `audit` cannot use, naming it (UnknownNameError for a name)."""
    from featx.classify._classifiers import CLASSIFIERS

    for name in drop:
        if name not in KINDS:
            raise UnknownNameError("finding", name, KINDS)
    if clf != AUTO and clf not in CLASSIFIERS:
        raise UnknownNameError("classifier", clf, [AUTO, *CLASSIFIERS])
    for name, value in values.items():
        low, high, low_open, high_open = RANGES[name]
        if value is None:
            continue
        if value < low or (low_open and value == low) or (high is not None and (value > high or (high_open and value == high))):
            interval = f"{'(' if low_open else '['}{low}, {'inf' if high is None else high}{')' if high_open or high is None else ']'}"
            raise ParameterError(f"audit: {name}={value!r} is not in {interval}")


@dataclass
class Table:
    """One finding as a CSV: a header and rows (ranked or grouped as the finding needs)."""

    header: list[str]
    rows: list[list] = field(default_factory=list)

    def write(self, path: Path) -> None:
        from featx.outputs import atomic_write

        with atomic_write(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.header)
            writer.writerows([f"{v:.4f}" if isinstance(v, float) else v for v in row] for row in self.rows)


@dataclass
class Audit:
    """Findings about the files of a store. `tables` name -> Table (each written as <name>.csv); `dropped`
    kind -> paths flagged by that kind of finding; `clean` (path, label) of the files kept."""

    store: str
    n_files: int
    n_rows: int
    tables: dict[str, Table]
    dropped: dict[str, set[str]]
    clean: list[tuple[str, str]]
    counts: dict[str, int]
    notes: list[str]
    classes: dict[str, int] = field(default_factory=dict)  # class -> files
    paths: list[str] = field(default_factory=list)  # every audited file, with its label ("" when none)
    labels: list[str] = field(default_factory=list)

    def findings(self) -> dict[str, int]:
        """Finding -> how many files it flags (the first lines of the summary)."""
        return {kind: len(paths) for kind, paths in self.dropped.items()}

    def class_rows(self) -> list[tuple[str, int, float | str]]:
        """(class, files, share of them flagged as likely label errors; "" without a label check)."""
        flagged = Counter(label for p, label in zip(self.paths, self.labels) if p in self.dropped.get("label-errors", ()))
        checked = "label_errors" in self.tables
        return [(name, n, flagged[name] / n if checked else "") for name, n in self.classes.items()]

    def imbalance(self) -> str:
        """Largest class over smallest, named (empty without two classes)."""
        if len(self.classes) < 2:
            return ""
        (large, n_large), (small, n_small) = max(self.classes.items(), key=lambda c: c[1]), min(self.classes.items(), key=lambda c: c[1])
        return f"{n_large / n_small:.1f} ({large} {n_large} / {small} {n_small})"

    def summary(self) -> str:
        lines = [f"{self.n_files} files, {self.n_rows} unique images in {self.store}"]
        lines.append("files flagged: " + ", ".join(f"{kind} {n}" for kind, n in self.findings().items()))
        for name, n, share in self.class_rows():
            lines.append(f"  class {name}: {n} files" + (f", {share:.1%} likely label errors" if share != "" else ""))
        lines += [f"class imbalance (largest / smallest): {self.imbalance()}"] if self.imbalance() else []
        lines += [f"  {name}: {count}" for name, count in self.counts.items()]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"clean.csv keeps {len(self.clean)} of {self.n_files} files")
        return "\n".join(lines)

    def write(self, out: str | os.PathLike) -> list[Path]:
        """Write each table as <name>.csv, clean.csv and audit.html (thumbnails) into `out`, then manifest.json
        (which run wrote them, their sha256: see featx.outputs.check_manifest); returns the paths."""
        from featx.auditing._page import write_page
        from featx.outputs import output_set

        out = Path(out)
        tables = {**self.tables, "clean": Table(["path", "label"], [[os.path.abspath(p), label] for p, label in self.clean])}
        with output_set(out / "manifest.json") as written:
            for name, table in tables.items():
                table.write(out / f"{name}.csv")
                written.append(out / f"{name}.csv")
            written.append(write_page(self, out / "audit.html"))
        return [*written, out / "manifest.json"]


@dataclass
class _Files:
    """The audited files (sorted by path) and the unique store rows they point at."""

    paths: list[str]
    labels: list[str]  # class name, "" when unlabelled
    row_of_file: np.ndarray  # index into `rows`
    rows: np.ndarray  # store rows
    keys: list[str]  # content key of each row
    features: np.ndarray  # one per row
    measured: np.ndarray | None = None  # rows with a pHash and statistics (featx.images._quality); None: none has
    phash: np.ndarray | None = None  # uint64 per row (0 where not measured)
    stats: np.ndarray | None = None  # rows x STATS (NaN where not measured)

    def __post_init__(self) -> None:
        self.by_row: list[list[int]] = [[] for _ in self.rows]  # files of each row
        for i, r in enumerate(self.row_of_file.tolist()):
            self.by_row[r].append(i)


def _read(store: FeatureStore, data) -> tuple[_Files, list[str]]:
    """Files of the store (only those found in `data` when given), with their rows' keys and features."""
    from featx.images._inputs import display_path, find_images

    entries, notes = dict(sorted(store.present_files().items())), []
    if data is not None:
        wanted = {display_path(p) for p in find_images(data).paths}
        missing = len(wanted - entries.keys())
        entries = {p: e for p, e in entries.items() if p in wanted}
        if missing:
            notes.append(f"{missing} files of the data are not in the store (run featx extract on them first)")
    if not entries:
        raise BadInputError(f"{store.path} holds no features of the files to audit")
    store_rows = np.array([row for row, _ in entries.values()], dtype=np.int64)
    rows, row_of_file = np.unique(store_rows, return_inverse=True)
    classes, keys = store.classes(), store.keys()
    labels = [classes[label] if label >= 0 else "" for _, label in entries.values()]
    features = store.rows(rows).astype(np.float32, copy=False)
    files = _Files(list(entries), labels, row_of_file, rows, [keys[r] for r in rows], features)
    _read_quality(store, files, notes)
    return files, notes


def _read_quality(store: FeatureStore, files: _Files, notes: list[str]) -> None:
    """The rows' pHashes and statistics, measured at extraction; a note when some or all have none."""
    index, hashes, stats = store.quality()
    found = np.array([index.get(key, -1) for key in files.keys], dtype=np.int64)
    measured = found >= 0
    if measured.any():
        files.measured = measured
        files.phash = np.where(measured, hashes[found], 0).astype(np.uint64)
        files.stats = np.where(measured[:, None], stats[found], np.nan)
    if not measured.all():
        which = "this store has" if not measured.any() else f"{int((~measured).sum())} of {len(measured)} images have"
        notes.append(f"{which} no image hashes or statistics (extracted before featx measured them): copies from "
                     f"embeddings only, no image findings for them; featx extract DATA --store {store.path} --rehash adds them")


def _exact_duplicates(files: _Files) -> tuple[Table, set[str], int]:
    """Groups of files with identical content; conflict when their labels differ. Flags every copy but the
    first of a group, and every file of a conflicting group."""
    table = Table(["group", "path", "label", "key", "conflict"])
    flagged, conflicts, group = set(), 0, 0
    for r, members in enumerate(files.by_row):
        if len(members) < 2:
            continue
        group += 1
        conflict = len({files.labels[i] for i in members}) > 1
        conflicts += conflict
        for n, i in enumerate(members):
            table.rows.append([group, files.paths[i], files.labels[i], files.keys[r], conflict])
            if conflict or n:
                flagged.add(files.paths[i])
    return table, flagged, conflicts


def _row_labels(files: _Files) -> list[str | None]:
    """The label of each row: its files' one label, "" when none has one, None when they disagree."""
    labels = []
    for r in range(len(files.rows)):
        names = {files.labels[i] for i in files.by_row[r]} - {""}
        labels.append(names.pop() if len(names) == 1 else ("" if not names else None))
    return labels


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


def _pixel_pairs(files: _Files, sims: np.ndarray, index: np.ndarray, known: tuple[np.ndarray, np.ndarray],
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


def _near_duplicates(files: _Files, sims: np.ndarray, index: np.ndarray, threshold: float, split: list[str],
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
        refuted = sum(int((~k).sum()) for k in keep)
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
    flagged, counts = set(), Counter(embedding_pairs=len(pairs[0]), hash_pairs=len(ha), hash_threshold=bits_threshold,
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


def modified_z(values: np.ndarray) -> np.ndarray:
    """Iglewicz and Hoaglin's modified z-score: 0.6745 (x - median) / MAD (zeros when the MAD is 0)."""
    deviation = np.median(np.abs(values - np.median(values))) if len(values) else 0
    return 0.6745 * (values - np.median(values)) / deviation if deviation > 0 else np.zeros_like(values)


def _image_findings(files: _Files) -> dict[str, tuple[Table, set[str]]]:
    """Image findings from the statistics measured at extraction (rows without them are left out): name ->
    (table of the flagged files, worst first, with the statistic and the score compared; their paths).
    Thresholds calibrated on ELPV cells and scikit-image photographs (docs/audit.md): brightness and entropy
    are absolute; blur, size and aspect ratio are judged against the data set's own images (a solar cell is
    smooth, a photograph is not: absolute blur scores of the two overlap)."""
    if files.measured is None:
        return {}
    rows = np.flatnonzero(files.measured)
    stat = {name: files.stats[rows, i] for i, name in enumerate(STATS)}
    area, aspect = np.log2(stat["width"] * stat["height"]), np.log2(stat["width"] / stat["height"])
    scores = {  # finding -> (statistic shown, score: higher is worse, flagged)
        "dark": ("brightness", -stat["brightness"], stat["brightness"] < DARK),
        "bright": ("brightness", stat["brightness"], stat["brightness"] > BRIGHT),
        "blurry": ("blur", -modified_z(np.log10(stat["blur"] + 1e-9)), modified_z(np.log10(stat["blur"] + 1e-9)) < -OUTLIER_Z),
        "low_information": ("entropy", -stat["entropy"], stat["entropy"] < LOW_ENTROPY),
        "odd_size": ("width", np.abs(area - np.median(area)), np.abs(area - np.median(area)) > ODD_AREA),
        "odd_aspect_ratio": ("width", np.abs(aspect - np.median(aspect)), np.abs(aspect - np.median(aspect)) > ODD_ASPECT),
    }
    found = {}
    for name, (shown, score, flagged) in scores.items():
        table, paths = Table(["rank", "path", "label", shown, "width", "height", "score"]), set()
        ranked = np.flatnonzero(flagged)[np.argsort(-score[flagged], kind="stable")]
        for rank, k in enumerate(ranked.tolist(), 1):
            for i in files.by_row[int(rows[k])]:
                table.rows.append([rank, files.paths[i], files.labels[i], float(stat[shown][k]), int(stat["width"][k]),
                                   int(stat["height"][k]), float(score[k])])
                paths.add(files.paths[i])
        found[name] = table, paths
    return found


def _outliers(files: _Files, sims: np.ndarray) -> tuple[Table, set[str]]:
    """Rows ranked by mean cosine distance to their nearest rows; flagged above a modified z-score of
    OUTLIER_Z (median and median absolute deviation: robust to the outliers themselves)."""
    score = (1 - sims).mean(axis=1) if sims.shape[1] else np.zeros(len(sims))
    z = modified_z(score)
    table, flagged = Table(["rank", "path", "label", "score", "z", "flagged"]), set()
    for rank, r in enumerate(np.argsort(-score, kind="stable").tolist(), 1):
        for i in files.by_row[r]:
            table.rows.append([rank, files.paths[i], files.labels[i], float(score[r]), float(z[r]), bool(z[r] > OUTLIER_Z)])
            if z[r] > OUTLIER_Z:
                flagged.add(files.paths[i])
    return table, flagged


AUTO = "auto"
CANDIDATES = ("logreg", "linsvm")  # what `clf="auto"` compares (docs/audit.md: knn, then svm ranked planted errors worst)
AUTO_ALL_ROWS = 5_000  # beyond, `clf="auto"` takes logreg alone: linsvm's fits grow faster than the images (at
# 16,000 training rows one linsvm fit took 52-262 s, a logreg fit 15 s on average: docs/audit.md "Scale")
REFIT_ROUNDS = 2  # prune-and-refit rounds of the label check (docs/audit.md: planted errors found, by rounds)


def out_of_fold(x: np.ndarray, y: np.ndarray, clf: str = "logreg", cv: int = 5, seed: int = 0, n_jobs: int | None = None) -> np.ndarray:
    """Out-of-fold class probabilities of `clf` (featx's registry) on standardised features: each sample is
    predicted by the model of the fold that did not see it (`searched`, `refit`)."""
    return refit(searched(x, y, clf, cv, seed, n_jobs), x, y, None, cv, seed, n_jobs)


def searched(x: np.ndarray, y: np.ndarray, clf: str = "logreg", cv: int = 5, seed: int = 0,
             n_jobs: int | None = None) -> Pipeline:
    """The pipeline (standardisation, `clf`) with its regularisation picked by `featx fit`'s stratified
    `cv`-fold grid search (`classify._fitting.search`: svm on the RBF Gram computed once), not fitted.
    Classifiers without probabilities (linsvm, svm) are then Platt-scaled inside each fold of `refit`."""
    from threadpoolctl import threadpool_limits

    from featx.classify._classifiers import get_classifier, platt_scaled
    from featx.classify._fitting import search

    with threadpool_limits(limits=1, user_api="blas"):  # as in featx fit: parallel fits, not threads
        pipeline, _, _ = search(x, y, get_classifier(clf), None, cv, seed, n_jobs)  # its folds are _folds(cv, seed)
    if not hasattr(pipeline.named_steps["clf"], "predict_proba"):
        pipeline.steps[-1] = ("clf", platt_scaled(pipeline.named_steps["clf"], y, cv, seed))
    return pipeline


def _folds(cv: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(cv, shuffle=True, random_state=seed)


def refit(estimator: Pipeline, x: np.ndarray, y: np.ndarray, keep: np.ndarray | None, cv: int = 5, seed: int = 0, n_jobs: int | None = None) -> np.ndarray:
    """Out-of-fold probabilities of every sample from `estimator` refitted on each fold's training samples
    that are in `keep` (None: all; prune-and-refit: likely label errors left out do not teach their label)."""
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.calibration import CalibratedClassifierCV
    from threadpoolctl import threadpool_limits

    last = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    need = last.cv.get_n_splits() if isinstance(last, CalibratedClassifierCV) else 1  # a Platt-scaled one's inner folds
    n_classes = int(y.max()) + 1

    def fold(train, test):
        kept = train if keep is None else train[keep[train]]
        counts = np.bincount(y[kept], minlength=n_classes)[np.unique(y[train])]
        train = kept if counts.min() >= need else train  # never prune a class away, or below its inner folds
        return test, clone(estimator).fit(x[train], y[train]).predict_proba(x[test])

    probs = np.zeros((len(y), n_classes))
    with threadpool_limits(limits=1, user_api="blas"):
        for test, p in Parallel(n_jobs=n_jobs)(delayed(fold)(train, test) for train, test in _folds(cv, seed).split(x, y)):
            probs[test] = p
    return probs


def cv_score(y: np.ndarray, probs: np.ndarray) -> float:
    """featx fit's cross-validation score (balanced accuracy) of out-of-fold probabilities."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, probs.argmax(axis=1)))


@dataclass
class Choice:
    """The classifier whose out-of-fold probabilities rank the label errors, its CV score, and the scores
    of the others compared (`clf="auto"`)."""

    clf: str
    score: float
    probs: np.ndarray
    compared: dict[str, float]
    estimator: object = None  # the pipeline with the regularisation chosen, refitted by `prune_and_refit`
    pruned: list[int] = field(default_factory=list)  # images left out of the training folds, per refit round
    alone: str = "given by --clf"  # why no other was compared

    def describe(self) -> str:
        others = ", ".join(f"{name} {score:.3f}" for name, score in self.compared.items() if name != self.clf)
        how = f"best of {len(self.compared)} by CV balanced accuracy ({others})" if others else self.alone
        times = {1: "once", 2: "twice"}.get(len(self.pruned), f"{len(self.pruned)} times")
        refits = f"; refitted {times} without its likely label errors ({', then '.join(map(str, self.pruned))} images)" if self.pruned else ""
        return f"{self.clf}, CV balanced accuracy {self.score:.3f}; {how}{refits}"


def choose_classifier(x: np.ndarray, y: np.ndarray, clf: str = AUTO, cv: int = 5, seed: int = 0, n_jobs: int | None = None,
                      step: Callable[[str], None] = lambda line: None) -> Choice:
    """Out-of-fold probabilities of `clf`, or with `clf="auto"` of each of CANDIDATES (beyond AUTO_ALL_ROWS
    images, logreg alone), keeping the one of the highest CV balanced accuracy (ties: the first). Measured on
    planted errors (docs/audit.md): the best classifier differs between draws and data sets."""
    scores, best = {}, None
    names, alone = _compared(clf, len(y))
    for name in names:
        step(f"label errors: out-of-fold probabilities of {name} on {len(y)} images ({cv} folds)")
        try:
            estimator = searched(x, y, name, cv, seed, n_jobs)
        except BadInputError:
            if clf != AUTO:
                raise
            continue  # too few images to calibrate it: the others are compared
        probs = refit(estimator, x, y, None, cv, seed, n_jobs)
        scores[name] = cv_score(y, probs)
        if best is None or scores[name] > best.score:
            best = Choice(name, scores[name], probs, scores, estimator, alone=alone)
    return best


def _compared(clf: str, n_images: int) -> tuple[tuple[str, ...], str]:
    """The classifiers `choose_classifier` compares, and why one is alone when it is."""
    if clf != AUTO:
        return (clf,), "given by --clf"
    if n_images > AUTO_ALL_ROWS:
        return CANDIDATES[:1], f"auto takes it alone beyond {AUTO_ALL_ROWS:,} images (--clf forces another)"
    return CANDIDATES, "the others cannot be Platt-scaled with so few images per class"


def prune_and_refit(choice: Choice, x: np.ndarray, y: np.ndarray, rounds: int = REFIT_ROUNDS, cv: int = 5, seed: int = 0,
                    n_jobs: int | None = None, step: Callable[[str], None] = lambda line: None) -> Choice:
    """`rounds` times: leave cleanlab's likely label errors (prune by noise rate) out of every training fold,
    refit the chosen classifier and predict every image out of fold again. Errors that look alike (a batch
    filed under one wrong class) otherwise teach the models of the other folds their wrong label: measured on
    planted ELPV errors (docs/audit.md), `clf="auto"` ranked 6.6 of 15 in the top 15 and 10.6 in the top 45
    (mean of 5 draws), after two rounds 9.0 and 11.6 (300 px GeM features: 5.6 / 12.4, then 6.6 / 13.2)."""
    from cleanlab.filter import find_label_issues

    for _ in range(rounds):
        keep = ~find_label_issues(y, choice.probs, filter_by="prune_by_noise_rate")
        step(f"label errors: {choice.clf} refitted without {int((~keep).sum())} likely errors ({cv} folds)")
        choice.probs = refit(choice.estimator, x, y, keep, cv, seed, n_jobs)
        choice.pruned.append(int((~keep).sum()))
    return choice


def _steps(progress: bool) -> Callable[[str], None]:
    """A line on stderr per step of an audit, with the seconds since it started (none unless `progress`)."""
    start = time.perf_counter()
    if not progress:
        return lambda line: None
    return lambda line: print(f"audit {time.perf_counter() - start:6.1f} s: {line}", file=sys.stderr, flush=True)


def _label_errors(files: _Files, clf: str, cv: int, seed: int, n_jobs, step: Callable[[str], None],
                  refit_rounds: int) -> tuple[Table | None, set[str], int, list[str]]:
    """Labelled rows ranked by cleanlab's label quality (self-confidence of the out-of-fold probability of
    the given label adjusted for class imbalance, lowest first) after `refit_rounds` of `prune_and_refit`; flagged: cleanlab's issues
    (confident learning, prune by noise rate)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    row_labels = _row_labels(files)
    counts = Counter(label for label in row_labels if label)
    classes = sorted(c for c, n in counts.items() if n >= 2)
    if len(classes) < 2:
        return None, set(), 0, ["label errors need at least two classes with two or more images each"]
    use = np.array([r for r, label in enumerate(row_labels) if label in classes])
    y = np.array([classes.index(row_labels[r]) for r in use])
    folds = min(cv, int(np.bincount(y).min()))
    choice = choose_classifier(files.features[use], y, clf, folds, seed, n_jobs, step)
    choice = prune_and_refit(choice, files.features[use], y, refit_rounds, folds, seed, n_jobs, step)
    probs = choice.probs
    # adjusted: each class's mean self-confidence subtracted first, else a small class's images all rank high
    # (ELPV with 50 planted errors: 48% of them in the top 50 without, 60% with; docs/audit.md)
    quality = get_label_quality_scores(y, probs, adjust_pred_probs=True)
    issue = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    table = Table(["rank", "path", "label", "suggested", "p_label", "quality", "flagged"])
    flagged = set()
    for rank, s in enumerate(np.argsort(quality, kind="stable").tolist(), 1):
        for i in files.by_row[int(use[s])]:
            table.rows.append([rank, files.paths[i], files.labels[i], classes[int(probs[s].argmax())],
                               float(probs[s, y[s]]), float(quality[s]), bool(issue[s])])
            if issue[s]:
                flagged.add(files.paths[i])
    left_out = len(row_labels) - len(use)
    notes = [f"label errors ranked by {choice.describe()}"]
    notes += [f"{left_out} images left out of the label check (unlabelled, conflicting or in a class of one)"] if left_out else []
    return table, flagged, int(issue.sum()), notes


def fit_split(store: FeatureStore, cv: int = 5, test_size: float = 0.2, seed: int = 0) -> dict[int, str]:
    """Store row -> "train" or "test" exactly as `featx fit` with these options splits the store."""
    from featx.classify._fitting import samples

    s = samples(store, cv, test_size, seed, None)
    return {**{int(r): "train" for r in s.rows[s.train]}, **{int(r): "test" for r in s.rows[s.test]}}


def _file_splits(store: FeatureStore, files: _Files, split_csv, test_size: float, seed: int, notes: list[str]) -> list[str]:
    """The split of each file: from `split_csv`, else featx fit's own split of the store, else ""."""
    if split_csv is not None:
        from featx.images._inputs import read_split

        split = read_split(split_csv)
        return [split.get(p, "") for p in files.paths]
    if not any(files.labels):
        return [""] * len(files.paths)
    try:
        of_row = fit_split(store, cv=2, test_size=test_size, seed=seed)
    except BadInputError as exc:
        notes.append(f"featx fit's split not reproduced ({exc})")
        return [""] * len(files.paths)
    return [of_row.get(int(files.rows[r]), "") for r in files.row_of_file.tolist()]


def audit(
    store: str | os.PathLike,
    *,
    data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    threshold: float | None = None,
    neighbours: int = NEIGHBOURS,
    clf: str = AUTO,
    cv: int = 5,
    split_csv: str | os.PathLike | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    drop: Sequence[str] = DEFAULT_DROP,
    refit_rounds: int = REFIT_ROUNDS,
    n_jobs: int | None = None,
    wait: bool = False,
    progress: bool = True,
    pixels: bool = True,
) -> Audit:
    """Audit the files of `store` (only those found in `data`, when given; class folders or CSVs as for
    `featx extract`). Reads the store (and the files of near-duplicate candidates, `pixels`). Near duplicates are marked when they span classes or a split:
    `split_csv` (path,split), else the train/test split `featx fit --test-size --seed` makes of the store.
    `threshold`: cosine similarity from which images are near duplicates; None: `near_threshold`.
    `clf`: the classifier whose out-of-fold probabilities rank label errors; "auto": the best of CANDIDATES
    by CV balanced accuracy (`choose_classifier`), refitted `refit_rounds` times without its likely label
    errors (`prune_and_refit`). `drop` names the findings whose files clean.csv leaves out (KINDS). As `featx fit`: files no longer on
    disk are left out, and a store being written gives its committed rows (`wait`: wait for the writer).
    `progress`: a line on stderr as each step starts. `pixels`: check candidate near-duplicate pairs on the
    files' pixels (docs/audit.md "Copies"; False: embeddings and pHashes only, faster)."""
    from featx.features._neighbours import nearest

    _check_parameters(drop, clf, threshold=threshold, neighbours=neighbours, cv=cv, test_size=test_size, refit_rounds=refit_rounds)
    step = _steps(progress)
    step(f"reading {store}")
    with FeatureStore.open(store, wait=wait, warn=True) as opened:
        files, notes = _read(opened, data)
        split = _file_splits(opened, files, split_csv, test_size, seed, notes)
    labelled = any(files.labels)
    if labelled:
        try:
            import cleanlab  # noqa: F401
        except ImportError:
            raise FeatxError('finding label errors needs cleanlab: pip install "featx[audit]"') from None
    step(f"{neighbours} nearest neighbours of {len(files.rows)} images ({len(files.paths)} files)")
    sims, index = nearest(files.features, neighbours)
    step("duplicates, near duplicates" + (" (candidate pairs checked on their pixels)" if pixels else "") + " and outliers")
    tables, dropped, counts = {}, {}, {}
    tables["exact_duplicates"], dropped["duplicates"], conflicts = _exact_duplicates(files)
    counts["exact duplicate groups"] = len({row[0] for row in tables["exact_duplicates"].rows})
    counts["exact duplicate groups with conflicting labels"] = conflicts
    if threshold is None:
        threshold = near_threshold(sims[:, 0] if sims.shape[1] else sims[:, :0].ravel())
    tables["near_duplicates"], dropped["near-duplicates"], near = _near_duplicates(files, sims, index, threshold, split, pixels=pixels)
    counts["near-duplicate threshold (cosine)"] = round(threshold, 4)
    counts["near-duplicate pairs by embedding"] = near["embedding_pairs"]
    if near["hash_threshold"] is not None:
        counts["near-duplicate pHash threshold (bits)"] = near["hash_threshold"]
        counts["near-duplicate pairs by pHash"] = near["hash_pairs"]
    if near["unreadable"] is not None:
        counts["near-duplicate pairs by pixels"] = near["pixel_pairs"]
        counts["near-duplicate pairs refuted by pixels"] = near["refuted"]
    if near["unreadable"]:
        notes.append(f"{near['unreadable']} images could not be read as they were extracted (changed or unreadable): "
                     "their pairs are judged by embedding and pHash only")
    counts["near-duplicate clusters"] = near["clusters"]
    counts["near-duplicate clusters spanning classes"] = near["spans_classes"]
    counts["near-duplicate clusters spanning the split (leaks)"] = near["spans_split"]
    tables["outliers"], dropped["outliers"] = _outliers(files, sims)
    counts["outlier files"] = len(dropped["outliers"])
    for name, (table, paths) in _image_findings(files).items():
        tables[name], dropped[name.replace("_", "-")] = table, paths
        counts[f"{name.replace('_', ' ')} images"] = len(paths)
    dropped["label-errors"] = set()
    if labelled:
        table, dropped["label-errors"], issues, label_notes = _label_errors(files, clf, cv, seed, n_jobs, step, refit_rounds)
        if table is not None:
            tables["label_errors"] = table
            counts["likely label errors (images)"] = issues
        notes += label_notes
    else:
        notes.append("no labels in the store: no label errors or class conflicts to find")
    leave_out = set().union(*(dropped.get(kind, set()) for kind in drop))
    clean = [(p, label) for p, label in zip(files.paths, files.labels) if p not in leave_out]
    step("done")
    classes = dict(sorted(Counter(label for label in files.labels if label).items()))
    return Audit(str(store), len(files.paths), len(files.rows), tables, dropped, clean, counts, notes, classes, files.paths, files.labels)

"""`featx audit`: duplicates, leaks, outliers and likely label errors, from a store's keys and embeddings.

Reads the store only (nothing is extracted, moved or rewritten). A store row is one image content, so
exact duplicates are the rows that several paths point at. The other findings work on rows:
- near duplicates (`_duplicates`): embeddings, pHashes and pixels; a cluster is marked when it spans classes
  or a split (a train/test leak);
- outliers and image findings (`_findings`): kNN distance; statistics measured at extraction;
- likely label errors (`_labels`): out-of-fold probabilities of the classifier cross-validation shows best
  (or the one given), ranked by cleanlab's confident learning.
This module reads the files (`_files`), runs each finding, and gathers them into an `Audit`.
"""
from __future__ import annotations

import math
import numbers
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from featx.auditing._duplicates import exact_duplicates, near_duplicates, near_threshold
from featx.auditing._files import Files, Table, read_files
from featx.auditing._findings import IMAGE_FINDINGS, image_findings, outliers
from featx.auditing._labels import AUTO, REFIT_ROUNDS, label_errors
from featx.errors import BadInputError, FeatxError, ParameterError, StoreWarning, UnknownNameError
from featx.features._store import FeatureStore

NEIGHBOURS = 10
KINDS = ("duplicates", "near-duplicates", "outliers", "label-errors", *(f.replace("_", "-") for f in IMAGE_FINDINGS))
DEFAULT_DROP = ("duplicates", "near-duplicates", "label-errors")
# the numbers `audit` accepts, (low, high, low excluded, high excluded); featx audit's options are made from them
RANGES = {
    "threshold": (0.0, 1.0, True, False),  # a cosine similarity
    "neighbours": (1, None, False, False),
    "refit_rounds": (0, None, False, False),
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
        kind = numbers.Integral if isinstance(low, int) else numbers.Real
        if not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value):  # NaN passed: no duplicates
            raise ParameterError(f"audit: {name}={value!r} is not {'an integer' if kind is numbers.Integral else 'a finite number'}")
        if value < low or (low_open and value == low) or (high is not None and (value > high or (high_open and value == high))):
            interval = f"{'(' if low_open else '['}{low}, {'inf' if high is None else high}{')' if high_open or high is None else ']'}"
            raise ParameterError(f"audit: {name}={value!r} is not in {interval}")


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
        if n_large == n_small:
            return f"1.0 (every class {n_large})"
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
        """Write each table as <name>.csv, clean.csv, findings.csv (each flagged file and its finding, in KINDS'
        order: `read_findings`) and audit.html (thumbnails) into `out`, then manifest.json (which run wrote them,
        their sha256: see featx.outputs.check_manifest); returns the paths. clean.csv and findings.csv hold
        absolute paths: they are read from any folder."""
        from featx.auditing._page import write_page
        from featx.outputs import output_set

        out = Path(out)
        flagged = [[os.path.abspath(p), kind] for kind in KINDS for p in sorted(self.dropped.get(kind, ()))]
        tables = {**self.tables, "clean": Table(["path", "label"], [[os.path.abspath(p), label] for p, label in self.clean]),
                  "findings": Table(["path", "finding"], flagged)}
        with output_set(out / "manifest.json") as written:
            for name, table in tables.items():
                table.write(out / f"{name}.csv")
                written.append(out / f"{name}.csv")
            written.append(write_page(self, out / "audit.html"))
        return [*written, out / "manifest.json"]


def read_findings(folder: str | os.PathLike) -> dict[str, str]:
    """path (as `display_path` gives it) -> its first finding (in KINDS' order) in a `featx audit --out` folder."""
    import csv

    from featx.images._inputs import CSV_TEXT, display_path

    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"no audit folder at {folder}: run featx audit STORE --out {folder} first")
    if not (folder / "findings.csv").is_file():
        raise BadInputError(f"{folder} has no findings.csv (an audit by an earlier featx): run featx audit STORE "
                            f"--out {folder} again")
    found: dict[str, str] = {}
    with open(folder / "findings.csv", newline="", **CSV_TEXT) as handle:
        for row in csv.DictReader(handle):
            found.setdefault(display_path(row["path"]), row["finding"])
    return found


def _steps(progress: bool) -> Callable[[str], None]:
    """A line on stderr per step of an audit, with the seconds since it started (none unless `progress`)."""
    start = time.perf_counter()
    if not progress:
        return lambda line: None
    return lambda line: print(f"audit {time.perf_counter() - start:6.1f} s: {line}", file=sys.stderr, flush=True)


def fit_split(store: FeatureStore, cv: int = 5, test_size: float = 0.2, seed: int = 0) -> dict[int, str]:
    """Store row -> "train" or "test" exactly as `featx fit` with these options splits the store."""
    from featx.classify._fitting import samples

    with warnings.catch_warnings():  # the files it leaves out (gone, NaN rows) are the audit's notes already
        warnings.simplefilter("ignore", StoreWarning)
        s = samples(store, cv, test_size, seed, None)
    return {**{int(r): "train" for r in s.rows[s.train]}, **{int(r): "test" for r in s.rows[s.test]}}


def _file_splits(store: FeatureStore, files: Files, split_csv, cv: int, test_size: float, seed: int,
                 notes: list[str]) -> list[str]:
    """The split of each file: from `split_csv`, else featx fit's own split of the store, else ""."""
    if split_csv is not None:
        from featx.images._inputs import splits_of

        return splits_of(split_csv, files.paths, store.path, store.classes())
    if not any(files.labels):
        return [""] * len(files.paths)
    try:
        of_row = fit_split(store, cv=cv, test_size=test_size, seed=seed)
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
    `threshold`: cosine similarity from which images are near duplicates; None: `_duplicates.near_threshold`.
    `clf`: the classifier whose out-of-fold probabilities rank label errors; "auto": the best of `_labels.CANDIDATES`
    by CV balanced accuracy (`_labels.choose_classifier`), refitted `refit_rounds` times without its likely label
    errors (`_labels.prune_and_refit`). `drop` names the findings whose files clean.csv leaves out (KINDS). As `featx fit`: files no longer on
    disk are left out, and a store being written gives its committed rows (`wait`: wait for the writer).
    `progress`: a line on stderr as each step starts. `pixels`: check candidate near-duplicate pairs on the
    files' pixels (docs/audit.md "Copies"; False: embeddings and pHashes only, faster)."""
    from featx.classify._fitting import check_split
    from featx.features._neighbours import nearest

    check_split(cv, test_size, seed, n_jobs)
    _check_parameters(drop, clf, threshold=threshold, neighbours=neighbours, refit_rounds=refit_rounds)
    step = _steps(progress)
    step(f"reading {store}")
    with FeatureStore.open(store, wait=wait, warn=True) as opened:
        files, notes = read_files(opened, data)
        split = _file_splits(opened, files, split_csv, cv, test_size, seed, notes)
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
    tables["exact_duplicates"], dropped["duplicates"], conflicts = exact_duplicates(files)
    counts["exact duplicate groups"] = len({row[0] for row in tables["exact_duplicates"].rows})
    counts["exact duplicate groups with conflicting labels"] = conflicts
    if threshold is None:
        threshold = near_threshold(sims[:, 0] if sims.shape[1] else sims[:, :0].ravel())
    tables["near_duplicates"], dropped["near-duplicates"], near = near_duplicates(files, sims, index, threshold, split, pixels=pixels)
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
    tables["outliers"], dropped["outliers"] = outliers(files, sims)
    counts["outlier files"] = len(dropped["outliers"])
    for name, (table, paths) in image_findings(files).items():
        tables[name], dropped[name.replace("_", "-")] = table, paths
        counts[f"{name.replace('_', ' ')} images"] = len(paths)
    dropped["label-errors"] = set()
    if labelled:
        table, dropped["label-errors"], issues, label_notes = label_errors(files, clf, cv, seed, n_jobs, step, refit_rounds)
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

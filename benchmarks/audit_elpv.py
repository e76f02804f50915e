"""`featx audit` on all 2,624 ELPV cells, then on ELPV with planted errors (docs/audit.md).

1. The ELPV folder as published: how many of each finding, and the share of likely label errors per class
   (the two middle classes, 1/3 and 2/3 defect probability, against the extreme ones).
2. Planted: --errors clearly defective cells (see clearly_defective) filed under functional/, and for
   --copies other cells a JPEG q85 re-encoded copy and a 2% crop, each filed under another class than its
   source. Prints the recall of the planted label errors in the top k of the ranking (k = 1x, 2x, 5x the
   number planted) and among cleanlab's flagged issues, and the recall of the planted near duplicates
   (copy in the same cluster as its source), and how many of their clusters are marked as spanning classes.

The folders hold symbolic links to the installed ELPV files (the copies are real files). Features of the
cells are read from --base-store when given (a store of write_elpv_folder's images, default backbone), so
only the copies are extracted.

    python benchmarks/audit_elpv.py [--base-store STORE] [--work DIR] [--errors 50] [--copies 50] [--clf auto,svm]
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

import featx
from featx.auditing._audit import audit
from featx.datasets import load_elpv


def dark_area(path: str) -> float:
    """Share of a cell's pixels (a 15 px border left out) darker than half its median: inactive areas."""
    pixels = np.asarray(Image.open(path), dtype=np.float32)[15:-15, 15:-15]
    return float((pixels < 0.5 * np.median(pixels)).mean())


def clearly_defective(elpv) -> np.ndarray:
    """Indices of cells defective beyond doubt, by a rule on pixels (no model): defect probability 1 and a
    dark (inactive) area larger than that of 99% of the functional cells of the same type (mono, poly)."""
    dark = np.array([dark_area(f) for f in elpv.filenames])
    clear = np.zeros(len(dark), dtype=bool)
    for kind in np.unique(elpv.cell_type):
        same = elpv.cell_type == kind
        clear |= same & (elpv.target == 3) & (dark > np.percentile(dark[same & (elpv.target == 0)], 99))
    return np.flatnonzero(clear)


def link_folder(root: Path, placement: dict[int, str], filenames) -> None:
    """root/<class>/<file name> -> the installed ELPV file, for each cell index -> class."""
    for i, name in placement.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        target = root / name / Path(filenames[i]).name
        if not target.exists():
            os.symlink(filenames[i], target)


def copies(image: Image.Image) -> dict[str, bytes]:
    """A JPEG q85 re-encoding and a 2% crop (1% off each edge, PNG) of an image, as file bytes."""
    w, h = image.size
    reencoded, cropped = io.BytesIO(), io.BytesIO()
    image.save(reencoded, "JPEG", quality=85)
    image.crop((round(0.01 * w), round(0.01 * h), w - round(0.01 * w), h - round(0.01 * h))).save(cropped, "PNG")
    return {"q85.jpg": reencoded.getvalue(), "crop2.png": cropped.getvalue()}


def prepared_store(base: str | None, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store.h5"
    if base and not store.exists():
        shutil.copyfile(base, store)
    return store


def report_counts(result, classes) -> None:
    print(result.summary())
    table = result.tables.get("label_errors")
    if table is None:
        return
    size = Counter(r[2] for r in table.rows)
    flagged = Counter(r[2] for r in table.rows if r[6])
    print("likely label errors per class (flagged / images):")
    for name in classes:
        print(f"  {name:20s} {flagged[name]:4d} / {size[name]:4d} = {flagged[name] / max(size[name], 1):6.1%}")
    middle = sum(flagged[c] for c in classes[1:3]) / sum(size[c] for c in classes[1:3])
    extreme = sum(flagged[c] for c in (classes[0], classes[3])) / sum(size[c] for c in (classes[0], classes[3]))
    print(f"  middle classes {middle:.1%}, extreme classes {extreme:.1%}, ratio {middle / extreme:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-store", help="Store of the ELPV cells (featx extract of write_elpv_folder).")
    parser.add_argument("--work", help="Scratch folder (default: a temporary one).")
    parser.add_argument("--errors", type=int, default=50)
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--html", action="store_true", help="Also write each audit's folder (CSVs, page) under --work.")
    parser.add_argument("--clf", default="auto", help="Comma-separated: the planted folder is audited with each "
                        "(the published one with the first).")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="featx-audit-elpv-"))
    elpv, rng = load_elpv(), np.random.default_rng(args.seed)
    classes = elpv.target_names
    store = prepared_store(args.base_store, work)

    published = work / "published"
    link_folder(published, {i: classes[t] for i, t in enumerate(elpv.target)}, elpv.filenames)
    print(featx.extract(published, store=store, progress=False).summary())
    start = time.perf_counter()
    clfs = args.clf.split(",")
    result = audit(store, data=published, clf=clfs[0], n_jobs=args.n_jobs)
    print(f"\n== ELPV as published ({time.perf_counter() - start:.0f} s)")
    report_counts(result, classes)
    if args.html:
        result.write(work / "audit-published")

    planted = work / "planted"
    placement = {i: classes[t] for i, t in enumerate(elpv.target)}
    moved = rng.choice(clearly_defective(elpv), args.errors, replace=False)
    placement.update({int(i): classes[0] for i in moved})
    link_folder(planted, placement, elpv.filenames)
    others = rng.choice(np.setdiff1d(np.arange(len(elpv.target)), moved), args.copies, replace=False)
    copied = {}  # copy path -> source path
    for i in others.tolist():
        source = planted / placement[i] / Path(elpv.filenames[i]).name
        for suffix, data in copies(Image.open(elpv.filenames[i])).items():
            other = classes[(elpv.target[i] + rng.integers(1, len(classes))) % len(classes)]
            path = planted / other / f"{Path(elpv.filenames[i]).stem}-{suffix}"
            path.write_bytes(data)
            copied[str(path)] = str(source)
    print(featx.extract(planted, store=store, progress=False).summary())
    for clf in clfs:
        start = time.perf_counter()
        result = audit(store, data=planted, clf=clf, n_jobs=args.n_jobs)
        print(f"\n== ELPV with {args.errors} defective cells filed as functional and {len(copied)} copies "
              f"of {args.copies} cells under other classes, --clf {clf} ({time.perf_counter() - start:.0f} s)")
        report_counts(result, classes)
        if args.html:
            result.write(work / f"audit-planted-{clf}")
        report_planted(result, planted, classes, [elpv.filenames[i] for i in moved], copied)


def report_planted(result, planted: Path, classes: list[str], moved: list[str], copied: dict[str, str]) -> None:
    """Recall of the planted label errors in the ranking's top k and among cleanlab's issues, and of the copies."""
    wrong = {os.path.abspath(planted / classes[0] / Path(path).name) for path in moved}
    ranked = [os.path.abspath(r[1]) for r in result.tables["label_errors"].rows]
    flagged = {os.path.abspath(r[1]) for r in result.tables["label_errors"].rows if r[6]}
    for k in (len(wrong), 2 * len(wrong), 5 * len(wrong)):
        print(f"planted label errors in the top {k}: {len(wrong & set(ranked[:k])) / len(wrong):.1%}")
    print(f"planted label errors flagged by cleanlab: {len(wrong & flagged) / len(wrong):.1%} "
          f"({len(flagged)} flagged in all)")
    cluster = {os.path.abspath(r[1]): (r[0], r[7]) for r in result.tables["near_duplicates"].rows}
    together = [c for c, s in copied.items() if os.path.abspath(c) in cluster
                and cluster[os.path.abspath(c)][0] == cluster.get(os.path.abspath(s), (None,))[0]]
    print(f"planted near duplicates in their source's cluster: {len(together)} / {len(copied)} = {len(together) / len(copied):.1%}")
    print(f"  of which in a cluster marked as spanning classes: {sum(cluster[os.path.abspath(c)][1] for c in together)}")


if __name__ == "__main__":
    main()

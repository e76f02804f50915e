"""The HTML page of `featx audit`: the counts, then a thumbnail gallery of the first findings of each kind."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from featx.reports._html import GalleryItem, gallery, metrics_table, page, paragraph, section, write

SHOWN = 48  # files shown per finding; the CSVs hold them all


def _records(table) -> list[dict]:
    return [dict(zip(table.header, row)) for row in table.rows]


def _label(record: dict) -> str:
    return f"label: {record['label'] or '(none)'}"


def _exact(records: list[dict]) -> list[GalleryItem]:
    records = sorted(records, key=lambda r: (not r["conflict"], r["group"]))  # conflicts first
    return [GalleryItem(r["path"], (f"group {r['group']}" + (" · labels differ" if r["conflict"] else ""), _label(r)))
            for r in records]


def _near(records: list[dict]) -> list[GalleryItem]:
    records = sorted(records, key=lambda r: (not (r["spans_classes"] or r["spans_split"]), r["cluster"]))
    return [GalleryItem(r["path"], (
        f"cluster {r['cluster']}" + (" · spans classes" if r["spans_classes"] else "") + (" · spans split" if r["spans_split"] else ""),
        _label(r) + (f" · {r['split']}" if r["split"] else ""), f"similarity {r['similarity']:.4f}")) for r in records]


def _outliers(records: list[dict]) -> list[GalleryItem]:
    return [GalleryItem(r["path"], (f"rank {r['rank']} · score {r['score']:.3f} · z {r['z']:.1f}", _label(r))) for r in records]


def _label_errors(records: list[dict]) -> list[GalleryItem]:
    return [GalleryItem(r["path"], (f"rank {r['rank']}" + (" · flagged" if r["flagged"] else ""),
                                         f"{r['label']} → {r['suggested']}?", f"p(label) {r['p_label']:.3f}")) for r in records]


SECTIONS = {  # table name -> (title, what it shows, gallery items)
    "exact_duplicates": ("Exact duplicates", "Files with identical bytes; groups whose labels differ first.", _exact),
    "near_duplicates": ("Near duplicates", "Clusters of images at or above the cosine-similarity threshold; clusters "
                        "spanning classes or the train/test split (leaks) first.", _near),
    "outliers": ("Outliers", "Images farthest from their nearest neighbours (mean cosine distance), most isolated first.", _outliers),
    "label_errors": ("Likely label errors", "Out-of-fold probability of the given label, lowest first; flagged: "
                     "cleanlab's confident-learning issues.", _label_errors),
}


def write_page(audit: Any, path: Path) -> Path:
    """Write `audit` (featx.auditing._audit.Audit) as one self-contained page at `path`."""
    parts = [section("Summary", metrics_table({"files": audit.n_files, "unique images": audit.n_rows, **audit.counts,
                                                        "kept in clean.csv": len(audit.clean)}),
                          *(paragraph(note) for note in audit.notes))]
    for name, (title, what, items) in SECTIONS.items():
        if name not in audit.tables:
            continue
        records = _records(audit.tables[name])
        shown = items(records)[:SHOWN]
        body = gallery(shown, path.parent) if shown else paragraph("None found.")
        more = f" Showing {len(shown)} of {len(records)} rows; all are in {name}.csv." if len(records) > len(shown) else ""
        parts.append(section(title, paragraph(what + more), body))
    return write(path, page("featx audit", parts, subtitle=f"store {audit.store}"))

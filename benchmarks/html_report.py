"""Time to write a fit report for a large test part: the HTML page (galleries, thumbnails, embedded figures)
against the JSON + PNG figures alone, in the same run.

    python benchmarks/html_report.py [--rows 100000]

Synthetic outcomes (random true/predicted classes and scores) over real ELPV files, so thumbnails are made
from real 300 x 300 PNGs; the figures map 3,000 points of 1,792 features, as a fit of the demo's store would.
Prints seconds for both and their ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from featx.datasets import load_elpv
from featx.reports._report import Outcomes, Report, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="Test images in the report.")
    args = parser.parse_args()
    data, rng, n = load_elpv(), np.random.default_rng(0), args.rows
    classes = list(data.target_names)
    paths = list(data.filenames[rng.integers(0, len(data.filenames), n)])
    true = rng.integers(0, len(classes), n)
    predicted = np.where(rng.random(n) < 0.8, true, rng.integers(0, len(classes), n))
    outcomes = Outcomes.of(paths, true, predicted, rng.random((n, len(classes))), "probability")
    sample = (rng.normal(size=(3000, 1792)).astype(np.float32), rng.integers(0, len(classes), 3000))
    report = Report(classes, metrics(true, predicted, classes), {"classifier": "synthetic"}, sample, outcomes,
                    [(p, "synthetic failure") for p in paths[:1000]])
    report.figures()  # imports and first draw, outside the timings
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        Report(report.classes, report.metrics, report.details, sample).save(Path(folder) / "plain")
        start_html = time.perf_counter()
        written = report.save(Path(folder) / "full")
        end = time.perf_counter()
        size = written[0].stat().st_size
    plain, full = start_html - start, end - start_html
    print(f"{n:,} rows: JSON + PNG {plain:.2f} s, with the HTML page {full:.2f} s ({full / plain:.2f}x), "
          f"page {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

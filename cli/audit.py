"""`featx audit`."""
from __future__ import annotations

import click

from featx.auditing._audit import DEFAULT_DROP, KINDS, NEIGHBOURS, RANGES
from featx.auditing._labels import AUTO, AUTO_ALL_ROWS, CANDIDATES, REFIT_ROUNDS
from featx.classify._classifiers import CLASSIFIERS

from . import options
from .errors import user_errors
from .options import number_range, pick_store


def _kinds(ctx, param, value: str) -> tuple[str, ...]:
    """The comma-separated list as names (featx.audit checks them); "none": none."""
    return tuple(k.strip() for k in value.split(",") if k.strip() and k.strip() != "none")


@click.command()
@click.argument("store", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False), default="featx-audit", show_default=True,
              help="Folder for the CSVs, clean.csv and audit.html.")
@click.option("--data", "-d", multiple=True, type=click.Path(),
              help="Audit only the store's files found here (folders or CSVs, as for featx extract); repeatable.")
@click.option("--threshold", type=number_range(*RANGES["threshold"]), metavar="COS",
              help="Cosine similarity from which two images are near duplicates; default: 0.90, raised for data sets "
                   "of very alike images (docs/audit.md).")
@click.option("--neighbours", "-k", type=number_range(*RANGES["neighbours"]), default=NEIGHBOURS, show_default=True,
              help="Nearest neighbours per image (near duplicates, outlier score).")
@click.option("--split-csv", type=click.Path(dir_okay=False, exists=True),
              help="CSV of path,split: near duplicates across splits are leaks (default: featx fit's own split).")
@options.test_size(0.2, "featx fit's split to check for leaks: its --test-size.")
@options.seed("featx fit's --seed; also the folds of the label check.")
@click.option("--clf", type=click.Choice([AUTO, *CLASSIFIERS]), default=AUTO, show_default=True,
              help=f"Classifier whose out-of-fold probabilities rank the label errors; {AUTO}: the best of "
                   f"{', '.join(CANDIDATES)} by cross-validation ({CANDIDATES[0]} alone beyond {AUTO_ALL_ROWS:,} images).")
@options.cv("Folds for the out-of-fold probabilities (and featx fit's, for its split).")
@click.option("--refit-rounds", type=number_range(*RANGES["refit_rounds"]), default=REFIT_ROUNDS, show_default=True,
              help="Times the classifier is refitted without the likely label errors found, before ranking (0: none).")
@options.n_jobs
@click.option("--drop", default=",".join(DEFAULT_DROP), show_default=True, callback=_kinds,
              help=f"Findings whose files clean.csv leaves out, comma-separated: {', '.join(KINDS)}, or none.")
@click.option("--pixels/--no-pixels", default=True, show_default=True,
              help="Check candidate near duplicates on the files' pixels (finds crops and re-encodings the embedding "
                   "misses, refutes look-alikes; ELPV: 2,624 cells in about 46 CPU seconds). --no-pixels: faster.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@click.option("--wait", is_flag=True, help="On a store another process is writing, wait for it to finish (default: use the rows committed so far).")
@user_errors
def audit(store, out, data, threshold, neighbours, split_csv, test_size, seed, clf, cv, refit_rounds, n_jobs, drop, pixels, quiet, wait):
    """Find exact and near duplicates, train/test leaks, outliers and likely label errors in a store.

    Works from the store (no extraction; the files are read again only to compare near duplicates' pixels)
    and changes nothing: writes CSVs of the findings, an HTML
    page with thumbnails, and clean.csv (path,label without the dropped findings) for featx extract.
    """
    from featx.auditing._audit import audit as run
    from featx.outputs import check_output

    check_output(out, "--out", folder=True, reads=[*data, *([split_csv] if split_csv else [])])
    path = pick_store(store, "featx audit STORE")
    click.echo(f"store: {path}", err=True)
    result = run(path, data=list(data) or None, threshold=threshold, neighbours=neighbours, clf=clf,
                 cv=cv, split_csv=split_csv, test_size=test_size, seed=seed, drop=drop, refit_rounds=refit_rounds, n_jobs=n_jobs, wait=wait,
                 progress=not quiet, pixels=pixels)
    written = result.write(out)
    click.echo(result.summary())
    click.echo(f"written: {', '.join(map(str, written))}")

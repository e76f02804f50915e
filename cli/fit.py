"""`featx fit`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from featx.classify._classifiers import CLASSIFIERS
from featx.names import CLASS_WEIGHTS, MODEL_FORMATS

from .errors import user_errors


def stores_in(folder: str | os.PathLike) -> list[Path]:
    """Feature stores (*.h5) in a folder, newest first."""
    folder = Path(folder)
    return sorted(folder.glob("*.h5"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []


def pick_store(store: str | None, option: str = "--features STORE") -> Path:
    """The store given, else the only store in the cache folder; several: ask (on a terminal) or list them.
    `option`: how the command names a store, for the messages."""
    from featx.errors import FeatxError
    from featx.features._space import cache_dir

    if store:
        return Path(store)
    found = stores_in(cache_dir())
    if not found:
        raise FeatxError(f"no feature store in {cache_dir()}/: run featx extract first, or pass {option}")
    if len(found) == 1:
        return found[0]
    listing = f"several feature stores in {cache_dir()}/ (newest first):\n" + "\n".join(
        f"  {i}. {path}" for i, path in enumerate(found, 1)
    )
    if not sys.stdin.isatty():
        raise FeatxError(f"{listing}\nchoose one with {option}")
    click.echo(listing, err=True)
    return found[click.prompt("which one", type=click.IntRange(1, len(found)), default=1, err=True) - 1]


def save_fitted(bundle, report, out: Path, fmt: str = "skops", tsne: bool = False) -> list[Path]:
    """Save the model as `out`, its report files beside it, then OUT.manifest.json naming them all (the run
    and their sha256: featx.outputs.check_manifest); returns the report's files, the HTML page first."""
    from featx.outputs import manifest_path, output_set
    from featx.reports._report import report_prefix

    with output_set(manifest_path(out)) as files:
        files.append(bundle.save(out, fmt))
        written = report.save(report_prefix(out), tsne=tsne)
        files += written
    return written


@click.command()
@click.option("--features", "-f", "store", type=click.Path(dir_okay=False), help="Feature store; default: the one in the cache folder.")
@click.option("--clf", type=click.Choice(list(CLASSIFIERS)), default="logreg", show_default=True, help="Classifier.")
@click.option("--class-weight", type=click.Choice(CLASS_WEIGHTS), help="Weight classes inversely to their frequency.")
@click.option("--cv", type=click.IntRange(min=2), default=5, show_default=True, help="Cross-validation folds for model selection.")
@click.option("--n-jobs", "-j", type=int, help="Parallel cross-validation fits (-1: all cores).")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Held-out test fraction, never seen during model selection.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="sgd: passes over the store.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Model file; default: featx-<clf>.skops (.joblib).")
@click.option("--format", "fmt", type=click.Choice(MODEL_FORMATS), default="skops", show_default=True,
              help="skops loads safely; joblib is a pickle, which predict and evaluate load only with --unsafe-pickle.")
@click.option("--tsne", is_flag=True, help="Also draw a t-SNE map of the features (slower than PCA).")
@click.option("--wait", is_flag=True, help="On a store another process is writing, wait for it to finish (default: use the rows committed so far).")
@user_errors
def fit(store, clf, class_weight, cv, n_jobs, test_size, seed, epochs, out, fmt, tsne, wait):
    """Train a classifier on the features of a store (from featx extract) and save it.

    Standardises the features, picks the regularisation by stratified cross-validation and reports on a
    held-out test split: a table here, and next to the model an HTML report (metrics, confusion matrix,
    feature map, the most confident mistakes and correct examples as thumbnails), JSON and the figures as PNG.
    """
    from featx.classify._fitting import fit as train
    from featx.outputs import check_output

    out = check_output(out or f"featx-{clf}.{fmt}", "--out")  # the report goes beside it
    path = pick_store(store)
    click.echo(f"store: {path}", err=True)
    bundle, report = train(path, clf, cv=cv, test_size=test_size, seed=seed, class_weight=class_weight,
                           n_jobs=n_jobs, epochs=epochs, wait=wait)
    written = save_fitted(bundle, report, out, fmt, tsne=tsne)
    click.echo(f"report: {written[0]}")
    click.echo(report.table())
    click.echo(f"model:  {out}\nalso:   {', '.join(map(str, written[1:]))}")

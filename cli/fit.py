"""`featx fit`."""
from __future__ import annotations

import click

from featx.classify._classifiers import CLASSIFIERS
from featx.names import CLASS_WEIGHTS, MODEL_FORMATS

from . import options
from .errors import user_errors
from .options import pick_store


@click.command()
@click.option("--features", "-f", "store", type=click.Path(dir_okay=False), help="Feature store; default: the one in the cache folder.")
@click.option("--clf", type=click.Choice(list(CLASSIFIERS)), default="logreg", show_default=True, help="Classifier.")
@click.option("--class-weight", type=click.Choice(CLASS_WEIGHTS), help="Weight classes inversely to their frequency.")
@options.cv("Cross-validation folds for model selection.")
@options.n_jobs
@options.test_size(0.2, "Held-out test fraction, never seen during model selection.")
@options.seed()
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
    from featx.classify._bundle import check_model_name
    from featx.classify._fitting import fit as train
    from featx.outputs import check_output, manifest_path
    from featx.reports._report import report_files

    path = pick_store(store)
    out = check_model_name(out or f"featx-{clf}.{fmt}", fmt)
    for file in [out, *report_files(out), manifest_path(out)]:  # the report and its manifest go beside it
        check_output(file, "--out", reads=[path])
    click.echo(f"store: {path}", err=True)
    bundle, report = train(path, clf, cv=cv, test_size=test_size, seed=seed, class_weight=class_weight,
                           n_jobs=n_jobs, epochs=epochs, wait=wait)
    written = bundle.save_with_report(out, report, fmt, tsne=tsne)
    click.echo(f"report: {written[0]}")
    click.echo(report.table())
    click.echo(f"model:  {out}\nalso:   {', '.join(map(str, written[1:]))}")

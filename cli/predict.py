"""`featx predict`."""
from __future__ import annotations

import click

from .errors import exit_if_nothing_usable, user_errors
from .options import extraction_options


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@extraction_options
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="CSV file; default: standard output. File names are written as the bytes they are.")
@click.option("--report", type=click.Path(dir_okay=False), help="Also write an HTML gallery of the predictions, least confident first.")
@user_errors
def predict(model, images, unsafe_pickle, weights, batch_size, workers, device, quiet, tta, out, report):
    """Predict the class of IMAGES (files, folders, CSV lists) with MODEL (from featx fit, or a network from
    featx finetune, which uses its own head), as CSV: path (as given), predicted class, one probability (or
    decision score) per class, error. Every file has a row: one that failed has an empty prediction and its
    reason under error. Exit status 1 when every file failed. Messages go to standard error."""
    from featx.finetuning._models import load_model
    from featx.images._inputs import CSV_TEXT
    from featx.outputs import atomic_write, check_outputs

    loaded = load_model(model, unsafe_pickle=unsafe_pickle)
    reads = [model, *images, *loaded.training_stores()]
    check_outputs({"--out": None if out == "-" else out, "--report": report}, reads=reads)
    predictions, sources = loaded.predict(
        list(images), weights=weights, tta=tta, batch_size=batch_size, workers=workers, device=device, progress=not quiet)
    click.echo(sources.summary(), err=True)
    with (click.open_file(out, "w", errors="surrogateescape") if out == "-"
          else atomic_write(out, "w", newline="", **CSV_TEXT)) as csv_file:
        predictions.write_csv(csv_file)
    if report:  # after the CSV, which a report that cannot be written does not cost
        click.echo(f"report: {predictions.write_html(report)}", err=True)
    failed = predictions.failures
    exit_if_nothing_usable(len(predictions.paths), failed)
    if failed:
        click.echo(f"{len(failed)} of {len(predictions.paths)} files failed: an empty prediction and the reason "
                   "in the error column", err=True)

"""`featx evaluate`, and the extraction options it shares with `featx predict`."""
from __future__ import annotations

from pathlib import Path

import click

from . import options
from .errors import user_errors

# how a model's images are extracted (its feature space comes from the model)
extraction_options = options.apply(
    click.option("--weights", help="The weights file the model's store was extracted with (when named by a hash)."),
    options.batch_size,
    options.workers,
    options.device,
    options.quiet,
)


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path())
@extraction_options
@click.option("--report", "prefix", type=click.Path(dir_okay=False), help="Report files prefix (PREFIX.html, .json, -*.png); default: MODEL-eval.")
@click.option("--tsne", is_flag=True, help="Also draw a t-SNE map of the features.")
@user_errors
def evaluate(model, data, weights, batch_size, workers, device, quiet, prefix, tsne):
    """Report how the MODEL does on labelled images in DATA (class folders or CSV files of path,label).

    The images go through the model's own backbone and preprocessing (features cached as by extract). Writes
    an HTML report (metrics, figures, mistakes and files that failed, as thumbnails), JSON and PNG figures.
    """
    from featx.bundle import load_bundle
    from featx.inference import evaluate as run

    bundle = load_bundle(model)
    report, extracted = run(bundle, list(data), weights, batch_size=batch_size, workers=workers, device=device,
                            progress=not quiet)
    written = report.save(prefix or Path(model).with_suffix("").as_posix() + "-eval", tsne=tsne)
    click.echo(f"report: {written[0]}")
    click.echo(extracted.summary(), err=True)
    click.echo(report.table())
    click.echo(f"also:   {', '.join(map(str, written[1:]))}")

"""`featx evaluate`."""
from __future__ import annotations

import click

from .errors import user_errors
from .options import extraction_options


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", nargs=-1, required=True, type=click.Path())
@extraction_options
@click.option("--report", "prefix", type=click.Path(dir_okay=False),
              help="Report files prefix (PREFIX.html, .json, -*.png); default: MODEL.eval-DATA, DATA the names of the "
                   "folders or files evaluated (the same data again replaces its report, other data gets its own).")
@click.option("--tsne", is_flag=True, help="Also draw a t-SNE map of the features.")
@user_errors
def evaluate(model, data, unsafe_pickle, weights, batch_size, workers, device, quiet, tta, prefix, tsne):
    """Report how the MODEL does on labelled images in DATA (class folders or CSV files of path,label).

    MODEL: from featx fit (the images go through its backbone and preprocessing; features already in its
    training store are read from it, the others extracted into the cache), or a network from featx finetune
    (its own head classifies them). Writes an HTML report (metrics, figures, mistakes and files that failed,
    as thumbnails), JSON and PNG figures. Classes of the model absent from DATA are named; balanced accuracy
    and macro F1 average over the classes present.
    """
    from featx.outputs import check_output, manifest_path, output_set
    from featx.reports._report import report_files, report_prefix

    from featx.finetuning._models import load_model

    loaded = load_model(model, unsafe_pickle=unsafe_pickle)
    prefix = prefix or report_prefix(model, data)
    for file in [*report_files(prefix), manifest_path(prefix)]:
        check_output(file, "--report", reads=[model, *data, *loaded.training_stores()])
    report, sources = loaded.evaluate(
        list(data), weights=weights, tta=tta, batch_size=batch_size, workers=workers, device=device, progress=not quiet)
    with output_set(manifest_path(prefix)) as written:
        written += report.save(prefix, tsne=tsne)
    click.echo(f"report: {written[0]}")
    click.echo(sources.summary(), err=True)
    click.echo(report.table())
    click.echo(f"also:   {', '.join(map(str, written[1:]))}")

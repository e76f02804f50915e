"""`featx evaluate`, and the extraction options it shares with `featx predict`."""
from __future__ import annotations

from pathlib import Path

import click

from featx.names import TTAS

from . import options
from .errors import user_errors

# how a model's images are extracted (its feature space comes from the model)
extraction_options = options.apply(
    options.unsafe_pickle,
    click.option("--weights", help="The weights file the model's store was extracted with (when named by a hash)."),
    options.batch_size,
    options.workers,
    options.device,
    options.quiet,
    click.option("--tta", type=click.Choice(TTAS), default="none", show_default=True,
                 help="A fine-tuned network (featx finetune): d4 averages its head over the 8 symmetries."),
)


def apply_model(task: str, model: str, data, weights, tta: str, unsafe_pickle: bool, **settings):
    """Run `task` ("predict" or "evaluate") of MODEL on DATA: a network from featx finetune classifies with its
    own head, a model from featx fit with its pipeline on features (read from its training store where it has
    them, else extracted); returns (result, summary)."""
    from importlib import import_module

    from featx.finetuning._apply import is_finetuned, load_finetuned

    if is_finetuned(model):
        return getattr(import_module("featx.finetuning._apply"), task)(load_finetuned(model), list(data), tta, **settings)
    from featx.classify._bundle import load_bundle

    result, sources = getattr(import_module("featx.classify._inference"), task)(load_bundle(model, unsafe_pickle=unsafe_pickle), list(data), weights, **settings)
    return result, sources.summary()


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
    from featx.reports._report import report_prefix

    prefix = check_output(prefix or report_prefix(model, data), "--report")
    report, summary = apply_model("evaluate", model, data, weights, tta, unsafe_pickle, batch_size=batch_size, workers=workers,
                                  device=device, progress=not quiet)
    with output_set(manifest_path(prefix)) as written:
        written += report.save(prefix, tsne=tsne)
    click.echo(f"report: {written[0]}")
    click.echo(summary, err=True)
    click.echo(report.table())
    click.echo(f"also:   {', '.join(map(str, written[1:]))}")

"""`featx compare`."""
from __future__ import annotations

import click

from featx.classify._classifiers import CLASSIFIERS
from featx.names import COMPARE_TEST_SIZE, DEFAULT_MODEL, POOLINGS, SCORINGS, TTAS

from . import options
from .errors import user_errors


def _names(valid=None, convert=str, default=None, separator=","):
    """A click callback: a list separated by `separator`, blanks dropped (each name checked against `valid` when
    given; "default" stands for `default`)."""

    def parse(ctx, param, value):
        if value is None:
            return None
        items = [v.strip() for v in value.split(separator) if v.strip()]
        wrong = [v for v in items if valid is not None and v not in valid]
        if wrong:
            raise click.BadParameter(f"{', '.join(wrong)} (choose from {', '.join(valid)})")
        try:
            return [default if v == "default" else convert(v) for v in items]
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of {convert.__name__} values") from None

    return parse


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "models", callback=_names(default=DEFAULT_MODEL),
              help=f"Backbones, comma-separated (see: featx models; 'default': {DEFAULT_MODEL}).")
@click.option("--layer", "layers", callback=_names(separator=";"),
              help="Layers, comma-separated within one candidate; several candidates: separate with ';' ('default': "
                   "the model's own).")
@click.option("--pooling", "poolings", callback=_names(POOLINGS), help=f"Poolings, comma-separated ({', '.join(POOLINGS)}).")
@click.option("--image-size", "image_sizes", callback=_names(convert=int),
              help="Image sizes, comma-separated ('default': the weights' own).")
@click.option("--tta", "ttas", callback=_names(TTAS), help=f"Test-time views, comma-separated ({', '.join(TTAS)}).")
@click.option("--weights", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A fine-tuned weights file (featx finetune) as a further candidate; repeat for several.")
@click.option("--clf", "clfs", callback=_names(list(CLASSIFIERS)), help="Classifiers, comma-separated.")
@click.option("--fuse", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also fuse the K best feature spaces (concatenated, and probabilities averaged).")
@click.option("--scoring", type=click.Choice(SCORINGS), default=SCORINGS[0], show_default=True,
              help="What cross-validation ranks by (balanced: each class counts the same).")
@options.test_size(None, f"The share of the images held out as the test part  [default: {COMPARE_TEST_SIZE}]")
@click.option("--split-csv", type=click.Path(exists=True, dir_okay=False),
              help="The test part: a CSV of its files (instead of --test-size and a group).")
@click.option("--group-pattern", help="A regex on each path naming its group (first group or match): the split is stratified by class and group.")
@click.option("--group-column", help="A column of DATA's CSV naming each image's group (a number from 1, or a header's name; "
                                     "ELPV's labels.csv: 3, the cell type): the split is stratified by class and group.")
@options.cv("Cross-validation folds, the same for every candidate.")
@options.seed()
@options.n_jobs
@click.option("--out", "-o", type=click.Path(file_okay=False), default="featx-compare", show_default=True)
@options.label_pattern
@options.apply(options.engine, options.device, options.quiet)
@user_errors
def compare(data, models, layers, poolings, image_sizes, ttas, weights, clfs, fuse, scoring, test_size, split_csv,
            group_pattern, group_column, cv, seed, n_jobs, out, label_pattern, engine, device, quiet):
    """Which backbone, layers, pooling, image size, views and classifier suit the labelled images in DATA.

    Every combination is extracted once into its default store, cross-validated on the same folds of the same
    training part, ranked; the best (or a fusion of the --fuse best) is refitted, scored once on the test part
    and saved as OUT/model.skops for featx predict and featx evaluate; then every candidate is scored on the test
    part for the record (those columns choose nothing). Leaderboard: OUT/leaderboard.{csv,json,html}.
    """
    from featx.comparing._compare import compare as run
    from featx.images._inputs import read_column

    if group_pattern and group_column:
        raise click.UsageError("give --group-pattern or --group-column, not both")
    group = read_column(data, group_column) if group_column else group_pattern

    chosen = {name: value for name, value in [("models", models), ("layers", layers), ("poolings", poolings),
                                             ("image_sizes", image_sizes), ("ttas", ttas), ("clfs", clfs)]
              if value is not None}
    comparison = run(list(data), **chosen, weights=list(weights), fuse=fuse, scoring=scoring, test_size=test_size, split_csv=split_csv,
                     group=group, cv=cv, seed=seed, n_jobs=n_jobs, out=out, label_pattern=label_pattern, engine=engine,
                     device=device, progress=not quiet, log=lambda line: click.echo(line, err=True))
    click.echo(comparison.table())
    click.echo(f"model: {comparison.model}   leaderboard: {comparison.files[2]}")

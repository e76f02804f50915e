"""`featx demo`: the whole job on real images, offline."""
from __future__ import annotations

from pathlib import Path

import click

from .errors import user_errors


@click.command()
@click.option("--dir", "directory", default="featx-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=10), default=60, show_default=True, help="Images of each class.")
@click.option("--quiet", "-q", is_flag=True)
@user_errors
def demo(directory, per_class, quiet):
    """Copy ELPV solar-cell images into class folders, extract their features with the default backbone
    (real ImageNet weights, offline), then fit an SVM with cross-validated C and report on a held-out split."""
    from featx.datasets import write_elpv_folder
    from featx.extraction import extract
    from featx.fitting import fit

    folder = write_elpv_folder(Path(directory) / "elpv", per_class=per_class)
    click.echo(f"images: {folder}/<class>/*.png ({per_class} per class)")
    report = extract(folder, progress=not quiet)
    click.echo(report.summary())
    bundle, fitted = fit(report.store, "svm")
    model = Path(directory) / "featx-svm.skops"
    bundle.save(model, "skops")
    click.echo(fitted.table())
    click.echo(f"model: {model}  (try: featx predict {model} {folder}/defective)")

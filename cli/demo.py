"""`featx demo`: the whole job on real images, offline."""
from __future__ import annotations

import click

from .errors import user_errors


@click.command()
@click.option("--dir", "directory", default="featx-demo/elpv", show_default=True, type=click.Path(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=10), default=60, show_default=True, help="Images of each class.")
@click.option("--quiet", "-q", is_flag=True)
@user_errors
def demo(directory, per_class, quiet):
    """Copy ELPV solar-cell images into class folders, extract their features with the default
    backbone (real ImageNet weights, offline) and cross-validate a classifier on them."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from featx.datasets import write_elpv_folder
    from featx.extraction import extract
    from featx.store import load_features

    folder = write_elpv_folder(directory, per_class=per_class)
    click.echo(f"images: {folder}/<class>/*.png ({per_class} per class)")
    report = extract(folder, progress=not quiet)
    click.echo(report.summary())
    data = load_features(report.store)
    click.echo(f"features: {data.features.shape[0]} images x {data.features.shape[1]} dimensions, classes {list(data.classes)}")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    scores = cross_val_score(classifier, data.features, data.labels, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    chance = np.bincount(data.labels).max() / len(data.labels)
    click.echo(f"5-fold accuracy of logistic regression on the features: {scores.mean():.3f} ± {scores.std():.3f} "
               f"(majority class: {chance:.3f})")

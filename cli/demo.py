"""`featx demo`: the whole job on real images, offline, under the ELPV paper's protocol."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from .errors import user_errors

# The best frozen configuration that fits one store (docs/benchmarks.md, `300-gem-late`): ELPV's native
# 300 px, GeM-pooled blocks 5 and 6 and the head, concatenated.
DEMO_FEATURES = {"image_size": 300, "layer": "blocks.5,blocks.6,bn2", "pooling": "gem"}
TEST_SIZE = 0.25  # the paper's 75/25 split
STORE = "features.h5"  # in the --dir folder, beside the images it holds the features of
FITTED = "fitted.sha256"  # in the --dir folder: what the saved model was trained on (FeatureStore.training_digest)


@click.command()
@click.option("--dir", "directory", default="featx-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=10),
              help="Images of each class, for a smaller, faster run; default: all 2,624 cells.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--compare", "compare_too", is_flag=True,
              help="Then compare a few cheap configurations on the same test part (featx compare) and print the winner.")
@user_errors
def demo(directory, per_class, quiet, compare_too):
    """ELPV solar cells, the paper's protocol, offline: copy the images into class folders, extract their
    features with the default backbone (real ImageNet weights; 300 px, GeM-pooled late stages), fit an RBF
    SVM with C chosen by cross-validation on a stratified 75% and report on the other 25%.

    A rerun reads the features from the store, and reuses the model when the images, labels and settings are
    those it was fitted on (else fits again). Everything it makes goes into the --dir folder: the images, the
    feature store, the model, its HTML report and test.csv (the test part, for featx evaluate). Its elpv/
    folder holds exactly the selected cells: copies made for another --per-class are removed.
    """
    from featx.classify._fitting import fit
    from featx.datasets import ELPV_PAPER, load_elpv, write_elpv_folder
    from featx.features._extraction import extract
    from featx.features._store import FeatureStore
    from featx.outputs import atomic_write, check_manifest, check_output, manifest_path
    from featx.reports._report import Report, report_prefix

    directory = check_output(directory, "--dir", folder=True)
    folder = write_elpv_folder(directory / "elpv", per_class=per_class, prune=True)  # the demo's own copies
    elpv = load_elpv()
    cell_type = {Path(path).name: kind for path, kind in zip(elpv.filenames, elpv.cell_type)}
    copied = [(p.parent.name, cell_type[p.name]) for p in folder.glob("*/*.png")]
    click.echo(f"images: {len(copied):,} ELPV cells in {folder}/<class>/ "
               f"({'all' if per_class is None else f'{per_class} per class'})")
    click.echo("features: EfficientNet-Lite0 (ImageNet weights, frozen), 300 px, GeM-pooled blocks 5, 6 and head")
    extracted = extract(folder, store=directory / STORE, progress=not quiet, **DEMO_FEATURES)
    click.echo(extracted.summary())
    # The paper stratifies the split by class and cell type (mono, poly); a small run may lack a pair.
    by_type = min(Counter(copied).values()) >= 2
    split = "class and cell type" if by_type else "class"
    model, test_csv, fitted = directory / "featx-svm.skops", directory / "test.csv", directory / FITTED
    prefix = report_prefix(model)
    saved = [model, test_csv, prefix.with_name(prefix.name + ".html"), prefix.with_name(prefix.name + ".json")]
    with FeatureStore.open(extracted.store) as opened:
        digest = opened.training_digest({"clf": "svm", "test_size": TEST_SIZE, "split": split})
    if (all(path.exists() for path in [*saved, fitted, manifest_path(model)]) and fitted.read_text().strip() == digest
            and not check_manifest(manifest_path(model))):
        click.echo(f"model: up to date (same images, labels and settings as when {model} was fitted): not fitted again")
        report = Report.from_dict(json.loads(saved[3].read_text()))
        click.echo(f"report: {saved[2]}")
    else:
        click.echo(f"fitting: RBF SVM, C by 5-fold CV on the training part (all cores); test part: 25%, stratified by {split} ...")
        fitted.unlink(missing_ok=True)
        bundle, report = fit(extracted.store, "svm", test_size=TEST_SIZE, n_jobs=-1,
                             group=(lambda path: cell_type[Path(path).name]) if by_type else None)
        written = bundle.save_with_report(model, report)
        report.write_test_csv(test_csv)
        with atomic_write(fitted, "w") as out:  # last: an interrupted fit is never taken for a finished one
            out.write(digest + "\n")
        click.echo(f"report: {written[0]}")
    click.echo(report.table())
    accuracy = report.metrics["accuracy"]
    paper = "   ".join(f"{name}: {value:.2f}%" for name, value in ELPV_PAPER.items())
    click.echo(f"\n4-class accuracy: {100 * accuracy:.2f}% on {report.metrics['n']:,} test cells   (paper: {paper})")
    click.echo(f"model: {model}   test part: {test_csv}")
    if compare_too:  # what to try next is the winner
        model = _compare(folder, test_csv, directory / "compare", quiet)
    click.echo(f"next:  featx evaluate {model} {test_csv}   (or: featx predict {model} YOUR_IMAGES/ --report predictions.html)")


# The demo's space under two classifiers, and plain average pooling, fused: one more store than the demo's.
COMPARED = {"image_sizes": [DEMO_FEATURES["image_size"]], "layers": [DEMO_FEATURES["layer"]], "poolings": ["gem", "avg"],
            "clfs": ["svm", "logreg"], "fuse": 2}


def _compare(folder: Path, test_csv: Path, out: Path, quiet: bool) -> Path:
    """featx compare on the demo's images and test part: the winner and its margin over the runner-up; returns
    the winner's model file."""
    from featx.comparing._compare import compare

    click.echo(f"\ncomparing: {', '.join(f'{k}={v}' for k, v in COMPARED.items())} (test part: {test_csv})")
    result = compare(folder, split_csv=test_csv, out=out, n_jobs=-1, progress=not quiet, log=lambda line: click.echo(line, err=True),
                     **COMPARED)
    click.echo(result.table())
    second = result.runner_up
    margin = f", {100 * (result.winner.cv_mean - second.cv_mean):.2f} points of CV above {result.label(second)}" if second else ""
    click.echo(f"winner: {result.label(result.winner)}{margin}; 4-class accuracy on the test part "
               f"{100 * result.test_accuracy:.2f}%   (model: {result.model})")
    return result.model

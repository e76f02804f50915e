"""`featx info`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import user_errors


@click.command()
@click.argument("store", type=click.Path(exists=True, dir_okay=False))
@click.option("--history", is_flag=True, help="Also list the files that left the store's view (deleted or moved).")
@click.option("--check", is_flag=True,
              help="Check the store: metadata, counts against tables, readable texts, no all-zero or NaN rows.")
@click.option("--repair", is_flag=True,
              help="With --check: copy what can be read of a damaged store into STEM-repaired.h5 beside it.")
@user_errors
def info(store, history, check, repair):
    """Show what the feature STORE holds: the files extracted from as they are on disk now. A model file
    (from featx fit or featx compare): its classes, classifier and feature spaces."""
    import zipfile

    from featx.features._store import FeatureStore, gone_note
    from featx.images._failures import failure_lines

    if zipfile.is_zipfile(store) or Path(store).suffix in (".skops", ".joblib"):  # a model, loadable or not: its own error
        _model(Path(store))
        return
    if check or repair:
        _check(Path(store), repair)
        return
    with FeatureStore.open(store) as opened:
        summary = opened.summary()
    click.echo(f"store:     {store}")
    if summary.writer_pid:
        click.echo(f"note:      process {summary.writer_pid} is writing this store; shown: what it committed so far")
    click.echo(f"rows:      {summary.rows} unique images x {summary.features} features ({summary.dtype})")
    click.echo(f"files:     {summary.files}")
    if summary.classes:
        click.echo(f"classes:   {len(summary.classes)}")
        for name, count in summary.classes.items():
            click.echo(f"  {name}: {count}")
    if summary.unlabeled:
        click.echo(f"unlabeled: {summary.unlabeled}")
    click.echo(f"failures:  {len(summary.failures)}")
    for line in failure_lines(list(summary.failures.items()), prefix="  "):
        click.echo(line)
    gone = summary.gone
    click.echo(f"gone:      {len(summary.vanished) + len(gone)} files no longer on disk (their features stay cached)")
    if gone:
        click.echo(f"           since the last extraction, {gone_note(len(gone))}")
    if history:
        for path, name in sorted({**summary.vanished, **gone}.items()):
            click.echo(f"  {path}" + (f" ({name})" if name is not None else ""))
    click.echo("feature space: " + json.dumps(summary.space, indent=2, sort_keys=True))
    click.echo("versions:  " + json.dumps(summary.versions, sort_keys=True))


def _model(path: Path) -> None:
    """featx info MODEL: classes, classifier, and each feature space with the store it was trained on."""
    from featx.classify._bundle import load_bundle

    bundle = load_bundle(path)
    click.echo(f"model:     {path}")
    click.echo(f"classes:   {', '.join(bundle.classes)}")
    click.echo(f"classifier: {bundle.info.get('classifier')} {json.dumps(bundle.info.get('hyperparameters', {}))}")
    click.echo(f"feature spaces: {len(bundle.spaces)}")
    for part in bundle.parts():
        click.echo(f"  store: {part.training_store()}\n  " + json.dumps(part.space.as_dict(), indent=2, sort_keys=True)
                   .replace("\n", "\n  "))


def _check(store: Path, repair: bool) -> None:
    """featx info --check [--repair]: the problems found (exit 1), or ok; --repair copies the readable part."""
    from featx.features._store import FeatureStore

    with FeatureStore.open(store, damaged=True) as opened:
        problems = opened.check()
        if not problems:
            click.echo(f"check: {store} is whole ({opened.count('rows')} rows, {opened.count('files')} file entries)")
            return
        click.echo(f"check: {store} is damaged:")
        for problem in problems:
            click.echo(f"  {problem}")
        if not repair:
            click.echo(f"repair: featx info --check --repair {store} copies what can be read into a new store")
            sys.exit(1)
        target = store.with_name(f"{store.stem}-repaired.h5")
        rows, files = opened.salvage(target)
    click.echo(f"repaired: {rows} rows and {files} file entries copied into {target}; use it in place of the "
               f"damaged store (mv {target} {store}), then featx extract completes it")

"""`featx info`."""
from __future__ import annotations

import json
from collections import Counter

import click

from .errors import user_errors


@click.command()
@click.argument("store", type=click.Path(exists=True, dir_okay=False))
@user_errors
def info(store):
    """Show what the feature STORE holds."""
    from featx.store import FeatureStore

    with FeatureStore.open(store) as opened:
        files, failures, classes = opened.files(), opened.failures(), opened.classes()
        click.echo(f"store:     {store}")
        click.echo(f"rows:      {opened.count('rows')} unique images x {opened.n_features or 0} features ({opened.dtype})")
        click.echo(f"files:     {len(files)}")
        counts = Counter(label for _, label in files.values())
        if classes:
            click.echo(f"classes:   {len(classes)}")
            for i, name in enumerate(classes):
                click.echo(f"  {name}: {counts.get(i, 0)}")
        if counts.get(-1):
            click.echo(f"unlabeled: {counts[-1]}")
        click.echo(f"failures:  {len(failures)}")
        for path, (_, reason) in list(failures.items())[:50]:
            click.echo(f"  {path}: {reason}")
        click.echo("feature space: " + json.dumps(opened.space.as_dict(), indent=2, sort_keys=True))
        click.echo("versions:  " + json.dumps(opened.versions, sort_keys=True))

"""`featx export`."""
from __future__ import annotations

import click

from featx.exploring._export import FORMATS

from .errors import user_errors


@click.command()
@click.argument("store", required=False, type=click.Path(dir_okay=False))
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default="parquet", show_default=True,
              help="parquet: one row per file with an embedding column; npy: a float32 matrix plus a CSV of "
                   "path,label,key under its name (e.npy: e.csv).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="File to write (default: STORE_STEM.FORMAT here).")
@click.option("--split-csv", "split", type=click.Path(exists=True, dir_okay=False),
              help="CSV of path,split (e.g. train/test, as featx audit --split-csv reads it): adds a split column.")
@user_errors
def export(store, fmt, out, split):
    """Export a store's embeddings with path, label and content key, for pandas, polars, DuckDB or LanceDB.

    Reads the store in blocks: a store larger than memory exports in bounded memory.
    """
    from featx.exploring._export import export_embeddings

    from .options import pick_store

    path = pick_store(store, "featx export STORE")
    written = export_embeddings(path, fmt, out, split=split)
    click.echo(f"written: {', '.join(map(str, written))}")

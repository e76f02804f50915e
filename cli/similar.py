"""`featx similar`."""
from __future__ import annotations

import click

from featx.exploring._similar import K

from . import options
from .errors import user_errors


@click.command()
@click.argument("queries", nargs=-1, required=True, type=click.Path())
@click.option("--store", "-s", type=click.Path(dir_okay=False), help="Store to search (default: the only one in the cache folder).")
@click.option("-k", type=click.IntRange(min=1), default=K, show_default=True, help="Nearest stored images per query.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="CSV of query,rank,path,label,similarity (default: stdout).")
@click.option("--report", type=click.Path(dir_okay=False), help="HTML page: each query beside its neighbours' thumbnails.")
@options.apply(options.device, options.engine, options.quiet)
@user_errors
def similar(queries, store, k, out, report, device, engine, quiet):
    """The k stored images most like each QUERY (image files, folders or CSVs), by cosine similarity.

    Queries the store holds (found by content) are read from it; others are extracted with the store's own
    backbone and preprocessing. Exact search for small stores, a faiss index (cached as STORE.hnsw) for large ones.
    """
    from featx.exploring._similar import similar as search
    from featx.images._inputs import CSV_TEXT
    from featx.outputs import atomic_write, check_outputs

    from .options import pick_store

    store = pick_store(store, "--store STORE")
    check_outputs({"--out": out, "--report": report}, reads=[store, *queries])  # before the search, not after it
    found = search(list(queries), store, k, device=device, engine=engine, progress=not quiet)
    if out:
        with atomic_write(out, "w", newline="", **CSV_TEXT) as handle:
            found.write_csv(handle)
    else:  # file names as their bytes, as in a CSV file (a strict UTF-8 stdout refused one that is not UTF-8)
        with click.open_file("-", "w", **CSV_TEXT) as handle:
            found.write_csv(handle)
    if report:
        found.write_html(report)
    click.echo(found.summary() + "".join(f"\nwritten: {p}" for p in (out, report) if p), err=True)

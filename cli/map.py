"""`featx map`."""
from __future__ import annotations

import click

from featx.exploring._map import COLORS, METHODS

from . import options
from .errors import user_errors


@click.command(name="map")
@click.argument("store", required=False, type=click.Path(dir_okay=False))
@click.option("--color", "colour", type=click.Choice(COLORS), default="label", show_default=True,
              help="Colour the points by their label, a model's prediction (--model) or the audit's finding (--audit).")
@click.option("--method", type=click.Choice(METHODS), default="pca", show_default=True,
              help="Projection to 2-D (umap: pip install \"featx[umap]\").")
@click.option("--model", type=click.Path(dir_okay=False), help="A model from featx fit on this store's feature space: its predictions.")
@click.option("--audit", type=click.Path(file_okay=False), help="A featx audit --out folder of this store: its findings.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default="map.html", show_default=True)
@options.unsafe_pickle
@user_errors
def map_(store, colour, method, model, audit, out, unsafe_pickle):
    """Write an interactive map of STORE's embeddings: one self-contained HTML page, a point per file.

    Zoom and pan, hover for the thumbnail, path, label (and prediction), click to open the file, click a legend
    entry to hide a class, search a file name. WebGL: 20,000 points stay responsive.
    """
    from featx.exploring._map import embedding_map

    from .options import pick_store

    path = pick_store(store, "featx map STORE")
    written = embedding_map(path, out, method=method, colour=colour, model=model, audit=audit, unsafe_pickle=unsafe_pickle)
    click.echo(f"written: {written}")

map = map_  # the name LazyGroup looks up

"""`featx extract`."""
from __future__ import annotations

import sys

import click

from featx.names import MAX_IMAGE_SIZE, parameter_choices

from . import options
from .errors import exit_if_nothing_usable, user_errors


@click.command()
@click.argument("data", nargs=-1, required=True, type=click.Path())
@options.model
@options.weights
@click.option("--layer", help="Feature layer(s), comma-separated module names; default: the last feature map.")
@options.pooling
@click.option("--image-size", type=click.IntRange(1, MAX_IMAGE_SIZE), metavar="N",
              help="Resize the shorter side to N (both sides for weights that squash) and centre-crop N x N (default: the "
                   "weights' own resize and crop).")
@options.tta
@click.option("--decode", type=click.Choice(parameter_choices("decode")),
              help="reduced: decode large images at a reduced size first (4-7x less decoding for camera photos; "
                   "default for a new store); full: every pixel, as the first stores did (docs/compatibility.md; default for such a store).")
@click.option("--rehash", is_flag=True, help="Read and hash every file, even those whose stat the store's index knows; "
              "also measures (pHash, image statistics) contents stored before featx measured them.")
@click.option("--store", "-o", type=click.Path(dir_okay=False), help="HDF5 store; default: cache/<model>-<space>.h5.")
@options.batch_size
@options.workers
@options.device
@options.engine
@click.option("--ray", is_flag=True,
              help="Extract on a Ray cluster: the one in $RAY_ADDRESS or started here with `ray start`, else a local "
                   "Ray instance (docs/distributed.md).")
@click.option("--ray-address", metavar="ADDRESS", help="The Ray cluster to join, e.g. ray://head:10001 (implies --ray).")
@click.option("--ray-actors", type=click.IntRange(min=1), metavar="N",
              help="With --ray: copies of the network (default: one per GPU of the cluster, else one per CPU).")
@click.option("--float16", is_flag=True, help="Store features as float16 (half the disk).")
@options.label_pattern
@click.option("--strict", is_flag=True, help="Exit with status 1 if any file fails (good rows are kept).")
@options.quiet
@options.offline
@user_errors
def extract(data, model, weights, layer, pooling, image_size, tta, decode, rehash, store, batch_size, workers, device, engine, ray, ray_address, ray_actors, float16, label_pattern, strict, quiet, offline):
    """Extract features of the images in DATA (folders, image files or CSV files of path,label).

    A folder's subfolders name the classes. Images already in the store (same content, same
    feature space) are not extracted again; bad files are skipped and recorded.
    """
    from featx.backbones._weights import offline_mode
    from featx.features._extraction import extract as run
    from featx.features._space import cache_dir
    from featx.outputs import check_output

    if store:
        check_output(store, "--store")
    else:  # the default store goes into the cache folder
        check_output(cache_dir(), "--store (or set FEATX_CACHE)", folder=True)
    ray = ray_address or ("auto" if ray else None)
    with offline_mode(offline):
        report = run(
            list(data), model, weights=weights, layer=layer, pooling=pooling, image_size=image_size, tta=tta,
            store=store, batch_size=batch_size, workers=workers, device=device, engine=engine, ray=ray,
            ray_actors=ray_actors, dtype="float16" if float16 else "float32", label_pattern=label_pattern,
            progress=not quiet, decode=decode, rehash=rehash,
        )
    click.echo(report.summary())
    exit_if_nothing_usable(report.n_files, report.failures)
    if strict and report.n_failed:
        click.echo(f"Error: {report.n_failed} files failed (--strict)", err=True)
        sys.exit(1)

"""Extraction on a Ray cluster (`featx.extract(..., ray=...)`, `featx extract --ray`).

Ray Data reads and decodes the files in tasks on any CPU of the cluster (exactly as a local run:
`ImageFiles`), runs the decoded batches through a pool of actors that each build the network once and
hold a GPU, and streams the features back to the driver, which commits them: dedup, resume and the store
are `featx.features._extraction`'s, unchanged. Without GPUs, Ray fuses decoding into the actors, one per CPU.
Every worker must read the files at the paths the driver gives (a shared file system).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from featx.backbones._preprocessing import Preprocessing
from featx.errors import FeatxError
from featx.features._loader import FeatureBatch, ImageFiles

if TYPE_CHECKING:
    from featx.features._extractor import Extractor

_INSTALL = 'Ray is not installed: pip install "featx[ray]" (or run without --ray)'


def import_ray() -> ModuleType:
    """The `ray` module with Ray Data, or a FeatxError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise FeatxError(_INSTALL) from exc
    return ray


def connect(address: str) -> ModuleType:
    """Ray, joined to the cluster at `address` unless this process already joined one (then used as is).

    'auto': the cluster in $RAY_ADDRESS or the one started on this machine (`ray start`), else a new
    local Ray instance; 'ray://head:10001' (Ray Client) or 'head:6379' name a cluster.
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=None if address == "auto" else address)
    return ray


def ray_batches(
    paths: Sequence[str],
    keys: Sequence[str],
    extractor: Extractor,
    batch_size: int,
    address: str,
    actors: int | None = None,
) -> Iterator[FeatureBatch]:
    """The features of `paths` (whose contents hash to `keys`) computed on a Ray cluster, as batches finish.

    Each actor builds `extractor`'s network once; its device ('auto', 'cpu', 'cuda') is resolved there, and
    each actor asks Ray for a GPU when the device is 'cuda', or 'auto' on a cluster with GPUs.
    `actors`: copies of the network (never more than batches); default one per GPU of the cluster, or one
    per CPU without GPUs.
    """
    ray = connect(address)
    resources = ray.cluster_resources()
    gpus = _gpus_per_actor(resources, extractor.device)
    preprocessing = extractor.space.preprocessing
    items = [{"index": i, "path": path, "key": key} for i, (path, key) in enumerate(zip(paths, keys))]
    batches = math.ceil(len(items) / batch_size)
    files = ray.data.from_items(items, override_num_blocks=batches)  # a decode task per batch
    files.context.enable_progress_bars = False  # this dataset's own context: extraction shows its own bar
    decoded = files.map_batches(
        _decode, fn_kwargs={"preprocessing": preprocessing}, batch_size=batch_size, batch_format="numpy"
    )
    computed = decoded.map_batches(
        _Network,
        fn_constructor_args=(extractor,),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(batches, actors or _default_actors(resources, gpus))),
        num_gpus=gpus,
    )
    for batch in computed.iter_batches(batch_size=None, batch_format="numpy"):
        yield _feature_batch(batch)


def _gpus_per_actor(resources: dict, device: str) -> int:
    if device == "auto":
        return int(resources.get("GPU", 0) > 0)
    return int(device.startswith("cuda"))


def _default_actors(resources: dict, gpus: int) -> int:
    """One actor per GPU; without GPUs one per CPU, each decoding its own batches (Ray fuses the stages)."""
    return max(1, int(resources.get("GPU" if gpus else "CPU", 1)))


def _decode(batch: dict[str, np.ndarray], preprocessing: Preprocessing) -> dict[str, np.ndarray]:
    """A Ray task: files -> uint8 images (zeros where a file failed), '' or the reason it failed, permanent, and
    the decoded image's (pHash, statistics) as a local run measures them (None where it failed)."""
    files = ImageFiles(batch["path"].tolist(), batch["key"].tolist(), preprocessing, measure=True)
    blank = np.zeros((3, preprocessing.crop, preprocessing.crop), np.uint8)
    items = [files[i] for i in range(len(files))]
    return {
        "index": batch["index"],
        "image": np.stack([blank if item[1] is None else item[1].numpy() for item in items]),
        "reason": np.array([item[2] or "" for item in items], dtype=object),
        "permanent": np.array([item[3] for item in items], dtype=bool),
        # one object per file: the None appended (and dropped) keeps numpy from making the tuples a 2-D array
        "measured": np.array([item[4] if len(item) > 4 else None for item in items] + [None], dtype=object)[:-1],
    }


class _Network:
    """A Ray actor holding one copy of the network, built once when the actor starts."""

    def __init__(self, extractor: Extractor) -> None:
        self.runner = extractor.runner()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decoded images -> each one's features as float32 bytes, b'' for the files that failed (bytes, not
        a tensor column: a batch where every file failed has no feature size to give)."""
        decoded = batch["reason"] == ""
        rows = iter(self.runner(torch.from_numpy(batch["image"][decoded])) if decoded.any() else ())
        features = [np.asarray(next(rows), dtype=np.float32).tobytes() if ok else b"" for ok in decoded]
        return {
            "index": batch["index"], "features": np.array(features, dtype=object),
            "reason": batch["reason"], "permanent": batch["permanent"], "measured": batch["measured"],
        }


def _feature_batch(batch: dict[str, np.ndarray]) -> FeatureBatch:
    decoded = batch["reason"] == ""
    rows = [np.frombuffer(row, dtype=np.float32) for row in batch["features"][decoded]]
    failures = zip(batch["index"][~decoded].tolist(), batch["reason"][~decoded], batch["permanent"][~decoded].tolist())
    return FeatureBatch(
        batch["index"][decoded].tolist(),
        np.stack(rows) if rows else None,
        [(index, str(reason), permanent) for index, reason, permanent in failures],
        list(batch["measured"][decoded]),
    )

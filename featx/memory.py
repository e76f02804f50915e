"""In-memory images (PIL images, uint8 arrays): content keys and batched extraction into a store."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .content import content_key
from .decode import array_to_rgb, to_rgb
from .device import BatchRunner
from .preprocessing import Preprocessing
from .store import FeatureStore


def as_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image (any mode) or an H x W (x 1/3/4) uint8 array as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    return array_to_rgb(image)


def image_key(image: Image.Image) -> str:
    """Content key of an RGB image: the hash of its pixels and shape (files are keyed by their bytes)."""
    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    return content_key(b"rgb:%dx%dx%d:" % pixels.shape + pixels.tobytes())


def extract_images(
    store: FeatureStore,
    images: Sequence[Image.Image],
    keys: Sequence[str],
    runner: BatchRunner,
    preprocessing: Preprocessing,
    batch_size: int,
) -> None:
    """Run the network over RGB `images` in batches, committing each batch's rows under `keys`."""
    transform = preprocessing.geometric()
    for start in range(0, len(images), batch_size):
        batch = torch.stack([transform(image) for image in images[start : start + batch_size]])
        store.commit(list(keys[start : start + batch_size]), runner(batch))

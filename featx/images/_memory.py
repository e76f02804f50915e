"""In-memory images (PIL images, uint8 arrays): as RGB, and their content keys."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from featx.images._content import content_key
from featx.images._decode import array_to_rgb, to_rgb


def as_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image (any mode; upright by its EXIF orientation, as a file's path is read) or an H x W (x 1/3/4)
    uint8 array as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image))
    return array_to_rgb(image)


def image_key(image: Image.Image) -> str:
    """Content key of an RGB image: the hash of its pixels and shape (files are keyed by their bytes)."""
    pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    return content_key(b"rgb:%dx%dx%d:" % pixels.shape + pixels.tobytes())

"""Views of an image for augmenting a classifier's training set and averaging its decisions at test time."""
from __future__ import annotations

import numpy as np
from PIL import Image

from featx.images._memory import as_rgb


def symmetries(image: Image.Image | np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square applied to `image`: H x W x 3 uint8 arrays, the image itself first.

    Rotations by 0, 90, 180 and 270 degrees, then the same of its mirror image. Each view is a new image
    to `PretrainedFeatures` (cached by its pixels); the average of their features is `tta="d4"`.
    """
    pixels = np.asarray(as_rgb(image))
    return [np.ascontiguousarray(np.rot90(p, k)) for p in (pixels, pixels[:, ::-1]) for k in range(4)]

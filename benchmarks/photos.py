"""Camera-like JPEGs made from the real photographs bundled with scikit-image, for the decode benchmarks.

Each class is one photograph; each image a random crop of it (40-90% of its sides, maybe mirrored),
upscaled to the requested size with bicubic resampling plus Gaussian sensor-like noise, so that it
compresses like camera output (a 12-megapixel image is about 2.5 MB at quality 90) rather than like a
smooth upscale. Needs scikit-image (the test extra).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field", "immunohistochemistry",
          "stereo_motorcycle", "camera", "coins", "grass", "gravel", "brick", "moon")


def photograph(name: str) -> Image.Image:
    from skimage import data

    pixels = getattr(data, name)()
    return Image.fromarray(pixels[0] if isinstance(pixels, tuple) else pixels).convert("RGB")


def camera_jpeg(source: Image.Image, size: tuple[int, int], rng: np.random.Generator, quality: int = 90,
                noise: float = 5.0) -> bytes:
    """A random crop of `source` upscaled to `size` (width, height) with noise, as JPEG bytes."""
    width, height = source.size
    scale = rng.uniform(0.4, 0.9)
    aspect = size[0] / size[1]
    crop_h = min(height, int(scale * height), int(scale * width / aspect))
    crop_w = int(crop_h * aspect)
    left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
    image = source.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, noise, (size[1], size[0], 3)).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_photo_folder(folder: Path, per_class: int, size: tuple[int, int], classes: int = len(PHOTOS),
                       seed: int = 0) -> list[Path]:
    """folder/<photo>/<i>.jpg, `per_class` camera-like JPEGs of each of the first `classes` photographs."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in PHOTOS[:classes]:
        source = photograph(name)
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / name / f"{i:04d}.jpg"
            if not path.exists():
                path.write_bytes(camera_jpeg(source, size, rng))
            paths.append(path)
    return paths

"""Per-image statistics and a perceptual hash, measured on the decoded image at extraction (torch-free).

`measure(image, size)` -> (64-bit pHash, STATS values). The hash is imagehash's `phash` (grey, 32 x 32
Lanczos, 2-D DCT-II, the 8 x 8 lowest frequencies against their median; bit-identical to imagehash 4.3,
tests/test_quality.py), written here with scipy rather than depending on imagehash: imagehash requires
PyWavelets (a 4.5 MB compiled wheel) for hashes featx does not use, and pHash is these few lines.
The statistics are measured on the grey image shrunk to at most THUMB pixels on its longer side, so that
they do not depend on resolution (a blur score on 300 px cells and on 4,000 px photos is comparable) and
cost about a millisecond (docs/audit.md).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

STATS = ("brightness", "contrast", "blur", "entropy", "width", "height")
THUMB = 256  # longer side of the grey image the statistics are measured on


def phash(grey: Image.Image) -> int:
    """imagehash.phash(image, hash_size=8) as a 64-bit integer (row-major bits, first bit most significant)."""
    from scipy.fft import dct

    pixels = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dct(dct(pixels, axis=0, norm=None), axis=1, norm=None)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def measure(image: Image.Image, size: tuple[int, int] | None = None) -> tuple[int, tuple[float, ...]]:
    """(pHash, statistics in STATS order) of a decoded image. `size`: its width and height as stored, when
    it was decoded smaller (a JPEG decoded at reduced scale); default its own size.

    brightness: mean grey level, contrast: its standard deviation (both 0-1); blur: variance of the
    Laplacian (4-neighbour, grey levels 0-1; low = blurry); entropy: of the 256-bin grey histogram (bits;
    low = nearly blank)."""
    grey = image.convert("L")
    thumb = grey.copy()
    thumb.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(thumb, dtype=np.float32) / 255.0
    laplacian = (pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:] - 4 * pixels[1:-1, 1:-1])
    counts = np.bincount(np.asarray(thumb).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    width, height = size or image.size
    stats = (float(pixels.mean()), float(pixels.std()), float(laplacian.var()) if laplacian.size else 0.0,
             float(-(p * np.log2(p)).sum()), float(width), float(height))
    return phash(grey), stats


def stored_size(data: bytes) -> tuple[int, int]:
    """Width and height of encoded image bytes, upright (EXIF orientation), from the header alone: the
    size of the image as stored, also when it is decoded at reduced scale."""
    import io

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # orientations that swap the axes
    return (height, width) if turned else (width, height)


def measure_files(paths: list[str], keys: list[str]) -> list[tuple[int, tuple[float, ...]] | None]:
    """`measure` of each file (None for one that cannot be read or decoded, or whose content is no longer
    `keys`' one): for stores made before the measures existed (`featx extract --rehash`), without the network."""
    from featx.images._content import content_key, read_bytes
    from featx.images._decode import decode

    measured = []
    for path, key in zip(paths, keys):
        try:
            data = read_bytes(path)
            measured.append(measure(decode(data), stored_size(data)) if content_key(data) == key else None)
        except Exception:  # one bad file must not stop the others: it keeps no measures, as before
            measured.append(None)
    return measured


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between 64-bit hashes (uint64 arrays, broadcast)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: one instruction per pair
        return np.bitwise_count(x)
    return np.unpackbits(x[..., None].view(np.uint8), axis=-1).sum(axis=-1, dtype=np.uint8)

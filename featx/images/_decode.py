"""Safe image decoding to RGB (or grey): EXIF orientation, every Pillow mode, bombs refused, errors explained."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"  # a featx model (skops) among others
NOT_IMAGES = {  # files that land among images by mistake, named instead of "corrupt image"
    HDF5_SIGNATURE: "an HDF5 file (a feature store?), not an image",
    ZIP_SIGNATURE: "a zip archive (a featx model?), not an image",
}


class DecodeError(Exception):
    """A file that is not a usable image; the message is the reason recorded in the store."""


def decode_rgb(data: bytes) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image, fully loaded, upright."""
    return decode(data).convert("RGB")


def decode(data: bytes, min_size: int | None = None) -> Image.Image:
    """Decode encoded image bytes to an RGB or, for 8-bit grey images, an L image, fully loaded, upright.

    Grey stays one channel so that resizing does a third of the work; `resize_crop` repeats it.
    `min_size`: a JPEG whose shorter side is at least twice this is decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, Pillow's `draft`), the largest reduction that keeps the shorter side at or
    above `min_size`: 4-5x less time for a 12-megapixel photo. Other formats decode at full size.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    for signature, reason in NOT_IMAGES.items():
        if data.startswith(signature):
            raise DecodeError(reason)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if min_size:
                image.draft(None, (min_size, min_size))  # no-op for formats other than JPEG
            image.load()
            image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"refused as a decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError:
        raise DecodeError("not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"corrupt or truncated image: {exc}") from exc
    return image if image.mode == "L" else to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: 16-bit and float scaled to 8 bits, alpha composited."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        canvas = Image.new("RGB", image.size, BACKGROUND)
        canvas.paste(image, mask=image.convert("RGBA").getchannel("A"))
        return canvas
    return image.convert("RGB")


def _scale_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer and float pixels to 0..255 without clipping."""
    values = array.astype(np.float64)
    if mode.startswith("I;16"):
        top = 65535.0
    elif mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
        top = 1.0
    elif values.size and values.min() >= 0 and values.max() <= 255 and mode != "F":
        top = 255.0
    elif values.size and values.min() >= 0 and values.max() <= 65535:
        top = 65535.0
    else:  # arbitrary range: stretch min..max
        low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
        values, top = values - low, max(high - low, 1e-12)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def array_to_rgb(array: np.ndarray) -> Image.Image:
    """An H x W or H x W x C uint8 array (C in 1, 3, 4) as an RGB image."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H x W or H x W x 3/4 image array, got shape {array.shape}")
    return to_rgb(Image.fromarray(array))

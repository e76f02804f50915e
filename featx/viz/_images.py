"""Pixels <-> PIL images, PNG files, and captioned tile grids."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from featx.backbones._preprocessing import Preprocessing
from featx.errors import BadInputError
from featx.images._decode import DecodeError, decode_rgb

CAPTION_HEIGHT = 14


def load_pixels(path: str | os.PathLike, preprocessing: Preprocessing) -> torch.Tensor:
    """An image file as 1 x 3 x crop x crop pixels in [0, 1]: resized and centre-cropped like the backbone's
    inputs, except an image already crop x crop, taken as it is (so a saved adversarial PNG stays exact)."""
    try:
        image = decode_rgb(Path(path).read_bytes())
    except (DecodeError, OSError) as exc:
        raise BadInputError(f"cannot read image {path}: {exc}") from None
    if image.size == (preprocessing.crop, preprocessing.crop):
        array = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    else:
        array = preprocessing.geometric()(image)
    return array[None].float() / 255


def quantise(pixels: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit levels k / 255 a PNG stores."""
    return pixels.clamp(0, 1).mul(255).round().div(255)


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """1 x 3 x H x W (or 3 x H x W) pixels in [0, 1] -> 8-bit RGB image."""
    array = quantise(pixels.detach().reshape(-1, *pixels.shape[-2:])).mul(255).byte()
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


def save_png(image: Image.Image | torch.Tensor, path: str | os.PathLike) -> Path:
    """Save as PNG (lossless: the saved pixels are exactly the 8-bit pixels), creating folders."""
    from ..outputs import atomic_write

    path = Path(path)
    with atomic_write(path) as out:
        (image if isinstance(image, Image.Image) else to_pil(image)).save(out, format="PNG", optimize=True)
    return path


def tile(image: Image.Image, caption: str, size: int) -> Image.Image:
    """`image` scaled to size x size with a caption strip below."""
    cell = Image.new("RGB", (size, size + CAPTION_HEIGHT), "white")
    cell.paste(image.convert("RGB").resize((size, size), Image.Resampling.NEAREST))
    ImageDraw.Draw(cell).text((2, size + 1), caption, fill="black")
    return cell


def grid(tiles: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Equal-sized tiles in rows, left to right (default: a near-square grid)."""
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    width, height = tiles[0].size
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for i, cell in enumerate(tiles):
        sheet.paste(cell, ((i % columns) * width, (i // columns) * height))
    return sheet

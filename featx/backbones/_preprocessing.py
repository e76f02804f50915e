"""The preprocessing a backbone's weights were trained with: resize, centre crop, mean and std."""
from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from featx.images._decode import decode as decode_image
from featx.errors import BadInputError
from featx.names import DECODES, MAX_IMAGE_SIZE, AtLeast, Options, validate_parameters

if TYPE_CHECKING:
    import torch

_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
INTERPOLATIONS = (*_PIL_FILTERS, "nearest")  # what `resize_crop` applies (nearest: through torchvision)

# How images larger than the network needs are decoded: "full" (the legacy mode) decodes every pixel;
# "reduced" decodes a JPEG at 1/2-1/8 scale (libjpeg's DCT scaling) as long as its shorter side stays at
# least DRAFT_MARGIN x the resize target, and shrinks any image by a whole factor (`Image.reduce`) as long
# as the crop stays REDUCING_GAP x the output, then resamples exactly as "full". An image whose shorter side
# is under 4x the resize target is processed exactly as in "full". The features move slightly (cosine
# 0.9994 on average, 0.9967 at worst on 12-megapixel photos, docs/performance.md), so the mode is part of
# the feature space.
LEGACY_DECODE = "full"  # spaces without a recorded decode mode were made this way
DEFAULT_DECODE = "reduced"
DRAFT_MARGIN = 2  # a JPEG is decoded at a scale that keeps its shorter side >= this x the resize target
REDUCING_GAP = 3.0  # then Image.reduce while the crop stays >= this x the output (Pillow: "even closer to fair")
# How the image reaches `resize` (timm's crop_mode): "center" keeps its aspect ratio (the shorter side to `resize`,
# then the centre crop: torchvision's and most timm weights'); "squash" resizes both sides to `resize`, the whole
# image in the crop when resize == crop (131 of timm's 1,826 pretrained tags, mostly 384 px fine-tunes).
CROP_MODES = ("center", "squash")


@dataclass(frozen=True)
class _Channels:
    """Three finite numbers (one a channel), all > 0 when `positive` (a constraint as those of featx.names)."""

    positive: bool = False

    def accepts(self, value: object) -> bool:
        return (len(value) == 3 and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                                        and (v > 0 or not self.positive) for v in value))

    def __str__(self) -> str:
        return f"three finite numbers{' > 0' if self.positive else ''}"


_SIZE = AtLeast(1, MAX_IMAGE_SIZE)
# What a file's preprocessing may say: its values size and shape every image decoded
_FILE_VALUES = {
    "resize": _SIZE, "crop": _SIZE,
    "interpolation": Options(INTERPOLATIONS, "interpolation"), "mean": _Channels(), "std": _Channels(positive=True),
    "decode": Options(DECODES, "decode mode"), "crop_mode": Options(CROP_MODES, "crop mode"),
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize` (both sides with `crop_mode` "squash"), centre-crop `crop` x `crop`, then
    normalise with mean/std.

    The geometric part runs on PIL images in the decode workers and yields uint8 tensors (4x smaller to
    move between processes); normalisation runs on the batch, on the compute device.
    """

    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    decode: str = LEGACY_DECODE
    crop_mode: str = "center"

    def as_dict(self) -> dict:
        """The feature space's "preprocessing" entry (the decode mode is recorded beside it, by FeatureSpace; the
        crop mode only when not "center", so that the entries written before it existed read back unchanged)."""
        entry = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k != "decode"}
        if self.crop_mode == "center":
            del entry["crop_mode"]
        return entry

    @classmethod
    def from_dict(cls, entry: dict, decode: str = LEGACY_DECODE) -> Preprocessing:
        """The preprocessing `as_dict` wrote (in a feature space or a fine-tuned network's metadata), each value
        checked, as it comes from a file: a BadInputError says which is wrong (the caller names the file)."""
        pre = cls(**{**entry, "mean": tuple(entry["mean"]), "std": tuple(entry["std"])}, decode=decode)
        for name, allowed in _FILE_VALUES.items():
            if not allowed.accepts(getattr(pre, name)):
                raise BadInputError(f"its preprocessing's {name} must be {allowed}, got {getattr(pre, name)!r}")
        return pre

    def at_size(self, size: int | None) -> Preprocessing:
        """Shorter side (both sides when squashing) resized to `size`, centre crop `size` x `size` (no margin); None:
        this preprocessing."""
        validate_parameters(image_size=size)
        if size is None:
            return self
        return replace(self, resize=int(size), crop=int(size))

    def with_decode(self, decode: str) -> Preprocessing:
        """This preprocessing with the decode mode `decode` (checked by the caller's parameters)."""
        return replace(self, decode=decode)

    @property
    def min_decode_size(self) -> int | None:
        """The shorter side a JPEG is never decoded below; None: images are decoded at full size."""
        return DRAFT_MARGIN * self.resize if self.decode == "reduced" else None

    def geometric(self) -> Callable[[Image.Image], torch.Tensor]:
        """A function: PIL image (RGB or L) -> uint8 3 x crop x crop tensor (made once per preprocessing:
        `load` runs it for every image)."""
        return _geometric(self.resize, self.crop, self.interpolation, REDUCING_GAP if self.decode == "reduced" else None,
                          self.crop_mode == "squash")

    def decoded(self, data: bytes) -> Image.Image:
        """Encoded image bytes -> the upright RGB image `load` resizes (at reduced scale in "reduced" mode;
        raises `DecodeError` for bad bytes)."""
        return decode_image(data, self.min_decode_size)

    def load(self, data: bytes) -> torch.Tensor:
        """Encoded image bytes -> uint8 3 x crop x crop tensor (raises `DecodeError` for bad bytes)."""
        return self.geometric()(self.decoded(data))


@functools.cache
def _geometric(resize: int, crop: int, interpolation: str, reducing_gap: float | None,
               squash: bool) -> Callable[[Image.Image], torch.Tensor]:
    return functools.partial(resize_crop, resize=resize, crop=crop, interpolation=interpolation, reducing_gap=reducing_gap,
                             squash=squash)


def resize_crop(
    image: Image.Image, resize: int, crop: int, interpolation: str, reducing_gap: float | None = None,
    squash: bool = False,
) -> torch.Tensor:
    """torchvision's Resize(resize) + CenterCrop(crop) + PILToTensor on an RGB or L image, as a 3-channel tensor
    (`squash`: Resize((resize, resize)), as timm's crop_mode "squash").

    `reducing_gap`: Pillow's; the crop is first shrunk by a whole factor (`Image.reduce`, a box filter,
    cheaper per pixel than the resampling filter) as long as it stays `reducing_gap` times larger than
    the output: 2x less time for a 12-megapixel image. None: resampled from every pixel (decode mode "full").

    Hand-written because torchvision resamples the whole image and then discards the border: here PIL
    resamples only the crop's pixels (`box=`, the same sampling grid and filter support), and a grey image
    is resampled as one channel, then repeated: 2-4x less work in the decode workers, which on a
    small CPU compete with the network. Within two grey levels of torchvision's result (tested).
    """
    width, height = image.size
    short, long = sorted((width, height))
    new_short, new_long = resize, resize if squash else int(resize * long / short)  # torchvision's rounding
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if crop > min(new_w, new_h) or interpolation == "nearest":  # padding, or ties: torchvision decides
        pixels = _torchvision_resize_crop(image, (resize, resize) if squash else resize, crop, interpolation)
    else:
        left, top = round((new_w - crop) / 2.0), round((new_h - crop) / 2.0)
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
        import torch

        resized = image.resize((crop, crop), _PIL_FILTERS[interpolation], box=box, reducing_gap=reducing_gap)
        pixels = torch.from_numpy(np.array(resized))
        pixels = pixels.permute(2, 0, 1) if pixels.dim() == 3 else pixels[None]
    return pixels.expand(3, -1, -1).contiguous()


def _torchvision_resize_crop(image: Image.Image, resize: int | tuple[int, int], crop: int, interpolation: str) -> torch.Tensor:
    from torchvision.transforms import v2 as T

    transform = T.Compose([
        T.Resize(resize, interpolation=T.InterpolationMode(interpolation), antialias=True),
        T.CenterCrop(crop),
        T.PILToTensor(),
    ])
    return transform(image)


def interpolation_name(mode: object) -> str:
    """Name of a torchvision InterpolationMode or a timm interpolation string."""
    return mode.value if hasattr(mode, "value") else str(mode)


def normalisation(mean: tuple[float, ...], std: tuple[float, ...], pixel_max: float = 255.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), 1 x 3 x 1 x 1 each, that make pixels in [0, pixel_max] the network's input in one
    multiply-add: pixels * scale - shift == (pixels / pixel_max - mean) / std."""
    import torch

    std_ = torch.tensor(std).view(1, 3, 1, 1)
    return 1.0 / (pixel_max * std_), torch.tensor(mean).view(1, 3, 1, 1) / std_

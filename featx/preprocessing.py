"""The preprocessing a backbone's weights were trained with: resize, centre crop, mean and std."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torchvision.transforms import v2 as T

_INTERPOLATIONS = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize`, centre-crop `crop` x `crop`, then normalise with mean/std.

    The geometric part runs on PIL images in the decode workers and yields uint8 tensors (4x smaller to
    move between processes); normalisation runs on the batch, on the compute device.
    """

    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def geometric(self) -> T.Compose:
        """PIL RGB image -> uint8 CHW tensor of size crop x crop."""
        return T.Compose(
            [
                T.Resize(self.resize, interpolation=_INTERPOLATIONS[self.interpolation], antialias=True),
                T.CenterCrop(self.crop),
                T.PILToTensor(),
            ]
        )


def interpolation_name(mode) -> str:
    """Name of a torchvision InterpolationMode or a timm interpolation string."""
    return mode.value if hasattr(mode, "value") else str(mode)

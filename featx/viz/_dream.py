"""The image a classifier finds most typical of a class: feature visualisation by gradient ascent from noise
(Olah, Mordvintsev and Schubert, "Feature Visualization", Distill 2017; the recipe of Lucid).

The image is parameterised by a 1/frequency-scaled Fourier spectrum with decorrelated colours, squashed into
[0, 1] by a sigmoid. Each step the network sees randomly padded, shifted, scaled and rotated copies of it
(transformation robustness), only frequencies below a cutoff that rises from coarse to fine over the first half
of the steps are free, and a total-variation penalty keeps the image smooth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ._classes import PixelClassifier
from ._images import quantise

# Square root of the colour covariance of ImageNet photographs (Lucid), columns scaled to norm <= 1.
_COLOURS = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOURS = _COLOURS / _COLOURS.norm(dim=0).max()
PAD = 12  # grey pixels around the image, so that its borders are seen like its centre
JITTER = 8  # pixels
SCALE = (0.8, 1.2)
DEGREES = 10.0
# Frequency cutoffs in cycles per pixel: without the coarse start, background texture (stone walls, gravel)
# fills the image before the object does; above FINE there is only pixel noise.
COARSE, FINE = 1 / 8, 0.35


def total_variation(pixels: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, across and down."""
    return (pixels[..., 1:, :] - pixels[..., :-1, :]).abs().mean() + (pixels[..., 1:] - pixels[..., :-1]).abs().mean()


class FourierImage(torch.nn.Module):
    """A 1 x 3 x size x size image whose parameters are its spectrum, scaled by 1 / frequency so that
    plain gradient steps change low frequencies as readily as high ones."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        super().__init__()
        frequencies = torch.sqrt(torch.fft.fftfreq(size)[:, None] ** 2 + torch.fft.rfftfreq(size)[None] ** 2)
        self.register_buffer("frequencies", frequencies)
        self.register_buffer("scale", 1.0 / frequencies.clamp(min=1.0 / size))
        self.spectrum = torch.nn.Parameter(0.01 * torch.randn(3, size, size // 2 + 1, 2, generator=generator))
        self.size = size

    def forward(self, cutoff: float = FINE) -> torch.Tensor:
        """The image with the frequencies above `cutoff` (cycles per pixel) left out."""
        spectrum = torch.view_as_complex(self.spectrum) * self.scale * (self.frequencies <= cutoff)
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4
        return torch.sigmoid(torch.einsum("ij,jhw->ihw", COLOURS, image))[None]


def cutoff(step: int, steps: int) -> float:
    """Coarse to fine: COARSE at the first step, rising geometrically to FINE at half the steps."""
    return COARSE * (FINE / COARSE) ** min(1.0, 2 * step / steps)


def transform(
    pixels: torch.Tensor, generator: torch.Generator, copies: int = 1, pad: int = PAD, jitter: int = JITTER,
    scale: tuple[float, float] = SCALE, degrees: float = DEGREES,
) -> torch.Tensor:
    """`copies` random views of a 1 x 3 x H x W image, H x W each (a network of a fixed input size takes them): the
    image padded with `pad` grey pixels on each side, shifted by up to `jitter` pixels, scaled by a log-uniform
    factor in `scale`, rotated by up to `degrees` and sampled at the image's own size. Bilinear sampling, so the
    views are differentiable in the pixels."""
    _, _, height, width = pixels.shape
    out_height, out_width = height + 2 * pad, width + 2 * pad
    angle = (2 * torch.rand(copies, generator=generator) - 1) * math.radians(degrees)
    low, high = math.log(scale[0]), math.log(scale[1])
    zoom = torch.exp(low + (high - low) * torch.rand(copies, generator=generator))
    dy, dx = torch.randint(-jitter, jitter + 1, (2, copies), generator=generator)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates, both normalised to [-1, 1] by their own sizes.
    theta = torch.stack([
        torch.stack([cos * out_width / width, -sin * out_height / width, 2 * dx / width], -1),
        torch.stack([sin * out_width / height, cos * out_height / height, 2 * dy / height], -1),
    ], 1)
    grid = F.affine_grid(theta, [copies, 3, height, width], align_corners=False)  # the padded view, H x W samples
    # Zero padding around pixels - 0.5 is grey padding around the pixels.
    views = F.grid_sample(pixels.expand(copies, -1, -1, -1) - 0.5, grid, align_corners=False)
    return views + 0.5


@dataclass
class Dream:
    pixels: torch.Tensor  # 1 x 3 x H x W on the 8-bit levels
    probability: float  # the class's probability for the 8-bit image
    total_variation: float


def dream(
    classifier: PixelClassifier, index: int, steps: int = 128, tv_weight: float = 2.0, seed: int = 0,
    lr: float = 0.05, copies: int = 2,
) -> Dream:
    """Maximise the class's logit over `copies` random views per step, minus tv_weight * side * total
    variation of the image (the variation along an average row and column), with Adam. The logit, not
    log p as such: log p stops shaping the image once p is near 1."""
    classifier.require_head()
    size = classifier.preprocessing.crop
    generator = torch.Generator().manual_seed(seed)
    image = FourierImage(size, generator)
    optimiser = torch.optim.Adam(image.parameters(), lr=lr)
    for step in range(steps):
        pixels = image(cutoff(step, steps))
        logits = classifier(transform(pixels, generator, copies))
        loss = -logits[:, index].mean() + tv_weight * size * total_variation(pixels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        final = quantise(image())
    return Dream(final, classifier.probability(final, index), float(total_variation(final)))

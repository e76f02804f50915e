"""The image a classifier finds most typical of a class: gradient ascent from noise (Olah et al., 2017).

The image is parameterised by a scaled Fourier spectrum with decorrelated colours, squashed into [0, 1] by a
sigmoid; each step sees a randomly shifted copy (jitter), and a total-variation penalty keeps it smooth.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .classes import PixelClassifier
from .images import quantise

# Square root of the colour covariance of ImageNet photographs (Lucid), columns scaled to norm <= 1.
_COLOURS = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOURS = _COLOURS / _COLOURS.norm(dim=0).max()
JITTER = 8  # pixels


def total_variation(pixels: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, across and down."""
    return (pixels[..., 1:, :] - pixels[..., :-1, :]).abs().mean() + (pixels[..., 1:] - pixels[..., :-1]).abs().mean()


class FourierImage(torch.nn.Module):
    """A 1 x 3 x size x size image whose parameters are its spectrum, scaled by 1 / frequency so that
    plain gradient steps change low frequencies as readily as high ones."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        super().__init__()
        frequencies = torch.sqrt(torch.fft.fftfreq(size)[:, None] ** 2 + torch.fft.rfftfreq(size)[None] ** 2)
        self.register_buffer("scale", 1.0 / frequencies.clamp(min=1.0 / size))
        self.spectrum = torch.nn.Parameter(0.01 * torch.randn(3, size, size // 2 + 1, 2, generator=generator))
        self.size = size

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4
        return torch.sigmoid(torch.einsum("ij,jhw->ihw", COLOURS, image))[None]


@dataclass
class Dream:
    pixels: torch.Tensor  # 1 x 3 x H x W on the 8-bit levels
    probability: float  # the class's probability for the 8-bit image
    total_variation: float


def dream(
    classifier: PixelClassifier, index: int, steps: int = 128, tv_weight: float = 2.0, seed: int = 0,
    lr: float = 0.05,
) -> Dream:
    """Maximise log p(class `index`) - tv_weight * total variation over the image, with Adam."""
    generator = torch.Generator().manual_seed(seed)
    image = FourierImage(classifier.preprocessing.crop, generator)
    optimiser = torch.optim.Adam(image.parameters(), lr=lr)
    for _ in range(steps):
        pixels = image()
        dy, dx = torch.randint(-JITTER, JITTER + 1, (2,), generator=generator).tolist()
        logits = classifier(torch.roll(pixels, (dy, dx), dims=(2, 3)))
        loss = -F.log_softmax(logits, -1)[0, index] + tv_weight * total_variation(pixels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        final = quantise(image())
    return Dream(final, classifier.probability(final, index), float(total_variation(final)))

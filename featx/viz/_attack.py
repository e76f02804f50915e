"""Projected gradient descent (Madry et al.) in 8-bit pixel space: the saved PNG itself fools the model."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
from PIL import Image
from torch.nn import functional as F

from featx.errors import ParameterError

from ._classes import PixelClassifier
from ._images import grid, quantise, tile, to_pil

TILE = 224


def parse_eps(text: str | float) -> float:
    """"8/255", "0.03" or a float -> a budget in (0, 1]."""
    try:
        eps = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise ParameterError(f"--eps must be a number or a fraction such as 8/255, not {text!r}") from None
    if not 0 < eps <= 1:
        raise ParameterError(f"--eps must be in (0, 1] (pixels are in [0, 1]), not {text!r}")
    if int(eps * 255 + 1e-6) < 1:
        raise ParameterError(f"--eps {text} is less than one 8-bit level (1/255)")
    return eps


@dataclass
class AttackResult:
    adversarial: torch.Tensor  # 1 x 3 x H x W, on the 8-bit levels k / 255
    success: bool
    steps: int  # gradient steps taken

    def linf(self, original: torch.Tensor) -> float:
        return float((self.adversarial - original).abs().max())

    def l2(self, original: torch.Tensor) -> float:
        return float((self.adversarial - original).norm())


def _succeeded(logits: torch.Tensor, target: int | None, original: int) -> bool:
    top = int(logits.argmax())
    return top == target if target is not None else top != original


def pgd(
    classifier: PixelClassifier, pixels: torch.Tensor, target: int | None, eps: float, steps: int = 20,
    alpha: float | None = None,
) -> AttackResult:
    """Targeted (push towards class `target`) or untargeted (`target` None: away from the current top-1)
    PGD within an L-infinity ball of radius `eps` (rounded down to whole 8-bit levels) around `pixels`.

    After `steps` steps the image is rounded to 8 bits; while that fails, up to `steps` more steps follow.
    """
    levels = int(parse_eps(eps) * 255 + 1e-6)
    classifier.require_head()
    low, high = (pixels - levels / 255).clamp(0, 1), (pixels + levels / 255).clamp(0, 1)
    alpha = alpha or max(levels / 4, 1) / 255
    with torch.inference_mode():
        original = int(classifier(pixels).argmax())
    label = torch.tensor([original if target is None else target])
    sign = -1.0 if target is None else 1.0  # ascend the original's loss, or descend the target's
    x = pixels.clone()
    for step in range(1, 2 * steps + 1):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(classifier(x), label), x)
        x = torch.maximum(torch.minimum(x.detach() - sign * alpha * grad.sign(), high), low)
        rounded = torch.maximum(torch.minimum(quantise(x), high), low)
        if step >= steps:
            with torch.inference_mode():
                if _succeeded(classifier(rounded), target, original):
                    return AttackResult(rounded, True, step)
    return AttackResult(rounded, False, 2 * steps)


def comparison(
    classifier: PixelClassifier, original: torch.Tensor, adversarial: torch.Tensor, eps: float
) -> Image.Image:
    """Original | adversarial | difference scaled so that +-eps spans black to white, with top-1 captions."""
    difference = (adversarial - original) / (2 * eps) + 0.5
    captions = [f"{name} {p:.2f}" for _, name, p in (classifier.top(x, 1)[0] for x in (original, adversarial))]
    amplification = f"difference x{0.5 / eps:.0f}"
    images = [to_pil(original), to_pil(adversarial), to_pil(difference)]
    return grid([tile(i, c, TILE) for i, c in zip(images, [*captions, amplification])], columns=3)

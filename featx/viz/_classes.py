"""ImageNet class names -> indices, and a classifier that takes pixels in [0, 1]."""
from __future__ import annotations

import functools
import re

import torch
from torch import nn

from featx.backbones._preprocessing import normalisation
from featx.errors import AmbiguousNameError, ParameterError, UnknownNameError
from featx.names import DEFAULT_MODEL


def resolve_class(spec: str | int, categories: list[str]) -> int:
    """An index ("281"), an exact name ("tabby", any case), a unique part of one ("egyptian"),
    or a phrase containing one name as whole words ("tabby cat" -> "tabby")."""
    text = str(spec).strip()
    if text.isascii() and text.isdigit():  # not "²", which isdigit() calls a digit and int() refuses
        if int(text) < len(categories):
            return int(text)
        raise UnknownNameError("class index", text, [f"0..{len(categories) - 1}"])
    query = text.lower()
    lowered = [name.lower() for name in categories]
    matches = [i for i, name in enumerate(lowered) if name == query]
    matches = matches or [i for i, name in enumerate(lowered) if query in name]
    if not matches:  # the longest class names occurring in the query as whole words
        inside = [i for i, name in enumerate(lowered) if re.search(rf"\b{re.escape(name)}\b", query)]
        longest = max((len(lowered[i]) for i in inside), default=0)
        matches = [i for i in inside if len(lowered[i]) == longest]
    if not matches:
        raise UnknownNameError("class", text, categories)
    if len(matches) > 1:
        shown = ", ".join(f"{categories[i]!r} ({i})" for i in matches[:20])
        raise AmbiguousNameError(f"class {text!r} is ambiguous: {shown}; give a longer name or an index")
    return matches[0]


class PixelClassifier(nn.Module):
    """A backbone's ImageNet classifier on pixels in [0, 1]: its normalisation is part of the forward pass."""

    def __init__(self, model_name: str = DEFAULT_MODEL, weights: str | None = None) -> None:
        super().__init__()
        from featx.backbones._registry import get_backbone

        backbone = get_backbone(model_name)
        source = backbone.weights(weights)
        self.model = backbone.build_model(source).requires_grad_(False)
        self.preprocessing = backbone.preprocessing_for(source)
        self.categories = backbone.categories()
        scale, shift = normalisation(self.preprocessing.mean, self.preprocessing.std, pixel_max=1.0)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        self.eval()
        self.model_name, self.weights = model_name, weights

    @functools.cached_property
    def outputs(self) -> int:
        """How many outputs the network gives (one forward pass of a blank image, the first time)."""
        with torch.inference_mode():
            return self(torch.zeros(1, 3, self.preprocessing.crop, self.preprocessing.crop)).shape[-1]

    def require_head(self) -> None:
        """Refuse a network whose outputs are not its ImageNet classes (a fine-tuned head, another head, or
        none): class names, dreams and attacks are of the backbone's own classifier."""
        width = self.outputs
        if width != len(self.categories):
            raise ParameterError(
                f"{self.model_name}{f' with {self.weights}' if self.weights else ''} gives {width} outputs, not the "
                f"{len(self.categories)} ImageNet classes featx viz names (a fine-tuned network: featx predict uses its head)")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W pixels in [0, 1] -> N x classes logits."""
        return self.model(pixels * self.scale - self.shift)

    def class_index(self, spec: str | int) -> int:
        """The index of class `spec` (see `resolve_class`) among the network's own ImageNet classes."""
        self.require_head()
        return resolve_class(spec, self.categories)

    @torch.inference_mode()
    def top(self, pixels: torch.Tensor, k: int = 5) -> list[tuple[int, str, float]]:
        """The k most probable classes of one image: (index, name, probability)."""
        probabilities = self(pixels).softmax(-1)[0]
        values, indices = probabilities.topk(k)
        return [(int(i), self.categories[int(i)], float(p)) for p, i in zip(values, indices)]

    @torch.inference_mode()
    def probability(self, pixels: torch.Tensor, index: int) -> float:
        return float(self(pixels).softmax(-1)[0, index])

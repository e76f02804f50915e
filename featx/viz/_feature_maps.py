"""A layer's activations for one image: its strongest channels as a grid of heat maps."""
from __future__ import annotations

import torch
from PIL import Image

from featx.errors import ParameterError, UnknownNameError
from featx.features._network import layer_names

from ._classes import PixelClassifier
from ._images import grid, tile, to_pil

TILE = 128


def _outputs(classifier: PixelClassifier, pixels: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The outputs of the named modules in one forward pass, in the order they are computed."""
    modules = dict(classifier.model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: outputs.setdefault(n, out)) for n in names]
    try:
        with torch.inference_mode():
            classifier(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    return {n: out for n, out in outputs.items() if isinstance(out, torch.Tensor)}


def feature_maps(classifier: PixelClassifier, pixels: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The outputs of the named modules that are C x H x W maps of the (square) image: square and no larger than
    it (a transformer's tokens, N x tokens x width, or a Swin stage's N x H x W x C are not)."""
    return {n: out for n, out in _outputs(classifier, pixels, names).items() if _is_map(out, pixels)}


def _is_map(out: torch.Tensor, pixels: torch.Tensor) -> bool:
    return out.dim() == 4 and out.shape[-1] == out.shape[-2] <= pixels.shape[-1]


def default_layer(classifier: PixelClassifier, pixels: torch.Tensor) -> str:
    """A mid-level layer: of the modules whose maps are the smallest still at least 1/8 of the input size,
    the shallowest-named one, the last such if several (ResNet: layer2, VGG-16: features.22)."""
    maps = feature_maps(classifier, pixels, layer_names(classifier.model))
    least = pixels.shape[-1] / 8
    sides = [out.shape[-1] for out in maps.values() if out.shape[-1] >= least]
    if not sides:
        raise ParameterError(f"{classifier.model_name} has no layer of C x H x W feature maps at 1/8 of the input "
                             "or finer: featx viz features draws a convolutional network's maps")
    side = min(sides)
    candidates = [n for n, out in maps.items() if out.shape[-1] == side]
    depth = min(n.count(".") for n in candidates)
    return [n for n in candidates if n.count(".") == depth][-1]


def activations(classifier: PixelClassifier, pixels: torch.Tensor, layer: str) -> torch.Tensor:
    """The C x H x W output of module `layer` for one image."""
    names = layer_names(classifier.model)
    out = _outputs(classifier, pixels, [layer]).get(layer) if layer in names else None
    if out is None or not _is_map(out, pixels):  # the valid names, for the message: a pass with every hook
        raise UnknownNameError("layer with a C x H x W feature map", layer, feature_maps(classifier, pixels, names))
    return out[0]


def strongest_channels(maps: torch.Tensor, count: int) -> tuple[list[int], torch.Tensor]:
    """The `count` channels with the highest mean activation: their indices and count x H x W maps."""
    order = maps.mean((1, 2)).argsort(descending=True)[:count]
    return order.tolist(), maps[order]


def heat_map(channel: torch.Tensor) -> Image.Image:
    """One H x W map scaled to its own range, in the viridis colour map."""
    from matplotlib import colormaps

    low, high = channel.min(), channel.max()
    scaled = ((channel - low) / (high - low).clamp(min=1e-12)).cpu().numpy()
    return Image.fromarray((colormaps["viridis"](scaled)[..., :3] * 255).astype("uint8"))


def feature_grid(pixels: torch.Tensor, maps: torch.Tensor, channels: list[int], layer: str) -> Image.Image:
    """The image, then one heat map per channel, captioned, in a near-square grid."""
    tiles = [tile(to_pil(pixels), layer, TILE)]
    tiles += [tile(heat_map(m), f"channel {c}", TILE) for c, m in zip(channels, maps)]
    return grid(tiles)

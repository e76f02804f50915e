"""The feature network: normalise a uint8 batch, run the backbone up to its feature layer, pool."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from featx.backbones._preprocessing import normalisation
from featx.backbones._registry import Backbone
from featx.backbones._weights import WeightsSource
from featx.errors import ParameterError, UnknownNameError
from featx.features._space import parse_layers
from featx.names import POOLINGS, validate_parameters


def pool(x: torch.Tensor, how: str) -> torch.Tensor:
    """Global pooling of an N x C x H x W map to N x C; 2-D inputs pass through."""
    if x.dim() == 2:
        return x
    if x.dim() != 4:
        raise ValueError(f"cannot pool a feature map of shape {tuple(x.shape)}")
    if how == "avg":
        return x.mean((2, 3))
    if how == "max":
        return x.amax((2, 3))
    if how == "gem":  # generalised mean, p=3 (Radenovic et al.); the usual choice for retrieval features
        return x.float().clamp(min=1e-6).pow(3).mean((2, 3)).pow(1.0 / 3).to(x.dtype)
    raise UnknownNameError("pooling", how, POOLINGS)


def d4_views(x: torch.Tensor) -> torch.Tensor:
    """N x C x S x S -> 8N x C x S x S: the 8 symmetries of the square (rotations, mirror images), view-major."""
    t = x.transpose(2, 3)
    return torch.cat([x, x.flip(3), x.flip(2), x.flip((2, 3)), t, t.flip(3), t.flip(2), t.flip((2, 3))])


class _ForwardFeatures(nn.Module):
    """timm's forward_features as a module returning {node: map}, like an fx feature extractor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.model.forward_features(x)}


class FeatureNetwork(nn.Module):
    """uint8 N x 3 x H x W -> float N x D features: normalise, backbone trunk, pool, concatenate layers.

    `tta="d4"`: the trunk runs on the 8 symmetries of each (square) image and their features are averaged.
    """

    def __init__(
        self, trunk: nn.Module, mean: Sequence[float], std: Sequence[float], pooling: str, tta: str = "none"
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.pooling = pooling
        self.tta = tta
        scale, shift = normalisation(mean, std)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.scale.dtype) * self.scale - self.shift

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalise(images)
        maps = self.trunk(d4_views(x) if self.tta == "d4" else x)
        features = torch.cat([pool(m, self.pooling).flatten(1) for m in maps.values()], dim=1)
        return features.unflatten(0, (8, -1)).mean(0) if self.tta == "d4" else features


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def build_feature_network(
    backbone: Backbone,
    weights: WeightsSource,
    layer: str | Sequence[str] | None = None,
    pooling: str = "avg",
    tta: str = "none",
) -> FeatureNetwork:
    """The backbone truncated at `layer` (default: its last feature map), in eval mode; `tta`: see TTAS."""
    validate_parameters(pooling=pooling, tta=tta)  # an unknown tta would run as "none", silently
    model = backbone.build_model(weights)
    nodes = parse_layers(layer)
    if nodes is None and backbone.feature_node is None:
        trunk: nn.Module = _ForwardFeatures(model)
    else:
        nodes = nodes or [backbone.feature_node]
        valid = layer_names(model)
        for node in nodes:
            if node not in valid:
                raise UnknownNameError(f"layer of {backbone.name}", node, valid)
        if backbone.family == "timm":
            from timm.models import create_feature_extractor
        else:
            from torchvision.models.feature_extraction import create_feature_extractor
        try:
            trunk = create_feature_extractor(model, return_nodes={n: n for n in nodes})
        except ValueError:  # a module the traced graph has no node for (an activation inside a fused block)
            traced = _graph_nodes(model, backbone.family)
            raise UnknownNameError(f"layer of {backbone.name} (a node of its traced graph)",
                                   next(n for n in nodes if n not in traced), traced) from None
    pre = backbone.preprocessing_for(weights)
    return FeatureNetwork(trunk, pre.mean, pre.std, pooling, tta).eval()


def _graph_nodes(model: nn.Module, family: str) -> list[str]:
    """The node names a feature extractor of `model` can return (torchvision's or timm's tracing)."""
    if family == "timm":
        from timm.models import get_graph_node_names
    else:
        from torchvision.models.feature_extraction import get_graph_node_names
    return get_graph_node_names(model)[1]


def layer_widths(backbone: Backbone, layer: str | Sequence[str] | None, crop: int) -> dict[str, int]:
    """Features each layer contributes, in output order (and the layer names checked). Shapes only: the
    truncated network runs a blank crop x crop image on the meta device, so no weights are read and nothing
    is computed."""
    with torch.device("meta"):
        network = build_feature_network(backbone, backbone.weights("random"), layer)
        try:
            maps = network.trunk(network.normalise(torch.zeros(1, 3, crop, crop, dtype=torch.uint8)))
        except (RuntimeError, AssertionError, ValueError) as exc:  # too small for its pooling, or a fixed input size
            raise ParameterError(f"{backbone.name} cannot take {crop} x {crop} images ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else 'refused'}): choose another --image-size") from None
        if tokens := [name for name, m in maps.items() if m.dim() not in (2, 4)]:  # a vision transformer's N x T x D
            raise ParameterError(f"{backbone.name} gives {tuple(maps[tokens[0]].shape)} token sequences at "
                                 f"{tokens[0]}, not feature maps: featx pools CNN feature maps (N x C x H x W)")
        return {name: int(pool(m, "avg").flatten(1).shape[1]) for name, m in maps.items()}

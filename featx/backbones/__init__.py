"""Backbones: the registry (name -> builder, weights, preprocessing, metadata), weights sources, preprocessing and
the compute device. The only place that knows model specifics. May import featx.images."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Backbone": "._registry", "REGISTRY": "._registry", "get_backbone": "._registry", "model_names": "._registry",
    "WeightsSource": "._weights", "FileWeights": "._weights",
    "Preprocessing": "._preprocessing",
    "resolve_device": "._device",
})

"""Look inside a classifier: feature maps, class visualisation by gradient ascent, adversarial examples.

Everything works on one image in pixel space: a float 1 x 3 x H x W tensor in [0, 1] at the backbone's
input size, normalised inside the differentiable forward pass (`PixelClassifier`).
May import featx.features, featx.backbones and featx.images."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "PixelClassifier": "._classes", "resolve_class": "._classes",
    "activations": "._feature_maps", "default_layer": "._feature_maps", "feature_grid": "._feature_maps",
    "strongest_channels": "._feature_maps",
    "dream": "._dream", "pgd": "._attack", "parse_eps": "._attack", "comparison": "._attack",
    "load_pixels": "._images", "save_png": "._images",
})

"""Classifiers on cached features: the classifier registry, fitting (cross-validated), saved model bundles and
prediction/evaluation of new images. May import featx.features, featx.reports and below."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "CLASSIFIERS": "._classifiers",
    "fit": "._fitting",
    "ModelBundle": "._bundle", "load_bundle": "._bundle",
    "predict": "._inference", "evaluate": "._inference",
})

"""featx: transfer learning with pretrained vision backbones.

Run a pretrained CNN once over your images, cache the features in HDF5, train scikit-learn on them.
Heavy modules (torch, h5py) load on first use, so `import featx` and `featx --help` stay instant.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "audit": "featx.auditing",
    "Audit": "featx.auditing",
    "extract": "featx.extraction",
    "ExtractReport": "featx.extraction",
    "load_features": "featx.store",
    "FeatureSet": "featx.store",
    "FeatureStore": "featx.store",
    "get_backbone": "featx.backbones",
    "FeatxError": "featx.errors",
    "PretrainedFeatures": "featx.transformer",
    "symmetries": "featx.views",
    "finetune": "featx.finetuning",
    "FinetuneConfig": "featx.finetuning",
    "FinetunedClassifier": "featx.finetuned_classifier",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featx' has no attribute {name!r}")

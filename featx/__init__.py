"""featx: transfer learning with pretrained vision backbones.

Run a pretrained CNN once over your images, cache the features in HDF5, train scikit-learn on them.
Heavy modules (torch, h5py) load on first use, so `import featx` and `featx --help` stay instant.
"""
from featx import _moved
from featx._lazy import lazy_exports

__version__ = "0.1.0"

_moved.install()
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "audit": ".auditing", "Audit": ".auditing",
    "extract": ".features", "ExtractReport": ".features",
    "load_features": ".features", "FeatureSet": ".features", "FeatureStore": ".features",
    "PretrainedFeatures": ".features",
    "get_backbone": ".backbones",
    "FeatxError": ".errors",
    "symmetries": ".images",
    "export_embeddings": ".exploring", "similar": ".exploring", "embedding_map": ".exploring",
    "load_model": ".finetuning",
    "finetune": ".finetuning", "FinetuneConfig": ".finetuning", "FinetunedClassifier": ".finetuning",
})
__all__ = [*__all__, "__version__"]

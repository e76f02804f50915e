"""Features: the feature space, the HDF5 store, decoding loaders, the feature network and its engines, the one
extraction path (locally or on Ray), nearest neighbours, and the scikit-learn transformer.
May import featx.images and featx.backbones."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FeatureSpace": "._space",
    "FeatureStore": "._store", "FeatureSet": "._store", "load_features": "._store",
    "find_store": "._store", "StoreSummary": "._store",
    "Extractor": "._extractor",
    "extract": "._extraction", "extract_files": "._extraction", "extract_arrays": "._extraction",
    "ExtractReport": "._extraction",
    "PretrainedFeatures": "._transformer",
})

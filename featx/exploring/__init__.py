"""Exploring a store's embeddings beyond classification: export to the formats other tools read (`_export`),
the stored images most like a query (`_similar`), an interactive map of the whole store (`_map`).
May import featx.auditing, featx.classify, featx.features, featx.reports, featx.backbones and featx.images."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "export_embeddings": "._export",
    "similar": "._similar", "Similar": "._similar",
    "embedding_map": "._map",
})

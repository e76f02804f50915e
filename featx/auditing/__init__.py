"""Auditing a store: duplicates, train/test leaks, outliers, likely label errors, and its HTML page.
May import featx.features, featx.images, featx.classify and featx.reports."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"audit": "._audit", "Audit": "._audit", "read_findings": "._audit"})

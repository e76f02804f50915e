"""Reports: metrics, figures (matplotlib, drawn off-screen) and self-contained HTML pages.
May import featx.images (thumbnails) only."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"Report": "._report", "metrics": "._report"})

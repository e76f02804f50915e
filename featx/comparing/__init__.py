"""Comparing candidate feature spaces and classifiers on one split: the leaderboard, fusions, the saved winner.
May import featx.classify, featx.reports, featx.features, featx.backbones and featx.images."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "compare": "._compare", "Comparison": "._leaderboard", "Row": "._leaderboard",
    "Candidate": "._candidates",
})

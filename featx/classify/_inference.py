"""Inference: a saved model bundle on new images, predicting their classes or evaluating it on labelled ones
(`ModelBundle.predict` and `ModelBundle.evaluate`; `featx.load_model` gives the same two for a fine-tuned network).

Images whose content the model's training store holds are read from it (read only: nothing is written to it);
the others are extracted (through the cache) in the bundle's own feature space, never into the training store.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from featx.classify._bundle import ModelBundle
from featx.classify._results import Predictions, Sources
from featx.reports._report import Report

__all__ = ["Predictions", "Sources", "evaluate", "predict"]


def evaluate(bundle: ModelBundle, data: str | os.PathLike | Sequence[str | os.PathLike], weights: str | os.PathLike | None = None,
             **options: Any) -> tuple[Report, Sources]:
    """`bundle.evaluate(data, weights=weights, **options)`."""
    return bundle.evaluate(data, weights=weights, **options)


def predict(bundle: ModelBundle, data: str | os.PathLike | Sequence[str | os.PathLike], weights: str | os.PathLike | None = None,
            **options: Any) -> tuple[Predictions, Sources]:
    """`bundle.predict(data, weights=weights, **options)`."""
    return bundle.predict(data, weights=weights, **options)

"""`featx.load_model`: one interface for what `featx fit` and `featx finetune` save. It lives here, the one
folder that sees both kinds (finetuning may import classify)."""
from __future__ import annotations

import os

from featx.classify._bundle import ModelBundle, load_bundle
from featx.finetuning._apply import FineTuned, is_finetuned, load_finetuned


def load_model(path: str | os.PathLike, *, unsafe_pickle: bool = False) -> ModelBundle | FineTuned:
    """A model file from `featx fit` (a `ModelBundle`; a pickle only with `unsafe_pickle=True`) or a network from
    `featx finetune` (a `FineTuned`). Both have `predict(data, *, weights=None, tta="none", **options)` and
    `evaluate(...)`, returning (Predictions or Report, an object with `failures` and `summary()`); `options` are
    extraction options (batch_size, workers, device, progress); `training_stores()`: the stores they read."""
    return load_finetuned(path) if is_finetuned(path) else load_bundle(path, unsafe_pickle=unsafe_pickle)

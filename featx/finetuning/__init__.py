"""Fine-tuning a backbone with a new head: the configuration and training loop, applying a fine-tuned network to
new images, and the scikit-learn estimator over image paths. May import featx.features and below."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "finetune": "._train", "FinetuneConfig": "._train",
    "load_finetuned": "._apply", "is_finetuned": "._apply", "load_model": "._models",
    "FinetunedClassifier": "._estimator",
})

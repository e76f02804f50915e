"""Fine-tuning a backbone with a new head: the configuration (`_config`, torch-free), the data (`_data`), the
network and its loss (`_model`), the training loop (`_loop`), `finetune` itself (`_train`), applying a
fine-tuned network to new images (`_apply`), the scikit-learn estimator over image paths (`_estimator`), and
`load_model` for either kind of saved model (`_models`)."""
from featx._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "finetune": "._train", "FinetuneConfig": "._config",
    "load_finetuned": "._apply", "is_finetuned": "._apply", "load_model": "._models",
    "FinetunedClassifier": "._estimator",
})

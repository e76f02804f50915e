"""The classifier registry: `--clf` name -> scikit-learn estimator and the grid of its regularisation parameter."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin

from featx.errors import BadInputError, ParameterError, UnknownNameError


@dataclass(frozen=True)
class Classifier:
    """A registry entry: `make(class_weight, seed)` builds the estimator; `param` is tuned over `grid`."""

    name: str
    make: Callable[[object, int], ClassifierMixin]
    param: str
    grid: tuple
    streaming: bool = False  # trained by partial_fit over chunks of the store instead of in memory
    precomputed_kernel: bool = False  # model selection on an RBFGram of the features (see RBFGram)

    def usable_grid(self, n_train: int) -> list:
        """The grid values that work with `n_train` training samples (knn: no more neighbours than samples)."""
        if self.param != "n_neighbors":
            return list(self.grid)
        return [v for v in self.grid if v <= n_train] or [1]


def _logreg(class_weight, seed: int) -> ClassifierMixin:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=3000, class_weight=class_weight, random_state=seed)


def _linsvm(class_weight, seed: int) -> ClassifierMixin:
    from sklearn.svm import LinearSVC

    # dual: scikit-learn's "auto" solves the primal when images outnumber features, slowest at the grid's high C:
    # one fit on 2,099 ELPV cells x 1,280 default features took 9.3 s primal against 2.1 s dual at C=0.01, 57 s
    # against 4.7 s at C=0.1 (balanced accuracy within 0.002); the whole grid, 31 s dual. At 16,000 images neither
    # was a third faster than the other (C=0.001: 68 s primal, 52 s dual; C=0.01: 212 s, 262 s)
    return LinearSVC(dual=True, max_iter=10000, class_weight=class_weight, random_state=seed)


class RBFGram(TransformerMixin, BaseEstimator):
    """The RBF kernel of rows against the training rows, gamma as SVC's "scale" (1 / (features x variance)),
    for an SVC(kernel="precomputed"). Used for model selection only: libsvm computes RBF values in scalar
    loops, once per fit, so a grid of C values x folds recomputes the same kernels; here each is one BLAS
    product, and the grid costs about a sixth of the CPU with the same CV scores
    (benchmarks/svm_selection.py). The saved model is a plain RBF SVC refitted with the chosen C."""

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> RBFGram:
        self.rows_ = np.asarray(X, dtype=np.float64)
        self.gamma_ = 1.0 / (self.rows_.shape[1] * self.rows_.var())
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        from sklearn.metrics.pairwise import rbf_kernel

        return rbf_kernel(np.asarray(X, dtype=np.float64), self.rows_, gamma=self.gamma_)


def _svm(class_weight, seed: int) -> ClassifierMixin:
    from sklearn.svm import SVC

    return SVC(kernel="rbf", gamma="scale", class_weight=class_weight, random_state=seed)


def _knn(class_weight, seed: int) -> ClassifierMixin:
    from sklearn.neighbors import KNeighborsClassifier

    if class_weight is not None:
        raise ParameterError("--class-weight does not apply to knn: neighbours have no class weights")
    return KNeighborsClassifier(weights="distance")


def _sgd(class_weight, seed: int) -> ClassifierMixin:
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", class_weight=class_weight, random_state=seed)


def _log_grid(low: int, high: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.logspace(low, high, high - low + 1))


CLASSIFIERS: dict[str, Classifier] = {
    "logreg": Classifier("logreg", _logreg, "C", _log_grid(-4, 2)),
    # linsvm: up to C = 1; at C = 10 the dual did not converge in 10,000 iterations on ELPV and cost the most
    # (13 s a fit against 0.2-2 s at C <= 0.01; 5-fold balanced accuracy 0.474, the best 0.516 at C = 0.01)
    "linsvm": Classifier("linsvm", _linsvm, "C", _log_grid(-5, 0)),
    "svm": Classifier("svm", _svm, "C", _log_grid(-1, 3), precomputed_kernel=True),
    "knn": Classifier("knn", _knn, "n_neighbors", (1, 3, 5, 9, 15, 25)),
    "sgd": Classifier("sgd", _sgd, "alpha", _log_grid(-5, 0), streaming=True),
}


def get_classifier(name: str) -> Classifier:
    if name not in CLASSIFIERS:
        raise UnknownNameError("classifier", name, CLASSIFIERS)
    return CLASSIFIERS[name]


def platt_scaled(model: ClassifierMixin, y: np.ndarray, cv: int, seed: int, ensemble: bool = True) -> ClassifierMixin:
    """`model` (one without probabilities: linsvm, svm) with class probabilities by Platt scaling over inner
    folds, when fitted within `cv`-fold cross-validation on labels `y`: at most 3, at most the images per class
    of an outer fit, shuffled by `seed`. `ensemble=False`: one model fitted on all the images, its sigmoid on the
    inner folds' decisions (what SVC(probability=True) did); else the average of the inner folds' models."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold

    fewest = int(np.bincount(y).min())
    inner = min(3, fewest * (cv - 1) // cv)
    if inner < 2:
        raise BadInputError(f"{type(model).__name__} gives probabilities by Platt scaling, which needs more images "
                            f"per class than {fewest}")
    # shuffled: rows come in file order, and files often in groups (ELPV: the monocrystalline cells first); folds
    # in that order left an SVM's sigmoid with one class for every test cell (accuracy 0.575 against 0.771)
    return CalibratedClassifierCV(model, cv=StratifiedKFold(inner, shuffle=True, random_state=seed), ensemble=ensemble)


def class_scores(model: BaseEstimator, x: np.ndarray) -> tuple[np.ndarray, str]:
    """(n x classes scores, "probability" or "score"): probabilities when the model gives them, else its
    decision function (binary: the second class's score, the first gets its opposite)."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x), "probability"
    scores = model.decision_function(x)
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    return scores, "score"

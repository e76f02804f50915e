"""Likely label errors: out-of-fold probabilities of the classifier cross-validation shows best, refitted
without cleanlab's likely errors (prune-and-refit), ranked by cleanlab's adjusted self-confidence."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from featx.auditing._files import Files, Table, row_labels
from featx.errors import BadInputError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

AUTO = "auto"
CANDIDATES = ("logreg", "linsvm")  # what `clf="auto"` compares (docs/audit.md: knn, then svm ranked planted errors worst)
AUTO_ALL_ROWS = 5_000  # beyond, `clf="auto"` takes logreg alone: linsvm's fits grow faster than the images (at
# 16,000 training rows one linsvm fit took 52-262 s, a logreg fit 15 s on average: docs/audit.md "Scale")
REFIT_ROUNDS = 2  # prune-and-refit rounds of the label check (docs/audit.md: planted errors found, by rounds)


def searched(x: np.ndarray, y: np.ndarray, clf: str = "logreg", cv: int = 5, seed: int = 0,
             n_jobs: int | None = None) -> Pipeline:
    """The pipeline (standardisation, `clf`) with its regularisation picked by `featx fit`'s stratified
    `cv`-fold grid search (`classify._fitting.search`: svm on the RBF Gram computed once), not fitted.
    Classifiers without probabilities (linsvm, svm) are then Platt-scaled inside each fold of `refit`."""
    from threadpoolctl import threadpool_limits

    from featx.classify._classifiers import get_classifier, platt_scaled
    from featx.classify._fitting import search

    with threadpool_limits(limits=1, user_api="blas"):  # as in featx fit: parallel fits, not threads
        pipeline, _, _ = search(x, y, get_classifier(clf), None, cv, seed, n_jobs)  # its folds are _folds(cv, seed)
    if not hasattr(pipeline.named_steps["clf"], "predict_proba"):
        pipeline.steps[-1] = ("clf", platt_scaled(pipeline.named_steps["clf"], y, cv, seed))
    return pipeline


def _folds(cv: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(cv, shuffle=True, random_state=seed)


def refit(estimator: Pipeline, x: np.ndarray, y: np.ndarray, keep: np.ndarray | None, cv: int = 5, seed: int = 0, n_jobs: int | None = None) -> np.ndarray:
    """Out-of-fold probabilities of every sample from `estimator` refitted on each fold's training samples
    that are in `keep` (None: all; prune-and-refit: likely label errors left out do not teach their label)."""
    from joblib import Parallel, delayed
    from sklearn.base import clone
    from sklearn.calibration import CalibratedClassifierCV
    from threadpoolctl import threadpool_limits

    last = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    need = last.cv.get_n_splits() if isinstance(last, CalibratedClassifierCV) else 1  # a Platt-scaled one's inner folds
    n_classes = int(y.max()) + 1

    def fold(train, test):
        kept = train if keep is None else train[keep[train]]
        counts = np.bincount(y[kept], minlength=n_classes)[np.unique(y[train])]
        train = kept if counts.min() >= need else train  # never prune a class away, or below its inner folds
        return test, clone(estimator).fit(x[train], y[train]).predict_proba(x[test])

    probs = np.zeros((len(y), n_classes))
    with threadpool_limits(limits=1, user_api="blas"):
        for test, p in Parallel(n_jobs=n_jobs)(delayed(fold)(train, test) for train, test in _folds(cv, seed).split(x, y)):
            probs[test] = p
    return probs


def cv_score(y: np.ndarray, probs: np.ndarray) -> float:
    """featx fit's cross-validation score (balanced accuracy) of out-of-fold probabilities."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, probs.argmax(axis=1)))


@dataclass
class Choice:
    """The classifier whose out-of-fold probabilities rank the label errors, its CV score, and the scores
    of the others compared (`clf="auto"`)."""

    clf: str
    score: float
    probs: np.ndarray
    compared: dict[str, float]
    estimator: object = None  # the pipeline with the regularisation chosen, refitted by `prune_and_refit`
    pruned: list[int] = field(default_factory=list)  # images left out of the training folds, per refit round
    alone: str = "given by --clf"  # why no other was compared

    def describe(self) -> str:
        others = ", ".join(f"{name} {score:.3f}" for name, score in self.compared.items() if name != self.clf)
        how = f"best of {len(self.compared)} by CV balanced accuracy ({others})" if others else self.alone
        times = {1: "once", 2: "twice"}.get(len(self.pruned), f"{len(self.pruned)} times")
        refits = f"; refitted {times} without its likely label errors ({', then '.join(map(str, self.pruned))} images)" if self.pruned else ""
        return f"{self.clf}, CV balanced accuracy {self.score:.3f}; {how}{refits}"


def choose_classifier(x: np.ndarray, y: np.ndarray, clf: str = AUTO, cv: int = 5, seed: int = 0, n_jobs: int | None = None,
                      step: Callable[[str], None] = lambda line: None) -> Choice:
    """Out-of-fold probabilities of `clf`, or with `clf="auto"` of each of CANDIDATES (beyond AUTO_ALL_ROWS
    images, logreg alone), keeping the one of the highest CV balanced accuracy (ties: the first). Measured on
    planted errors (docs/audit.md): the best classifier differs between draws and data sets."""
    scores, best = {}, None
    names, alone = _compared(clf, len(y))
    for name in names:
        step(f"label errors: out-of-fold probabilities of {name} on {len(y)} images ({cv} folds)")
        try:
            estimator = searched(x, y, name, cv, seed, n_jobs)
        except BadInputError:
            if clf != AUTO:
                raise
            continue  # too few images to calibrate it: the others are compared
        probs = refit(estimator, x, y, None, cv, seed, n_jobs)
        scores[name] = cv_score(y, probs)
        if best is None or scores[name] > best.score:
            best = Choice(name, scores[name], probs, scores, estimator, alone=alone)
    return best


def _compared(clf: str, n_images: int) -> tuple[tuple[str, ...], str]:
    """The classifiers `choose_classifier` compares, and why one is alone when it is."""
    if clf != AUTO:
        return (clf,), "given by --clf"
    if n_images > AUTO_ALL_ROWS:
        return CANDIDATES[:1], f"auto takes it alone beyond {AUTO_ALL_ROWS:,} images (--clf forces another)"
    return CANDIDATES, "the others cannot be Platt-scaled with so few images per class"


def prune_and_refit(choice: Choice, x: np.ndarray, y: np.ndarray, rounds: int = REFIT_ROUNDS, cv: int = 5, seed: int = 0,
                    n_jobs: int | None = None, step: Callable[[str], None] = lambda line: None) -> Choice:
    """`rounds` times: leave cleanlab's likely label errors (prune by noise rate) out of every training fold,
    refit the chosen classifier and predict every image out of fold again. Errors that look alike (a batch
    filed under one wrong class) otherwise teach the models of the other folds their wrong label: measured on
    planted ELPV errors (docs/audit.md), `clf="auto"` ranked 6.6 of 15 in the top 15 and 10.6 in the top 45
    (mean of 5 draws), after two rounds 9.0 and 11.6 (300 px GeM features: 5.6 / 12.4, then 6.6 / 13.2)."""
    from cleanlab.filter import find_label_issues

    for _ in range(rounds):
        keep = ~find_label_issues(y, choice.probs, filter_by="prune_by_noise_rate")
        step(f"label errors: {choice.clf} refitted without {int((~keep).sum())} likely errors ({cv} folds)")
        choice.probs = refit(choice.estimator, x, y, keep, cv, seed, n_jobs)
        choice.pruned.append(int((~keep).sum()))
    return choice


def label_errors(files: Files, clf: str, cv: int, seed: int, n_jobs: int | None, step: Callable[[str], None],
                 refit_rounds: int) -> tuple[Table | None, set[str], int, list[str]]:
    """Labelled rows ranked by cleanlab's label quality (self-confidence of the out-of-fold probability of
    the given label adjusted for class imbalance, lowest first) after `refit_rounds` of `prune_and_refit`; flagged: cleanlab's issues
    (confident learning, prune by noise rate)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = row_labels(files)
    counts = Counter(label for label in labels if label)
    classes = sorted(c for c, n in counts.items() if n >= 2)
    if len(classes) < 2:
        return None, set(), 0, ["label errors need at least two classes with two or more images each"]
    use = np.array([r for r, label in enumerate(labels) if label in classes])
    y = np.array([classes.index(labels[r]) for r in use])
    folds = min(cv, int(np.bincount(y).min()))
    choice = choose_classifier(files.features[use], y, clf, folds, seed, n_jobs, step)
    choice = prune_and_refit(choice, files.features[use], y, refit_rounds, folds, seed, n_jobs, step)
    probs = choice.probs
    # adjusted: each class's mean self-confidence subtracted first, else a small class's images all rank high
    # (ELPV with 50 planted errors: 48% of them in the top 50 without, 60% with; docs/audit.md)
    quality = get_label_quality_scores(y, probs, adjust_pred_probs=True)
    issue = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    table = Table(["rank", "path", "label", "suggested", "p_label", "quality", "flagged"])
    flagged = set()
    for rank, s in enumerate(np.argsort(quality, kind="stable").tolist(), 1):
        for i in (i for i in files.by_row[int(use[s])] if files.labels[i]):  # an unlabelled copy has no label to doubt
            table.rows.append([rank, files.paths[i], files.labels[i], classes[int(probs[s].argmax())],
                               float(probs[s, y[s]]), float(quality[s]), bool(issue[s])])
            if issue[s]:
                flagged.add(files.paths[i])
    left_out = len(labels) - len(use)
    notes = [f"label errors ranked by {choice.describe()}"]
    notes += [f"{left_out} images left out of the label check (unlabelled, conflicting or in a class of one)"] if left_out else []
    return table, flagged, int(issue.sum()), notes


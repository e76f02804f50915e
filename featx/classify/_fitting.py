"""Fitting: a classifier on a store's features, its regularisation chosen by cross-validation.

Samples are unique image contents (store rows): files with identical bytes count once, so a duplicate can
never sit on both sides of the train/test split. The test split is held out before model selection.
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featx.classify._bundle import ModelBundle
from featx.classify._classifiers import Classifier, RBFGram, class_scores, get_classifier
from featx.errors import BadInputError, ParameterError, StoreWarning, UnknownNameError
from featx.features._store import FeatureStore, nonfinite_note
from featx.names import CLASS_WEIGHTS, MAX_SEED, SCORINGS
from featx.reports._figures import map_rows
from featx.reports._report import Outcomes, Report, metrics

SCORING = SCORINGS[0]
BLOCK_BYTES = 64 << 20  # features read per step when streaming
TEST, WHOLE = -2, -1  # streaming: the fold of test samples; the model trained on every training fold


@dataclass
class Samples:
    """The labelled rows of a store: row indices, labels 0..k-1 into `classes`, the train/test split, and a
    file of each row."""

    rows: np.ndarray
    labels: np.ndarray
    classes: list[str]
    train: np.ndarray  # indices into rows/labels
    test: np.ndarray
    paths: list[str]


@dataclass
class Trained:
    """What a trainer returns: the fitted pipeline, the chosen value with every CV score, the test part's
    predictions and class scores (`classifiers.class_scores`), and the feature-map sample (features, labels)
    of the `map_rows` of the samples."""

    pipeline: object  # sklearn Pipeline: scaler + classifier
    best: object
    cv_scores: list[tuple[object, float, float]]  # (value, mean, std) per grid value
    predicted: np.ndarray
    test_scores: np.ndarray  # n_test x classes
    score_kind: str  # "probability" or "score"
    map_sample: tuple[np.ndarray, np.ndarray]


def samples(store: FeatureStore, cv: int, test_size: float, seed: int, group: Callable[[str], str] | None) -> Samples:
    """Labelled unique rows, split (stratified by class, or class and `group` of the file); clear errors for no
    labels, one class, or too few images per class."""
    from sklearn.model_selection import train_test_split

    labelled, nonfinite = store.without_nonfinite(
        {path: entry for path, entry in store.present_files().items() if entry[1] >= 0})
    if nonfinite:
        warnings.warn(StoreWarning(f"{nonfinite_note(store.path, nonfinite)}; left out"), stacklevel=2)
    entries = np.array(list(labelled.values()), dtype=np.int64).reshape(-1, 2)
    if not len(entries):
        raise BadInputError(f"{store.path} has no labelled images (use class folders or CSV labels when extracting)")
    rows, first = np.unique(entries[:, 0], return_index=True)
    paths = np.array(list(labelled), dtype=object)[first]
    labels_of_row: dict[int, set[int]] = {}
    for row, label in entries.tolist():
        labels_of_row.setdefault(row, set()).add(label)
    conflicting = {row for row, labels in labels_of_row.items() if len(labels) > 1}
    if conflicting:
        names = [path for path, (row, _) in labelled.items() if row in conflicting]
        raise BadInputError(
            f"identical images carry different labels: {', '.join(names[:6])}"
            f"{' ...' if len(names) > 6 else ''}; remove the copies or fix their labels"
        )
    present, labels = np.unique(entries[first, 1], return_inverse=True)
    classes = [store.classes()[i] for i in present]
    check_classes(str(store.path), classes, labels, cv)
    try:
        strata = labels if group is None else [f"{label}/{group(path)}" for label, path in zip(labels, paths)]
        train, test = train_test_split(np.arange(len(rows)), test_size=test_size, stratify=strata, random_state=seed)
    except ValueError as exc:
        raise BadInputError(f"cannot hold out a stratified test split (--test-size {test_size}): {exc}") from None
    check_training_part(classes, labels[train], cv, f"holding out --test-size {test_size}", ("--cv", "--test-size"))
    return Samples(rows, labels, classes, np.sort(train), np.sort(test), list(paths))


def check_classes(source: str, classes: Sequence[str], labels: np.ndarray, cv: int, test_split: bool = True) -> None:
    """Refuse (one line) labels of a single class, or a class with fewer images than `cv` folds (plus one for
    the test split when one is drawn from them), naming the classes and their counts."""
    if len(classes) < 2:
        raise BadInputError(f"{source} has a single class ({classes[0]}); a classifier needs at least two")
    needed = cv + test_split
    few = [f"{c} ({n})" for c, n in zip(classes, np.bincount(labels, minlength=len(classes))) if n < needed]
    if few:
        split = " plus the test split" if test_split else ""
        raise BadInputError(f"classes with fewer than {needed} images (--cv {cv} folds{split}): {', '.join(few)}; "
                            f"add images{' or lower --cv' if cv > 2 else ''}")


def check_training_part(classes: Sequence[str], train_labels: np.ndarray, cv: int, held_out: str,
                        lower: Sequence[str]) -> None:
    """Refuse (one line) a training part with a class of fewer images than `cv` folds, after `held_out` (what
    left it); `lower`: the options that would help."""
    short = [f"{c} ({n})" for c, n in zip(classes, np.bincount(train_labels, minlength=len(classes))) if n < cv]
    if short:
        options = [option for option in lower if not (option == "--cv" and cv == 2)]  # 2: the least
        raise BadInputError(f"after {held_out}, classes with fewer training images than --cv {cv} folds: "
                            f"{', '.join(short)}; add images" + (f" or lower {' or '.join(options)}" if options else ""))


def check_split(cv: int, test_size: float, seed: int, n_jobs: int | None) -> None:
    """Refuse (one line, named as the options) a split or cross-validation that fit and compare cannot run."""
    if cv < 2:
        raise ParameterError(f"--cv must be at least 2, not {cv}")
    if not 0 < test_size < 1:
        raise ParameterError(f"--test-size must be between 0 and 1, not {test_size}")
    if not 0 <= seed <= MAX_SEED:  # what scikit-learn's random_state takes
        raise ParameterError(f"--seed must be between 0 and {MAX_SEED}, not {seed}")
    if n_jobs == 0:
        raise ParameterError("--n-jobs 0 runs nothing: a number of parallel fits, or -1 for all cores")


def _class_weight(option: str | None, labels: np.ndarray, k: int) -> dict | None:
    """None, or balanced weights as an explicit dict (partial_fit does not accept 'balanced'); `option` is
    checked by `fit`."""
    if option is None:
        return None
    from sklearn.utils.class_weight import compute_class_weight

    return dict(enumerate(compute_class_weight("balanced", classes=np.arange(k), y=labels).tolist()))


def search(x: np.ndarray, y: np.ndarray, clf: Classifier, class_weight: dict | None, folds: int | list,
           seed: int, n_jobs: int | None = None, scale: object = None,
           scoring: str = SCORING) -> tuple[object, object, list[tuple[object, float, float]]]:
    """Stratified K-fold grid search of `clf`'s parameter on (x, y): (pipeline set to the best value, not yet
    fitted; the best value; (value, mean, std) per grid value). `folds`: a number of folds or the (train, test)
    index pairs (the same folds for several searches); `scale`: the first step (default: a StandardScaler);
    `scoring`: one of `names.SCORINGS`."""
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler() if scale is None else scale
    n_train = len(y) * (folds - 1) // folds if isinstance(folds, int) else min(len(train) for train, _ in folds)
    grid = clf.usable_grid(n_train)
    pipeline = Pipeline([("scale", scale), ("clf", clf.make(class_weight, seed))])
    searched = pipeline
    if clf.precomputed_kernel:
        kernel_clf = clf.make(class_weight, seed).set_params(kernel="precomputed")
        searched = Pipeline([("scale", clone(scale)), ("gram", RBFGram()), ("clf", kernel_clf)])
    if isinstance(folds, int):
        folds = StratifiedKFold(folds, shuffle=True, random_state=seed)
    grid_search = GridSearchCV(searched, {f"clf__{clf.param}": grid}, scoring=scoring, n_jobs=n_jobs, refit=False, cv=folds)
    with warnings.catch_warnings():  # a value that stops before converging is scored as it is (linsvm at C = 1 on
        warnings.simplefilter("ignore", ConvergenceWarning)  # ELPV); the fit of the chosen value still warns
        grid_search.fit(x, y)
    results = grid_search.cv_results_
    scores = [(value, float(mean), float(std))
              for value, mean, std in zip(grid, results["mean_test_score"], results["std_test_score"])]
    best = grid_search.best_params_[f"clf__{clf.param}"]
    return pipeline.set_params(**{f"clf__{clf.param}": best}), best, scores


def _fit_in_memory(store: FeatureStore, s: Samples, clf: Classifier, class_weight, cv: int, seed: int, n_jobs) -> Trained:
    """Load the features once; grid search with stratified K-fold on the training part."""
    x = store.rows(s.rows).astype(np.float32, copy=False)
    pipeline, best, scores = search(x[s.train], s.labels[s.train], clf, class_weight, cv, seed, n_jobs)
    picked = map_rows(len(s.rows), seed)
    model = pipeline.fit(x[s.train], s.labels[s.train])
    return Trained(model, best, scores, model.predict(x[s.test]), *class_scores(model, x[s.test]), (x[picked], s.labels[picked]))


def _blocks(store: FeatureStore, n_rows: int, block_rows: int, rng: np.random.Generator | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row indices, features) of the store in blocks of whole HDF5 chunks, in random chunk order when rng;
    each block is one read (the store's lock is held for it only)."""
    chunk = store.chunk_rows or block_rows
    starts = np.arange(0, n_rows, chunk)
    if rng is not None:
        starts = rng.permutation(starts)
    per_block = max(1, block_rows // chunk)
    for i in range(0, len(starts), per_block):
        picked = np.sort(starts[i : i + per_block])
        yield (
            np.concatenate([np.arange(a, min(a + chunk, n_rows)) for a in picked]),
            store.row_ranges(picked, chunk).astype(np.float32, copy=False),
        )


def _fit_streaming(
    store: FeatureStore, s: Samples, clf: Classifier, class_weight, cv: int, seed: int, epochs: int, block_rows: int | None
) -> Trained:
    """SGD by partial_fit over blocks of the store: every grid value x (each CV fold + the whole training
    part) is trained in the same passes, so the store is read epochs + 2 times whatever the grid."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    n_rows, k, width = store.count("rows"), len(s.classes), store.n_features
    block_rows = block_rows or max(1, BLOCK_BYTES // (4 * width))
    sample_of_row = np.full(n_rows, -1)  # row -> index into s.rows / s.labels
    sample_of_row[s.rows] = np.arange(len(s.rows))
    fold = np.full(len(s.rows), TEST)  # else the CV fold of a training sample
    for f, (_, held) in enumerate(StratifiedKFold(cv, shuffle=True, random_state=seed).split(s.train, s.labels[s.train])):
        fold[s.train[held]] = f
    folds = [*range(cv), WHOLE]
    models = {(v, f): clf.make(class_weight, seed).set_params(**{clf.param: v}) for v in clf.grid for f in folds}

    def labelled(rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = sample_of_row[rows] >= 0
        return sample_of_row[rows[keep]], x[keep]

    def trained_on(idx: np.ndarray, f: int) -> np.ndarray:  # what model f learns from: the training part less fold f
        return (fold[idx] >= 0) & (fold[idx] != f)

    scalers = {f: StandardScaler() for f in folds}  # one per model: a fold's scaler never sees its held-out rows
    for rows, x in _blocks(store, n_rows, block_rows, None):
        idx, x = labelled(rows, x)
        for f, scaler in scalers.items():
            if (use := trained_on(idx, f)).any():
                scaler.partial_fit(x[use])
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for rows, x in _blocks(store, n_rows, block_rows, rng):
            idx, x = labelled(rows, x)
            order = rng.permutation(len(idx))
            idx, x = idx[order], x[order]
            for f in folds:
                use = trained_on(idx, f)
                if use.any():
                    scaled = scalers[f].transform(x[use])
                    for v in clf.grid:
                        models[v, f].partial_fit(scaled, s.labels[idx[use]], classes=np.arange(k))
    predicted = np.full((len(clf.grid), len(s.rows)), -1)  # CV predictions on training samples, final on test
    test_position = np.full(len(s.rows), -1)
    test_position[s.test] = np.arange(len(s.test))
    test_scores = np.zeros((len(clf.grid), len(s.test), k), np.float32)  # class scores of each final model
    kind = "score"
    picked = map_rows(len(s.rows), seed)
    sample = np.zeros((len(picked), width), np.float32)
    for rows, x in _blocks(store, n_rows, block_rows, None):
        idx, x = labelled(rows, x)
        hit = np.isin(idx, picked)
        sample[np.searchsorted(picked, idx[hit])] = x[hit]
        for f in folds:
            mine = fold[idx] == (TEST if f == WHOLE else f)
            if mine.any():
                scaled = scalers[f].transform(x[mine])
                for g, v in enumerate(clf.grid):
                    predicted[g, idx[mine]] = models[v, f].predict(scaled)
                    if f == WHOLE:
                        test_scores[g, test_position[idx[mine]]], kind = class_scores(models[v, f], scaled)
    return _pick_streamed(s, clf, models, scalers[WHOLE], predicted, (test_scores, kind), fold, cv,
                          (sample, s.labels[picked]))


def _pick_streamed(
    s: Samples, clf: Classifier, models: dict, scaler, predicted: np.ndarray, test_scores: tuple[np.ndarray, str],
    fold: np.ndarray, cv: int, map_sample,
) -> Trained:
    """Choose the grid value by mean CV score; its whole-training-part model becomes the pipeline."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import Pipeline

    scores = []
    for g, v in enumerate(clf.grid):
        per_fold = [balanced_accuracy_score(s.labels[fold == f], predicted[g, fold == f]) for f in range(cv)]
        scores.append((v, float(np.mean(per_fold)), float(np.std(per_fold))))
    g = int(np.argmax([mean for _, mean, _ in scores]))
    best = clf.grid[g]
    pipeline = Pipeline([("scale", scaler), ("clf", models[best, WHOLE])])
    return Trained(pipeline, best, scores, predicted[g, s.test], test_scores[0][g], test_scores[1], map_sample)


def fit(
    store: str | os.PathLike,
    clf: str = "logreg",
    *,
    cv: int = 5,
    test_size: float = 0.2,
    seed: int = 0,
    class_weight: str | None = None,
    n_jobs: int | None = None,
    epochs: int = 10,
    block_rows: int | None = None,
    group: Callable[[str], str] | None = None,
    wait: bool = False,
) -> tuple[ModelBundle, Report]:
    """Train `clf` on the labelled features of `store`; returns the model bundle and the test-split report.

    Standardisation + classifier; its regularisation is chosen by stratified `cv`-fold cross-validation
    (balanced accuracy) on the training part only. `sgd` streams the store (`epochs` passes, `block_rows`
    rows read at a time) instead of loading it. `group(path)` names a group of each file (e.g. a camera or
    cell type): the test split is then stratified by class and group.
    Files no longer on disk are left out; on a store another process is writing, the rows it committed so
    far are used (`wait`: wait for it to finish first); a StoreWarning says so.
    """
    from threadpoolctl import threadpool_limits

    from featx import __version__

    chosen = get_classifier(clf)
    check_split(cv, test_size, seed, n_jobs)
    if epochs < 1:
        raise ParameterError(f"--epochs must be at least 1, not {epochs}")
    if class_weight is not None and class_weight not in CLASS_WEIGHTS:
        raise UnknownNameError("class weight", class_weight, CLASS_WEIGHTS)
    start = time.perf_counter()
    # One BLAS thread: parallelism comes from --n-jobs over CV fits; threaded BLAS on these small
    # matrices oversubscribes the cores and runs many times slower.
    with FeatureStore.open(store, wait=wait, warn=True) as opened, threadpool_limits(limits=1, user_api="blas"):
        s = samples(opened, cv, test_size, seed, group)
        weight = _class_weight(class_weight, s.labels[s.train], len(s.classes))
        if chosen.streaming:
            trained = _fit_streaming(opened, s, chosen, weight, cv, seed, epochs, block_rows)
        else:
            trained = _fit_in_memory(opened, s, chosen, weight, cv, seed, n_jobs)
        space, dtype, failures = opened.space, opened.dtype, sorted((p, r) for p, (_, r) in opened.failures().items())
        weights_file = opened.weights_file
    hyperparameters = {chosen.param: trained.best}
    details = {
        "classifier": clf,
        "hyperparameters": hyperparameters,
        "class_weight": class_weight,
        "store": str(store),
        "n_train": len(s.train),
        "n_test": len(s.test),
        "cv_folds": cv,
        "scoring": SCORING,
        "cv_scores": [{"param": chosen.param, "value": v, "mean": m, "std": sd} for v, m, sd in trained.cv_scores],
        "seconds": round(time.perf_counter() - start, 2),
    }
    test = s.labels[s.test]
    outcomes = Outcomes.of([s.paths[i] for i in s.test], test, trained.predicted, trained.test_scores, trained.score_kind)
    report = Report(
        s.classes, metrics(test, trained.predicted, s.classes), details, trained.map_sample, outcomes, failures,
        title=f"featx fit: {clf} on {Path(store).name}",
    )
    info = {"classifier": clf, "hyperparameters": hyperparameters, "class_weight": class_weight, "featx": __version__,
            "store": str(Path(store).absolute()),  # predict and evaluate read the rows it already has
            **({"weights_file": str(weights_file)} if weights_file else {})}  # and find fine-tuned weights
    return ModelBundle(trained.pipeline, s.classes, space, dtype, info), report

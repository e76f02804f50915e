"""`featx.compare`: every candidate feature space extracted once into its default store, cross-validated on the
same folds of the same training part, fused, ranked; the winner refitted, scored once on the test part, saved."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from featx.comparing._candidates import (Candidate, CrossFit, Group, Split, candidates, check_no_leak, distinct_weights,
                                        fold_files, listed, seen_in_training, unseen)
from featx.comparing._leaderboard import LEADERBOARD, Comparison, Row, label, tie_note, write_leaderboard
from featx.errors import FeatxError, Interrupted, ParameterError, UnknownNameError
from featx.names import COMPARE_TEST_SIZE, DEFAULT_MODEL, SCORINGS

MODEL = "model.skops"  # the winner, in the --out folder


@dataclass
class _Scored:
    """A leaderboard entry: its row, and the model CV chose for it (`pipeline`, unfitted, with the value CV
    chose in `chosen`) on the columns of `spaces`' features side by side."""

    row: Row
    spaces: tuple[Candidate, ...] = ()
    pipeline: object = None
    chosen: dict = field(default_factory=dict)


class _Run:
    """One comparison's state: the split, its folds, each space's features and rate, the scored candidates."""

    def __init__(self, split: Split, weights: list[str], cv: int, seed: int, scoring: str, n_jobs, device: str,
                 engine: str, progress: bool, log) -> None:
        self.weights, self.cv, self.seed, self.scoring, self.n_jobs = weights, cv, seed, scoring, n_jobs
        self.device, self.engine, self.progress, self.log = device, engine, progress, log
        self.notes: list[str] = []
        self.use(split)
        self.features: dict[Candidate, np.ndarray | FeatxError] = {}
        self.rates: dict[Candidate, float | None] = {}
        self.stores: dict[Candidate, Path] = {}
        self.space_json: dict[Candidate, object] = {}
        self.pixel_rate: float | None = None  # views x pixels per second measured so far
        self.n_extracted = 0
        self.scored: list[_Scored] = []

    def use(self, split: Split) -> None:
        """Compare on `split`: its folds; when fine-tuned networks learned from training images, those of their
        fold networks (`CrossFit`), else held out among the images none learned from (`unseen`); a note says
        which, or that a CV score is optimistic."""
        said = set(self.notes)  # said when a first split was used
        self.split = split
        self.cross, why = CrossFit.of(self.weights, split, self.cv)
        self.notes = [why] if why else []
        if self.cross is not None:
            self.held = None if self.cross.scored.all() else self.cross.scored
            self.folds = list(self.cross.folds)
            self.notes.append(f"{', '.join(self.cross.files)} learned the labels of training images: cross-"
                              "validation takes each fold's features from the network trained without that fold")
        else:
            self.held = unseen(self.weights, split, self.cv)
            self.folds = split.folds(self.cv, self.seed, self.held)
            seen, n = seen_in_training(self.weights, split), len(split.train)
            if seen and self.held is not None:
                self.notes.append(f"{', '.join(seen)} learned the labels of {n - self.held.sum()} training images: "
                                  f"cross-validation holds out only the {self.held.sum()} others (those sit in every "
                                  "training fold)")
            self.notes += [f"{file} was fine-tuned on {k} of the {n} training images: its CV score, and a fusion's "
                           "with it, is optimistic (its test score is not)" for file, k in seen.items()
                           if self.held is None]
        for note in self.notes:
            if note not in said:
                self.log(f"note: {note}")

    @property
    def n_scored(self) -> int:
        """The training images CV scores (all, or those no network learned from: `held`)."""
        return len(self.split.train) if self.held is None else int(self.held.sum())

    # ---- features ----------------------------------------------------------------------------------------
    def extract(self, space: Candidate, images) -> np.ndarray:
        """The features of the split's images in `space`, extracted into its default store (only those not
        there yet), and of the training part in its fold networks' spaces when cross-fitted; the time it will
        take is said first."""
        x = self._extract(space, images)
        for fold_space in self.fold_spaces(space):
            self._extract(fold_space, images, training=True)
        return x

    def fold_spaces(self, space: Candidate) -> list[Candidate]:
        """`space` in each fold network of its weights, fold by fold ([] unless cross-fitted)."""
        files = self.cross.files.get(space.weights, ()) if self.cross is not None else ()
        return [replace(space, weights=file, weights_name="") for file in files]

    def _extract(self, space: Candidate, images, training: bool = False) -> np.ndarray:
        """`extract` of one space: the split's images, or its training part only."""
        from featx.features._extraction import extract_files
        from featx.features._extractor import Extractor, settle_space
        from featx.features._store import FeatureStore, nonfinite_note

        if space in self.features:
            if isinstance(self.features[space], FeatxError):
                raise self.features[space]
            return self.features[space]
        try:
            extractor = settle_space(Extractor.create(space.model, space.weights, space.layer, space.pooling,
                                                      space.image_size, space.tta, self.device, self.engine),
                                     None, None, "float32")
            path = extractor.space.store_path()
            rows = self.split.train if training else range(len(self.split.paths))
            wanted = [self.split.paths[i] for i in rows]
            position = {path: i for i, path in enumerate(images.paths)}
            images = images.take([position[path] for path in wanted])  # not the unlabelled ones, nor those left out
            pending = self._pending(path, [self.split.keys[i] for i in rows])
            pixels = space.views * extractor.space.crop ** 2
            if not pending:
                self.log(f"  {space.name}: nothing to extract ({path} holds every image)")
            else:
                cost = (f"about {pending * pixels / self.pixel_rate:.0f} s at the rate measured so far"
                        if self.pixel_rate else "time unknown until a first space is measured")
                self.log(f"  {space.name}: {pending} images x {space.views} view(s) to extract, {cost}")
            done = extract_files(images, extractor, progress=self.progress)
            with FeatureStore.open(done.store) as opened:
                x, found = opened.features_for(wanted)
                if not found.all() and not any(isinstance(f, np.ndarray) for f in self.features.values()):
                    x, found = self._leave_out(opened.failures(), x, found)
            if not found.all():
                raise FeatxError(f"{int((~found).sum())} images have no features in {done.store} (unreadable: see "
                                 f"featx info {done.store})")
            if not (finite := np.isfinite(x).all(axis=1)).all():  # a store damaged by an earlier version
                raise FeatxError(nonfinite_note(done.store, [wanted[i] for i in np.flatnonzero(~finite)]))
        except FeatxError as exc:
            self.features[space] = exc
            raise
        self.n_extracted += done.n_extracted
        if done.n_extracted and done.seconds:
            self.pixel_rate = done.n_extracted * pixels / done.seconds
        self.rates[space] = done.n_extracted / done.seconds if done.n_extracted and done.seconds else None
        self.stores[space], self.space_json[space] = done.store, extractor.space
        self.features[space] = x.astype(np.float32, copy=False)
        return self.features[space]

    def _leave_out(self, failures: dict[str, tuple[str, str]], x: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Before any space is scored: the split without the images the first space extracted could not read
        (their failures are in its store), which no other network can read either; one line names them."""
        from featx.images._inputs import display_path

        failed = {i: failures[display_path(self.split.paths[i])][1] for i in np.flatnonzero(~found)
                  if display_path(self.split.paths[i]) in failures}
        if not failed:
            return x, found
        self.log("left out of the comparison: "
                 + listed([(self.split.paths[i], why) for i, why in failed.items()], "image(s) that cannot be read"))
        keep = np.ones(len(found), dtype=bool)
        keep[list(failed)] = False
        self.use(self.split.without(keep, self.cv))
        return x[keep], found[keep]

    def _pending(self, store: Path, keys: list[str]) -> int:
        """How many of the images of content `keys` the store does not hold yet."""
        from featx.features._store import FeatureStore

        if not store.exists():
            return len(keys)
        with FeatureStore.open(store) as opened:
            held = set(opened.keys())
        return sum(key not in held for key in keys)

    def columns(self, spaces: Sequence[Candidate]) -> np.ndarray:
        return np.hstack([self.features[s] for s in spaces])

    def rate(self, spaces: Sequence[Candidate]) -> float | None:
        """Images per second of extracting every one of `spaces`, one after another (None: some were stored)."""
        rates = [self.rates.get(s) for s in spaces]
        return 1 / sum(1 / r for r in rates) if all(rates) else None

    def cv_data(self, spaces: Sequence[Candidate]) -> tuple[np.ndarray, np.ndarray, list]:
        """The training part's features of `spaces` side by side, its labels and the folds. With a cross-fitted
        space: one block of rows per fold, fold k's features from fold network k (the others' as they are), each
        fold indexing its own block: its classifier trains on network k's features of the other folds, as the
        final one trains on the whole network's features of the training part."""
        train, y = self.split.train, self.split.labels[self.split.train]
        if not any(self.fold_spaces(s) for s in spaces):
            return self.columns(spaces)[train], y, self.folds
        n, per_fold = len(train), [self.fold_spaces(s) or [s] * len(self.folds) for s in spaces]
        blocks = [np.hstack([self.features[each[k]] if each[k] != s else self.features[s][train]
                             for s, each in zip(spaces, per_fold)]) for k in range(len(self.folds))]
        folds = [(k * n + fit, k * n + held) for k, (fit, held) in enumerate(self.folds)]
        return np.vstack(blocks), np.tile(y, len(blocks)), folds

    # ---- scoring -----------------------------------------------------------------------------------------
    def search(self, name: str, spaces: Sequence[Candidate], clf_name: str, scale=None) -> _Scored:
        """Grid search of the classifier on the spaces' features (training part, the shared folds)."""
        from threadpoolctl import threadpool_limits

        from featx.classify._classifiers import get_classifier
        from featx.classify._fitting import search

        clf, (x, y, folds) = get_classifier(clf_name), self.cv_data(spaces)
        start = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):  # as in fit: parallel CV fits, one BLAS thread each
            pipeline, best, scores = search(x, y, clf, None, folds, self.seed, self.n_jobs, scale, self.scoring)
        mean, std = next((m, s) for v, m, s in scores if v == best)
        row = Row(name, mean, std, x.shape[1], self.rate(spaces), time.perf_counter() - start)
        return _Scored(row, tuple(spaces), pipeline, {"classifier": clf_name, "hyperparameters": {clf.param: best}})

    def concatenated(self, best: list[_Scored]) -> _Scored:
        """The best spaces side by side, each standardised and weighted 1/sqrt(its width) (every space counts
        the same whatever its dimension), under the best candidate's classifier."""
        from sklearn.compose import ColumnTransformer
        from sklearn.preprocessing import StandardScaler

        spaces = [b.spaces[0] for b in best]
        blocks = self._blocks(spaces)
        scale = ColumnTransformer([(f"space{i}", StandardScaler(), cols) for i, cols in enumerate(blocks)],
                                  transformer_weights={f"space{i}": 1 / math.sqrt(len(c)) for i, c in enumerate(blocks)})
        name = "concat(" + " + ".join(s.name for s in spaces) + f") / {best[0].chosen['classifier']}"
        return self.search(name, spaces, best[0].chosen["classifier"], scale)

    def averaged(self, best: list[_Scored]) -> _Scored:
        """The average of the best candidates' class probabilities, cross-validated on the same folds."""
        from sklearn.base import clone
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import VotingClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.utils.parallel import Parallel, delayed  # scikit-learn's: its config and warning filters go along
        from threadpoolctl import threadpool_limits

        from featx.classify._classifiers import platt_scaled

        spaces = [b.spaces[0] for b in best]
        x, y, folds = self.cv_data(spaces)
        members = []
        for i, (b, cols) in enumerate(zip(best, self._blocks(spaces))):
            clf = clone(b.pipeline.named_steps["clf"])
            if not hasattr(clf, "predict_proba"):  # svm, linsvm: Platt-scaled as SVC(probability=True) did, deprecated
                clf = platt_scaled(clf, self.split.labels[self.split.train], len(folds), self.seed, ensemble=False)
            members.append((f"member{i}", Pipeline([("scale", ColumnTransformer([("space", StandardScaler(), cols)])),
                                                    ("clf", clf)])))
        start = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            per_member = Parallel(n_jobs=self.n_jobs)(delayed(_held_out_probabilities)(m, x, y, fold)
                                                       for _, m in members for fold in folds)
        metric = _metric(self.scoring)
        per_fold = [metric(y[held], np.mean(per_member[i :: len(folds)], axis=0).argmax(1))
                    for i, (_, held) in enumerate(folds)]
        row = Row("average(" + " + ".join(b.row.candidate for b in best) + ")", float(np.mean(per_fold)),
                  float(np.std(per_fold)), x.shape[1], self.rate(spaces), time.perf_counter() - start)
        return _Scored(row, tuple(spaces), VotingClassifier(members, voting="soft"),
                       {"classifier": "average", "members": [b.chosen for b in best]})

    def _blocks(self, spaces: Sequence[Candidate]) -> list[list[int]]:
        """The column indices of each space in `columns(spaces)`."""
        widths = np.cumsum([0] + [self.features[s].shape[1] for s in spaces])
        return [list(range(a, b)) for a, b in zip(widths[:-1], widths[1:])]

    def fused(self, k: int) -> list[_Scored]:
        """Fusions of the k best spaces (each by its best candidate): concatenated, and probabilities averaged."""
        best, seen = [], set()
        for s in sorted((s for s in self.scored if not s.row.error), key=lambda s: -s.row.cv_mean):
            if s.spaces[0] not in seen:
                seen.add(s.spaces[0])
                best.append(s)
        best = best[:k]
        if k and len(best) < 2:
            self.log(f"note: nothing fused (--fuse {k}): {len(best)} feature space(s) scored, a fusion needs 2")
        if k < 2 or len(best) < 2:
            return []
        fusions, members = [], tuple(b.row.candidate for b in best)
        for kind, fuse in (("concat", self.concatenated), ("average", self.averaged)):
            try:
                scored = fuse(best)
                scored.row = replace(scored.row, members=members)
                fusions.append(scored)
            except Exception as exc:  # any error is this one's failure (`failure`): the others go on
                if isinstance(exc, Interrupted):
                    raise
                fusions.append(_Scored(Row(f"{kind}({len(best)} best)", error=failure(exc))))
        return fusions

    def leaderboard(self) -> list[_Scored]:
        """Best CV mean first, failed last."""
        return sorted(self.scored, key=lambda s: (bool(s.row.error), -np.nan_to_num(s.row.cv_mean, nan=-1)))

    def tested(self, scored: _Scored, x: np.ndarray | None = None) -> tuple[object, np.ndarray]:
        """A candidate refitted on the whole training part, and its predictions on the test part (`x`: its
        columns, when already side by side)."""
        from sklearn.base import clone

        x, split = self.columns(scored.spaces) if x is None else x, self.split
        model = clone(scored.pipeline).fit(x[split.train], split.labels[split.train])
        return model, model.predict(x[split.test])


def failure(exc: Exception) -> str:
    """Why a candidate failed, on one line: featx's message; scikit-learn's first and last lines ("All the 10
    fits failed. (ValueError: ...)"); else the exception's type too (a MemoryError, joblib's errors). Any
    failure is one candidate's: the others go on, their CV scores kept."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    said = lines[0] + (f" ({lines[-1]})" if len(lines) > 1 else "") if lines else ""
    if isinstance(exc, (FeatxError, ValueError)):
        return said
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


def _held_out_probabilities(member, x: np.ndarray, y: np.ndarray, fold: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`member` fitted on a fold's training images: its class probabilities on the fold's held-out ones."""
    from sklearn.base import clone

    train, held = fold
    return clone(member).fit(x[train], y[train]).predict_proba(x[held])


def _metric(scoring: str) -> Callable:
    """The metric of `scoring` on (labels, predictions), for the averaged fusion's probabilities."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    return {"balanced_accuracy": balanced_accuracy_score, "accuracy": accuracy_score}[scoring]


def compare(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    models: str | Sequence[str] = (DEFAULT_MODEL,),
    layers: str | Sequence[str | None] | None = (None,),
    poolings: str | Sequence[str] = ("avg",),
    image_sizes: int | Sequence[int | None] | None = (None,),
    ttas: str | Sequence[str] = ("none",),
    weights: str | os.PathLike | Sequence[str | os.PathLike] = (),
    clfs: str | Sequence[str] = ("logreg",),
    fuse: int = 0,
    scoring: str = SCORINGS[0],
    test_size: float | None = None,
    split_csv: str | os.PathLike | None = None,
    group: Group = None,
    cv: int = 5,
    seed: int = 0,
    out: str | os.PathLike = "featx-compare",
    label_pattern: str | None = None,
    n_jobs: int | None = None,
    device: str = "auto",
    engine: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Comparison:
    """Compare every combination of the lists (plus fine-tuned `weights` files) on labelled images `data`.

    One stratified split (by class, and `group` of each file: a function of its path, a regex on it, or a
    mapping of paths such as `featx.images.read_column` gives; or the files of `split_csv` as the test part);
    each candidate space is extracted once into its default store and cross-validated (`scoring`, one of
    `names.SCORINGS`; `cv` folds, the same for all) on the training part. When fine-tuned `weights` learned from
    training images: cross-fitted if `featx finetune --folds` left their fold networks beside them (`CrossFit`:
    each fold's features from the network that never saw it), else held out among the images none learned from
    (`unseen`). `fuse=K` adds the K best spaces concatenated and their probabilities averaged. The best by CV is
    refitted on the training part and saved as OUT/model.skops (`featx predict` runs it); then every candidate is
    refitted and scored on the test part, for the record; the leaderboard goes to OUT/leaderboard.{csv,json,html}.
    A candidate that fails (whatever the error) gets a row saying why; Ctrl-C, or an error that stops the run,
    writes the leaderboard of what is scored so far. The previous run's winner in OUT is removed when the
    comparison starts.
    """
    from featx.classify._fitting import check_split
    from featx.images._inputs import find_images
    from featx.outputs import check_output, manifest_path, remove_listed

    log = log or (lambda line: print(line, file=sys.stderr))
    if scoring not in SCORINGS:
        raise UnknownNameError("scoring", scoring, SCORINGS)
    if fuse < 0 or fuse == 1:
        raise ParameterError(f"--fuse must be 0 (no fusion) or a number of spaces from 2, not {fuse}")
    if split_csv is not None and (test_size is not None or group is not None):  # as scikit-learn: not silently ignored
        raise ParameterError("--split-csv names the test part: give neither --test-size nor a group "
                             "(--group-pattern, --group-column) with it")
    test_size = COMPARE_TEST_SIZE if test_size is None else test_size
    check_split(cv, test_size, seed, n_jobs)
    data = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    out = check_output(out, "--out", folder=True, reads=data)
    weights, copies = distinct_weights(weights)
    listed = candidates(models, layers, poolings, image_sizes, ttas, weights, clfs)  # unknown names: before any work
    for copy, kept in copies:
        log(f"note: {copy} holds the same weights as {kept}: compared once")
    images = find_images(data, label_pattern)
    split = Split.of(images, test_size, seed, group, find_images(split_csv) if split_csv else None, cv,
                     ", ".join(map(str, data)))
    for line in split.said:
        log(line)
    tuned = sorted({c.weights for c in listed if c.weights})
    check_no_leak([*tuned, *(f for w in tuned for f in fold_files(w, cv))], split)
    run = _Run(split, tuned, cv, seed, scoring, n_jobs, device, engine, progress, log)
    remove_listed(manifest_path(out / MODEL))  # the last run's winner: never beside this run's leaderboard
    log(f"comparing {len(listed)} candidates{f' and the fusions of the {fuse} best' if fuse else ''} on "
        f"{len(split.train)} training images ({cv} folds); "
        f"test part: {len(split.test)} images, not used to choose")
    from featx.features._extraction import progress_bar

    try:
        with progress_bar(len(listed), progress, "compare", unit="candidate") as bar:
            for candidate in listed:
                bar.set_description(candidate.name)
                try:
                    run.extract(candidate.space, images)
                    run.scored.append(run.search(candidate.name, [candidate.space], candidate.clf))
                except Exception as exc:  # any error is this one's failure (`failure`): the others go on
                    if isinstance(exc, Interrupted):
                        raise
                    run.scored.append(_Scored(Row(candidate.name, error=failure(exc))))
                bar.update()
        run.scored += run.fused(fuse)
    except (KeyboardInterrupt, Interrupted):
        write_leaderboard(_comparison(run), out)
        scored = sum(not s.row.error for s in run.scored)
        raise Interrupted(f"interrupted: the {scored} candidates scored so far are in {out / LEADERBOARD}.csv;"
                          " the features extracted stay in their stores (a rerun does not extract them again)") from None
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the run is the one to see
            write_leaderboard(_comparison(run), out)
        raise
    return _finish(run, out)


def _comparison(run: _Run, **more) -> Comparison:
    split = run.split
    return Comparison(tuple(s.row for s in run.leaderboard()), split.classes, len(split.train), len(split.test),
                      run.n_extracted, scoring=run.scoring, n_scored=run.n_scored, notes=tuple(run.notes), **more)


def _finish(run: _Run, out: Path) -> Comparison:
    """Refit the winner on the training part, score it once on the test part, save it; then every other
    candidate refitted and scored on the test part, for the record; the leaderboard."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from featx.classify._bundle import ModelBundle
    from featx.classify._classifiers import class_scores
    from featx.reports._report import Outcomes, Report, metrics

    board = run.leaderboard()
    if board[0].row.error:
        write_leaderboard(_comparison(run), out)
        raise FeatxError(f"every candidate failed (see {out / LEADERBOARD}.csv); the first: {board[0].row.error}")
    winner, rows = board[0], [s.row for s in board]
    if tie := tie_note(rows, run.n_scored):  # a note of the choice, with the run's others
        run.notes.append(tie)
        run.log(f"note: {tie}")
    write_leaderboard(_comparison(run), out)  # the CV scores, before the refits (minutes for a wide fusion)
    split = run.split  # without the images no network could read
    train, test, y = split.train, split.test, split.labels
    path = out / MODEL
    try:
        x = run.columns(winner.spaces)
        try:
            model, predicted = run.tested(winner, x)
        except (FeatxError, ValueError, MemoryError) as exc:  # as a candidate's failure, but no other was chosen
            raise FeatxError(f"the winner, {winner.row.candidate}, cannot be refitted on the training part: "
                             f"{failure(exc)}; every candidate's CV scores are in {out / LEADERBOARD}.csv") from None
        if hasattr(model, "named_estimators_"):  # averaged: skops trusts no Bunch (a dict here), and predicting reads none
            model.named_estimators_ = dict(model.named_estimators_)
        classes = list(split.classes)
        scores = metrics(y[test], predicted, classes)
        bundle = ModelBundle(model, classes, run.space_json[winner.spaces[0]], "float32",
                             _info(run, winner), extra_spaces=tuple(run.space_json[s] for s in winner.spaces[1:]))
        stores = [str(run.stores[s]) for s in winner.spaces]  # one: featx map's; several (fused): no map of them
        details = {**winner.chosen, "candidate": winner.row.candidate,
                   **({"store": stores[0]} if len(stores) == 1 else {"stores": stores}), "scoring": run.scoring,
                   "cv_mean": winner.row.cv_mean, "cv_std": winner.row.cv_std, "n_train": len(train), "n_test": len(test)}
        report = Report(classes, scores, details, (x[test], y[test]),
                        Outcomes.of([split.paths[i] for i in test], y[test], predicted, *class_scores(model, x[test])),
                        title=f"featx compare: #1 of {LEADERBOARD}.html, {label(winner.row, rows)}")
        files = [path, *bundle.save_with_report(path, report)]
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted before {path} was saved: the CV scores of every candidate are in "
                          f"{out / LEADERBOARD}.csv (a rerun extracts nothing)") from None

    def written() -> Comparison:
        comparison = _comparison(run, test_balanced_accuracy=scores["balanced_accuracy"],
                                 test_accuracy=scores["accuracy"], model=path)
        return replace(comparison, files=(*write_leaderboard(comparison, out), *files))

    def record(scored: _Scored, tested: np.ndarray) -> None:
        scored.row = replace(scored.row, test_balanced_accuracy=float(balanced_accuracy_score(y[test], tested)),
                             test_accuracy=float(accuracy_score(y[test], tested)))

    record(winner, predicted)
    written()
    others = [s for s in board[1:] if not s.row.error]
    run.log(f"scoring the {len(others)} other candidates on the test part, for the record (the winner is chosen)")
    try:
        for scored in others:
            try:
                record(scored, run.tested(scored)[1])
            except Exception as exc:  # its CV fits went through; a refit that fails leaves "-"
                run.log(f"  {scored.row.candidate}: not scored on the test part: {failure(exc)}")
    except KeyboardInterrupt:
        written()
        raise Interrupted(f"interrupted: {path} is saved; the leaderboard in {out / LEADERBOARD}.csv has the test "
                          "scores computed so far") from None
    return written()


def _info(run: _Run, winner: _Scored) -> dict:
    """The bundle's info: classifier, chosen values, and each space's store (and weights file) and width."""
    from featx import __version__

    parts = [{"store": str(run.stores[s].absolute()), "width": run.features[s].shape[1],
              **({"weights_file": str(Path(s.weights).absolute())} if s.weights and Path(s.weights).is_file() else {})}
             for s in winner.spaces]
    first = {k: v for k, v in parts[0].items() if k != "width"}
    return {**winner.chosen, "featx": __version__, "compare": winner.row.candidate, **first,
            **({"parts": parts} if len(parts) > 1 else {})}

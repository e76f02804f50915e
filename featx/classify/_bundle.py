"""Model bundles: a fitted scikit-learn pipeline + class names + the exact feature space it was trained on.

Saved with skops by default: loading trusts skops's own list of types (scikit-learn estimators, numpy arrays)
and the few exact types of `TRUSTED_TYPES`, and refuses a file holding any other, so a bundle from elsewhere
cannot run code. `format="joblib"` (pickle) is faster and smaller but UNSAFE: loading a pickle runs whatever
code it holds, so it is loaded only when asked (`unsafe_pickle=True`, `--unsafe-pickle`), never because of
what its bytes look like (docs/security.md).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.pipeline import Pipeline

from featx.classify._classifiers import class_scores
from featx.classify._results import Predictions, Sources, check_some_read, labels_in
from featx.errors import (
    BadInputError,
    FeatureSpaceMismatchError,
    FeatxError,
    ParameterError,
    UnknownNameError,
    UnsafeLoadWarning,
    WeightsUnavailableError,
)
from featx.features._space import FeatureSpace
from featx.features._store import FeatureStore
from featx.images._inputs import ImageList
from featx.names import MODEL_FORMATS, AtLeast
from featx.reports._figures import map_rows
from featx.reports._report import Outcomes, Report, metrics

if TYPE_CHECKING:
    from featx.features._extractor import Extractor

FORMAT = "featx-model/1"
# The types of featx's models that skops does not trust by default: knn's KD-tree and its metric, and the Platt
# scaling of a linsvm member of compare's averaged fusion (tests check this against a model of every classifier
# and such a member). Exact names, never prefixes: "numpy." admitted numpy.testing._private.utils.runstring,
# which a crafted file called to run any code. The tree is admitted only to be replaced (`_rebuild_trees`).
TRUSTED_TYPES = ("sklearn.metrics._dist_metrics.EuclideanDistance64", "sklearn.neighbors._kd_tree.KDTree",
                 "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
                 "sklearn.model_selection._split.StratifiedKFold")  # the Platt scaling's shuffled inner folds


@dataclass
class ModelBundle:
    """What `featx fit` saves; `space` and `dtype` are those of the store the pipeline was trained on."""

    pipeline: Pipeline
    classes: list[str]
    space: FeatureSpace
    dtype: str
    info: dict = field(default_factory=dict)  # classifier, hyperparameters, featx version, training store
    # a fused model's further feature spaces (featx compare): the pipeline takes the features of `spaces` side by
    # side; info["parts"] gives each one's store, width and weights file
    extra_spaces: tuple[FeatureSpace, ...] = ()

    @property
    def spaces(self) -> tuple[FeatureSpace, ...]:
        return (self.space, *self.extra_spaces)

    @property
    def width(self) -> int:
        """The number of features of `space` (the pipeline's input for a single-space model)."""
        return self.info["width"] if "width" in self.info else self.pipeline.n_features_in_

    def parts(self) -> list[ModelBundle]:
        """One bundle per feature space, each with its own store, weights file and width (the pipeline shared)."""
        if not self.extra_spaces:
            return [self]
        shared = {k: v for k, v in self.info.items() if k not in ("store", "weights_file", "parts")}
        return [ModelBundle(self.pipeline, self.classes, space, self.dtype, {**shared, **part})
                for space, part in zip(self.spaces, self.info["parts"])]

    def check_space(self, space: FeatureSpace, dtype: str | None = None) -> None:
        """Refuse features from any other feature space (or storage dtype) than the training one."""
        self.space.check_same(space, "model has", "features have", "the model was trained on another feature space")
        if dtype is not None and dtype != self.dtype:
            raise FeatureSpaceMismatchError(f"the model was trained on {self.dtype} features, these are {dtype}")

    def predict_store(self, store: str | os.PathLike) -> dict[str, str]:
        """path -> the class predicted from the features `store` holds for it, for each file whose features are
        finite (refused for another feature space, and for a fused model: a store holds one space)."""
        if self.extra_spaces:
            raise BadInputError(f"the model fuses {1 + len(self.extra_spaces)} feature spaces and {store} holds one: "
                                "use a model fitted on this store (featx fit)")
        with FeatureStore.open(store, warn=True) as opened:
            self.check_space(opened.space, opened.dtype)
            loaded = opened.load()
        # rows holding NaN or infinity (featx info --check reports them) get none: scikit-learn refuses them
        finite = np.isfinite(loaded.features).all(axis=1)
        predicted = self.pipeline.predict(loaded.features[finite]) if finite.any() else []
        return dict(zip(loaded.paths[finite], np.asarray(self.classes, dtype=object)[predicted]))

    def training_store(self) -> Path:
        """The store the pipeline was trained on, as `featx fit` recorded it (a model from before it did: the
        default store of its feature space)."""
        return Path(self.info["store"]) if "store" in self.info else self.space.store_path(self.dtype)

    def training_stores(self) -> list[Path]:
        """The stores whose rows `predict` and `evaluate` read: each feature space's training store."""
        return [part.training_store() for part in self.parts()]

    def extractor(self, weights: str | os.PathLike | None = None, device: str = "auto", engine: str = "auto") -> Extractor:
        """The extraction of exactly this bundle's feature space. Weights named only by a file hash (fine-tuned
        ones) are the file its training store recorded, while it is there and unchanged; else pass the file
        as `weights`."""
        from featx.features._extractor import Extractor

        if weights is None and "weights_file" in self.info:
            weights = self._recorded_weights(Path(self.info["weights_file"]))
        return Extractor(self.space, self.space.weights_source(weights), device, engine)

    def _recorded_weights(self, path: Path) -> Path:
        from featx.backbones._weights import FileWeights

        if not path.is_file():
            raise WeightsUnavailableError(
                f"the model's features come from the weights file {path}, which is gone: pass that file (or a "
                "copy) with --weights FILE")
        if FileWeights(path).id != self.space.weights:
            raise FeatureSpaceMismatchError(
                f"the model's features come from the weights file {path}, which has changed since "
                f"({self.space.weights} then): pass the file the features came from with --weights FILE")
        return path

    def evaluate(self, data: str | os.PathLike | Sequence[str | os.PathLike], *,
                 weights: str | os.PathLike | None = None, tta: str = "none", **options: Any) -> tuple[Report, Sources]:
        """Report of the bundle on labelled images (class folders or CSV labels); returns (Report, Sources).

        `options` go to `featx.extract` (device, batch_size, workers, progress).
        """
        from featx.images._inputs import find_images

        images = find_images(data)
        labels = labels_in(images, self.classes, data)  # before any extraction: a typo costs nothing
        images, labels = images.take(np.flatnonzero(labels >= 0)), labels[labels >= 0]
        features, use, sources = _bundle_features(self, images, weights, tta, **options)
        check_some_read(use, sources.failures)
        x, true = features[use], labels[use]
        predicted = self.pipeline.predict(x)
        details = {"classifier": self.info.get("classifier"), "hyperparameters": self.info.get("hyperparameters"),
                   "features": sources.headline, "n_failed": len(sources.failures)}
        outcomes = Outcomes.of([p for p, ok in zip(images.paths, use) if ok], true, predicted, *class_scores(self.pipeline, x))
        keep = map_rows(len(x))
        report = Report(
            self.classes, metrics(true, predicted, self.classes), details, (x[keep], true[keep]), outcomes,
            sources.failures, title=f"featx evaluate: {self.info.get('classifier')} on {len(images):,} files",
        )
        return report, sources

    def predict(self, data: str | os.PathLike | Sequence[str | os.PathLike], *,
                weights: str | os.PathLike | None = None, tta: str = "none", **options: Any) -> tuple[Predictions, Sources]:
        """Predictions of the bundle for every image in `data` (those that failed: their reasons); returns
        (Predictions, Sources)."""
        from featx.images._inputs import find_images

        images = find_images(data)
        features, found, sources = _bundle_features(self, images, weights, tta, **options)
        scores, kind = class_scores(self.pipeline, features)  # rows of failed files (zeros) are dropped by `of`
        predicted = self.pipeline.predict(features)
        return Predictions.of(images, found, predicted[found], scores[found], kind, self.classes, sources.failures), sources

    def save(self, path: str | os.PathLike, format: str = "skops") -> Path:
        """Write the bundle (skops: safe to share; joblib: pickle, unsafe to load from others)."""
        from featx.outputs import atomic_path

        path = check_model_name(path, format)
        state = {
            "format": FORMAT,
            "pipeline": self.pipeline,
            "classes": list(self.classes),
            "feature_space": self.space.to_json(),
            "dtype": self.dtype,
            "info": json.dumps(self.info),
            # older featx reads `feature_space` only: a fused model then fails on its pipeline's width
            **({"feature_spaces": [space.to_json() for space in self.extra_spaces]} if self.extra_spaces else {}),
        }
        with atomic_path(path) as tmp:
            if format == "skops":
                skops_io().dump(state, tmp)
            else:
                import joblib

                joblib.dump(state, tmp)
        return path

    def save_with_report(self, out: str | os.PathLike, report: Report, format: str = "skops",
                         tsne: bool = False) -> list[Path]:
        """Save the bundle as `out`, `report`'s files beside it, then OUT.manifest.json naming them all (the run
        and their sha256: featx.outputs.check_manifest); returns the report's files, the HTML page first."""
        from featx.outputs import manifest_path, output_set
        from featx.reports._report import report_prefix

        with output_set(manifest_path(out)) as files:
            files.append(self.save(out, format))
            written = report.save(report_prefix(out), tsne=tsne)
            files += written
        return written


def check_model_name(path: str | os.PathLike, format: str) -> Path:
    """`path`, when a model of `format` can be saved and loaded under it: a pickle (joblib) is never read under
    the name .skops (`load_bundle`)."""
    if format not in MODEL_FORMATS:
        raise UnknownNameError("model format", format, MODEL_FORMATS)
    path = Path(path)
    if format == "joblib" and path.suffix == ".skops":
        raise ParameterError(f"cannot save a joblib model as {path}: featx never loads a pickle named .skops; "
                             "name it .joblib")
    return path


def _training_rows(bundle: ModelBundle, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(indices of the `paths` whose content the training store holds, their features, None), read only;
    (no indices, no features, why) when the store is missing, unreadable or in another feature space.
    Files are found by content, so a moved or copied file is found too."""
    from featx.images._content import content_keys

    try:
        with FeatureStore.open(bundle.training_store()) as store:
            bundle.check_space(store.space, store.dtype)
            row_of = {key: row for row, key in enumerate(store.keys())}
            rows = np.array([row_of.get(hashed.key, -1) for hashed in content_keys(paths)], dtype=np.int64)
            held = np.flatnonzero(rows >= 0)
            return held, store.rows(rows[held]), None
    except FeatxError as exc:
        return np.zeros(0, dtype=np.int64), np.zeros((0, bundle.width)), str(exc)


def _bundle_features(bundle: ModelBundle, images: ImageList, weights, tta: str,
                     **options) -> tuple[np.ndarray, np.ndarray, Sources]:
    """The features of `images` in the bundle's feature space: rows of the training store where it holds their
    content, the others extracted. Returns (features, mask of the files that have features, Sources)."""
    if tta != "none":
        raise ParameterError(f"tta={tta!r} applies to a fine-tuned network; a fitted model's features use its "
                             f"feature space's own tta ({bundle.space.tta})")
    if bundle.extra_spaces:  # a fused model (featx compare): each space's features, side by side
        parts = bundle.parts()
        done = [_bundle_features(part, images, part_weights, tta, **options)
                for part, part_weights in zip(parts, _weights_of_parts(parts, weights))]
        return (np.hstack([features for features, _, _ in done]), np.logical_and.reduce([found for _, found, _ in done]),
                Sources.joined([sources for *_, sources in done]))
    features = np.zeros((len(images), bundle.width), dtype=np.float32)
    found = np.zeros(len(images), dtype=bool)
    held, rows, unused = _training_rows(bundle, images.paths)
    features[held], found[held] = rows, True
    rest, extracted = np.flatnonzero(~found), None
    if len(rest):
        others = ImageList([images.paths[i] for i in rest], images.labels[rest], images.classes, images.roots)
        from featx.features._extraction import extract_aside

        device = options.pop("device", "auto")
        features[rest], found[rest], extracted = extract_aside(others, bundle.extractor(weights, device), bundle.dtype,
                                                               bundle.width, bundle.check_space, **options)
    return features, found, Sources(len(held), extracted, unused)


def _weights_of_parts(parts: list[ModelBundle], weights: str | os.PathLike | None) -> list:
    """`weights` for the parts of a fused model whose features came from them (its fine-tuned space among
    pretrained ones, say), None for the others: they find their own weights."""
    if weights is None:
        return [None] * len(parts)
    made = []
    for part in parts:
        try:
            part.space.weights_source(weights)
            made.append(True)
        except FeatureSpaceMismatchError:
            made.append(False)
    if not any(made):
        raise FeatureSpaceMismatchError(
            f"weights {weights}: none of the model's feature spaces comes from them (they come from "
            f"{', '.join(part.space.weights for part in parts)})")
    return [weights if it else None for it in made]


@contextlib.contextmanager
def _unimportable(module: str):
    """Within the block, `import module` raises ImportError (None in sys.modules, as Python's import
    system documents), unless the module is loaded already."""
    if module in sys.modules:
        yield
        return
    sys.modules[module] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get(module, ...) is None:
            del sys.modules[module]


def skops_io() -> ModuleType:
    """`skops.io`, imported without importing torch.

    skops.io lists its trusted types when first imported, with scikit-learn's `all_estimators`, whose package
    walk imports sklearn.externals.array_api_compat.torch and with it torch (2 s of a 3 s import here), in
    commands that never run a network (`featx fit`, `featx info`). pkgutil's walk skips a package that cannot
    be imported, and that package holds no estimator, so the list is the same without torch.
    """
    with _unimportable("torch"):
        import skops.io
    return skops.io


def _load_skops(path: Path) -> object:
    io = skops_io()
    try:
        refused = [t for t in io.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
        if refused:
            raise FeatxError(f"refusing to load {path}: it holds types a featx model never holds, which could run "
                             f"code: {', '.join(refused)}")
        state = io.load(path, trusted=list(TRUSTED_TYPES))
        _rebuild_trees(state, path, set())
        return state
    except FeatxError:
        raise
    except Exception as exc:
        raise FeatxError(f"cannot read model file {path}: {exc}") from exc


def _rebuild_trees(obj: object, path: Path, seen: set[int]) -> None:
    """Give each neighbours model within `obj` a search tree built from its own training rows, and refuse a tree
    anywhere else: scikit-learn never checks a loaded tree's arrays (skops trusts no tree for this reason), and a
    crafted KD-tree indexing rows past its data made predict read outside memory (a segfault). featx's knn holds
    a KD-tree (15 features or fewer), so its files load, their tree rebuilt exactly as fit built it."""
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.neighbors._base import NeighborsBase

    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (KDTree, BallTree)):
        raise FeatxError(f"refusing to load {path}: it holds a search tree outside a neighbours model")
    if isinstance(obj, NeighborsBase) and hasattr(obj, "_tree"):
        tree = {"kd_tree": KDTree, "ball_tree": BallTree}.get(getattr(obj, "_fit_method", None))
        # as NeighborsBase._fit builds it; the brute method holds none
        obj._tree = tree and tree(obj._fit_X, obj.leaf_size, metric=obj.effective_metric_,
                                  **obj.effective_metric_params_)
        seen.add(id(obj._tree))  # built here: not the file's
    if isinstance(obj, dict):
        children = obj.values()
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = obj
    elif isinstance(obj, np.ndarray):
        children = obj.ravel() if obj.dtype == object else ()
    else:
        children = getattr(obj, "__dict__", {}).values()
    for child in children:
        _rebuild_trees(child, path, seen)


def _load_pickle(path: Path) -> object:
    import joblib

    warnings.warn(f"loading {path} as a pickle (--unsafe-pickle): it runs whatever code it holds; only do this "
                  "for a file you made yourself", UnsafeLoadWarning, stacklevel=3)
    try:
        return joblib.load(path)
    except Exception as exc:
        raise FeatxError(f"cannot read model file {path}: {exc}") from exc


def _first_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(1)


def load_bundle(path: str | os.PathLike, *, unsafe_pickle: bool = False) -> ModelBundle:
    """Read a bundle saved by `ModelBundle.save`: a skops file, checked type by type. A joblib file (pickle)
    is loaded only with `unsafe_pickle=True`, as loading it runs whatever code it holds; a file named
    `.skops` is only ever read by skops."""
    path = Path(path)
    if not path.is_file():
        raise FeatxError(f"no model file at {path}")
    if zipfile.is_zipfile(path):
        state = _load_skops(path)
    elif unsafe_pickle and path.suffix != ".skops":
        state = _load_pickle(path)
    elif _first_byte(path) == b"\x80":  # how every pickle joblib writes starts: for this message only
        raise FeatxError(
            f"{path} is a pickle, not a skops file: loading a pickle runs any code it holds, so featx loads one only "
            "with --unsafe-pickle (load_bundle(path, unsafe_pickle=True)), for a file you made yourself"
            + (", and never under the name .skops" if path.suffix == ".skops" else ""))
    else:
        raise FeatxError(f"{path} is not a featx model (saved by featx fit): not a skops file")
    saved = state.get("format") if isinstance(state, dict) else None
    if isinstance(saved, str) and saved.startswith("featx-model/") and saved != FORMAT:
        raise FeatxError(f"{path} was saved by another featx ({saved}; this one reads {FORMAT}): use that version")
    if saved != FORMAT:
        raise FeatxError(f"{path} is not a featx model (saved by featx fit)")
    try:
        bundle = ModelBundle(
            pipeline=state["pipeline"],
            classes=list(state["classes"]),
            space=FeatureSpace.from_json(state["feature_space"]),
            dtype=state["dtype"],
            info=json.loads(state["info"]),
            extra_spaces=tuple(FeatureSpace.from_json(text) for text in state.get("feature_spaces", ())),
        )
        if len(bundle.classes) != len(bundle.pipeline.classes_):
            raise ValueError(f"{len(bundle.classes)} class names for {len(bundle.pipeline.classes_)} classes")
        # each width sizes the features before any prediction: a pipeline whose first step was never fitted (the
        # AttributeError of n_features_in_) failed there with a traceback
        widths = [part.width for part in bundle.parts()]
        if bad := [width for width in widths if not AtLeast(1).accepts(width)]:
            raise ValueError(f"its pipeline takes {bad[0]!r} features")
        # and they are the pipeline's: a width written by hand (10**12) sized arrays nothing could hold
        stated, total = getattr(bundle.pipeline, "n_features_in_", None), sum(widths)
        if stated is not None and stated != total:
            raise ValueError(f"its feature spaces give {total} features, its pipeline takes {stated}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # json's JSONDecodeError is a ValueError
        raise FeatxError(f"{path} is a damaged featx model ({type(exc).__name__}: {exc}): save it again with featx fit") from None
    return bundle

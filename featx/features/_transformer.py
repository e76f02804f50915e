"""`PretrainedFeatures`: a scikit-learn transformer from images to pretrained CNN features.

Features live in the same content-keyed HDF5 store as `featx extract`, so cross-validation and grid
searches compute each image's features once per feature space, across fits, clones and processes.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from featx.errors import FeatxError, StoreInUseError
from featx.images._content import content_keys
from featx.images._failures import failure_line
from featx.names import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, validate_parameters

STORE_WAIT_SECONDS = 600.0  # how long to wait for another process (a parallel CV fold) writing the store
_T = TypeVar("_T")


ImagesLike = Sequence | np.ndarray  # a list, tuple, 1-D array, Series or one-column DataFrame of images


def as_items(X: ImagesLike) -> list:
    """The images of X as a list: a list/tuple, 1-D array, Series, one-column DataFrame or N x H x W x C uint8 array."""
    if isinstance(X, (str, bytes, os.PathLike, Image.Image)):
        raise ValueError(f"expected a collection of images (list, array or Series), got a single {type(X).__name__}; wrap it in a list")
    if getattr(X, "ndim", 1) == 2 and hasattr(X, "iloc"):  # a DataFrame
        if X.shape[1] != 1:
            raise ValueError(f"expected one column of images, got a DataFrame with {X.shape[1]} columns")
        X = X.iloc[:, 0]
    if isinstance(X, np.ndarray) and X.ndim != 1 and not (X.ndim == 4 and X.dtype == np.uint8):
        raise ValueError(
            f"expected a 1-D collection of images (paths, PIL images, H x W x C uint8 arrays) or an "
            f"N x H x W x C uint8 array, got an array of shape {X.shape} and dtype {X.dtype}"
        )
    try:
        items = list(X)
    except TypeError:
        raise ValueError(f"expected a collection of images, got {type(X).__name__}") from None
    if not items:
        raise ValueError("found 0 images; at least one is required")
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike, Image.Image, np.ndarray)):
            raise ValueError(f"X[{i}] is {type(item).__name__}, not an image file path, PIL image or uint8 image array")
    return items


def _wait_for_store(call: Callable[[], _T]) -> _T:
    """Run `call`, retrying while another process holds the store (parallel folds share it)."""
    deadline = time.monotonic() + STORE_WAIT_SECONDS
    while True:
        try:
            return call()
        except StoreInUseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stored_dtype(path: Path) -> str:
    """The dtype of the store at `path` (float32 when there is none yet, or it cannot be read: the run says so)."""
    from featx.features._store import FeatureStore

    try:
        with _wait_for_store(lambda: FeatureStore.open(path)) as store:
            return store.dtype
    except FeatxError:
        return "float32"


def _failed(failures: list[tuple[str, str]]) -> ValueError:
    return ValueError(f"{len(failures)} image(s) could not be used, and a transformer cannot drop rows: "
                      f"{failure_line(failures)}")


class PretrainedFeatures(TransformerMixin, BaseEstimator):
    """Images -> features of a pretrained CNN, cached by content in featx's HDF5 store.

    Parameters
    ----------
    model : backbone name (see `featx models`), default "efficientnet_lite0".
    weights : None (the model's pretrained weights), "random", a weights file or a named variant.
    layer : None (the backbone's last feature map) or node name(s), "a,b" or ["a", "b"].
    pooling : "avg", "max" or "gem".
    image_size : None (the weights' own resize and centre crop) or N: shorter side resized to N, centre
        crop N x N (e.g. the images' native resolution).
    tta : "none", or "d4": features averaged over the 8 symmetries of the square (8x the compute).
    decode : None, "reduced" or "full": how images much larger than the network's input are decoded (see
        `featx.extract`); None: "reduced", or "full" to extend a store made that way.
    batch_size : images per forward pass.
    device : "auto", "cpu", "cuda" or "cuda:N".
    engine : "auto" (ONNX Runtime on a CPU when installed, else PyTorch), "torch", "compile" or "onnx".
    cache : None (the default store of the feature space, under $FEATX_CACHE or ./cache), a store
        file path, or False (nothing kept: features are computed on every call).

    `transform(X)` takes a list, 1-D array or Series of image file paths, PIL images or H x W x C uint8
    arrays (or an N x H x W x C uint8 array) and returns an n_images x n_features float32 array. A path and the
    same image in memory give the same features (a PIL image is turned upright by its EXIF orientation, as a
    file is), except for a JPEG whose shorter side is at least 4 times the resize size under decode "reduced"
    (`Preprocessing.min_decode_size`, twice the resize, halved at least once): only a file can be
    decoded at reduced scale (a 4000 x 3000 photo: cosine 0.998 to the in-memory image's features).

    Attributes
    ----------
    feature_space_ : dict, everything that determines the features (the store's feature space).
    layer_widths_ : dict, features each layer contributes, in column order; `get_feature_names_out()`
        names column i of layer L "L_i" (e.g. "bn2_0"), so a layer's columns are easy to pick.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        weights: str | os.PathLike | None = None,
        layer: str | list[str] | None = None,
        pooling: str = "avg",
        image_size: int | None = None,
        tta: str = "none",
        decode: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str = "auto",
        engine: str = "auto",
        cache: str | os.PathLike | bool | None = None,
    ) -> None:
        self.model = model
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.tta = tta
        self.decode = decode
        self.batch_size = batch_size
        self.device = device
        self.engine = engine
        self.cache = cache

    # ---- scikit-learn API -------------------------------------------------------------------------------
    def fit(self, X: ImagesLike, y: object = None) -> PretrainedFeatures:
        """Check the parameters and X; the network is pretrained, so nothing is learned from X.

        Reads no weights and builds no network: the layers' widths come from shapes alone.
        """
        from featx.features._extractor import Extractor, settle_space

        as_items(X)
        validate_parameters(batch_size=self.batch_size, cache=self.cache)  # the others: by Extractor.create
        self._extractor = Extractor.create(
            self.model, self.weights, self.layer, self.pooling, self.image_size, self.tta, self.device, self.engine,
            decode=self.decode,
        )
        self._extractor.resolved_device()  # a bad device is said by fit, and resolved once for transform
        if self.cache is not False:  # an existing store is extended in its own decode mode
            store = None if self.cache is None or self.cache is True else Path(self.cache)
            self._extractor = settle_space(self._extractor, self.decode, store, "float32")
        self.feature_space_ = self._extractor.space.as_dict()
        self.layer_widths_ = self._extractor.layer_widths()
        return self

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Column names: "L_i" for the i-th feature of layer L."""
        check_is_fitted(self)
        return np.array([f"{layer}_{i}" for layer, width in self.layer_widths_.items() for i in range(width)], dtype=object)

    def transform(self, X: ImagesLike) -> np.ndarray:
        """Features of the images in X (n_images x n_features float32), computed only for unseen contents."""
        check_is_fitted(self)
        items = as_items(X)
        with self._store_path() as path:
            keys = self._keys(items)
            features, missing = self._lookup(path, keys)
            if missing:
                self._compute(path, items, keys, missing)
                features, missing = self._lookup(path, keys)
            if missing:
                changed = [str(items[i]) for i, key in enumerate(keys) if key in missing]
                raise _failed([(p, "changed while being read; run again") for p in changed])
        return features

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # one image per sample, not a numeric matrix
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True  # file paths
        tags.transformer_tags.preserves_dtype = []  # always float32
        return tags

    # ---- internals --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _store_path(self) -> Iterator[Path]:
        if self.cache is False:
            with tempfile.TemporaryDirectory(prefix="featx-") as folder:
                yield Path(folder) / "features.h5"
        elif self.cache is None or self.cache is True:
            yield self._extractor.space.store_path()
        else:
            yield Path(self.cache)

    def _keys(self, items: list) -> list[str]:
        """Content key of every item: hash of a file's bytes, or of an in-memory image's RGB pixels."""
        from featx.images._memory import as_rgb, image_key

        keys: list[str | None] = [None] * len(items)
        paths = {i: os.fspath(x) for i, x in enumerate(items) if isinstance(x, (str, os.PathLike))}
        failures = [(p, "a folder or CSV file, not an image") for p in paths.values() if os.path.isdir(p) or p.lower().endswith(".csv")]
        if failures:  # said once each, not hashed as well
            raise _failed(failures)
        for i, (key, error, _) in zip(paths, content_keys(list(paths.values()))):
            keys[i] = key
            if error:
                failures.append((paths[i], error))
        if failures:
            raise _failed(failures)
        for i, item in enumerate(items):
            if i not in paths:
                try:
                    keys[i] = image_key(as_rgb(item))
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"X[{i}] is not an image file path, PIL image or uint8 image array: {exc}") from None
        return keys

    def _lookup(self, path: Path, keys: list[str]) -> tuple[np.ndarray | None, set[str]]:
        """(features of `keys` from the store, None if any is missing; the missing keys)."""
        from featx.features._store import FeatureStore

        if not path.is_file():
            return None, set(keys)
        with _wait_for_store(lambda: FeatureStore.open(path)) as store:
            store.space.check_same(
                self._extractor.space, "store has", "transformer asks",
                f"{path} holds features of another feature space; use another cache",
            )
            index = {key: row for row, key in enumerate(store.keys())}
            missing = {key for key in keys if key not in index}
            if missing:
                return None, missing
            return store.rows([index[key] for key in keys]).astype(np.float32, copy=False), missing

    def _compute(self, path: Path, items: list, keys: list[str], missing: set[str]) -> None:
        """Put the features of the missing contents into the store, through the one extraction run."""
        from featx.features._extraction import extract_arrays, extract_files
        from featx.images._inputs import find_images
        from featx.images._memory import as_rgb

        dtype = _stored_dtype(path)  # a store of `featx extract --float16` named as the cache grows as it is
        todo = {key: i for i, key in enumerate(keys) if key in missing}  # one item per missing content
        files = [os.fspath(items[i]) for i in todo.values() if isinstance(items[i], (str, os.PathLike))]
        images = {key: i for key, i in todo.items() if not isinstance(items[i], (str, os.PathLike))}
        failures = []
        if images:
            rgb = [as_rgb(items[i]) for i in images.values()]
            report = _wait_for_store(
                lambda: extract_arrays(
                    rgb, list(images), self._extractor, store=path, dtype=dtype, batch_size=self.batch_size,
                    names=[f"X[{i}]" for i in images.values()],
                )
            )
            failures += report.failures
        if files:
            report = _wait_for_store(
                lambda: extract_files(
                    find_images(files), self._extractor, store=path, dtype=dtype, batch_size=self.batch_size, progress=False,
                    workers=0 if multiprocessing.parent_process() else None,  # joblib workers cannot fork decoders
                )
            )
            failures += report.failures
        if failures:
            raise _failed(failures)

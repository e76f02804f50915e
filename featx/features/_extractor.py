"""The Extractor: a feature space's network on a device and engine, what every extraction runs (locally, in the
transformer, on Ray actors); below both the extraction loop and the Ray backend."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from featx.backbones._preprocessing import DEFAULT_DECODE, LEGACY_DECODE
from featx.backbones._registry import get_backbone
from featx.backbones._weights import WeightsSource
from featx.errors import FeatxError, UnknownNameError
from featx.features._space import FeatureSpace
from featx.features._store import FeatureStore
from featx.names import DEFAULT_MODEL, ENGINES


class Extractor:
    """A feature space's network on a device and engine: what every extraction runs.

    The network is built on first use and at most once (`runner()`); it is never pickled, so an extractor
    travels to Ray actors and joblib workers as its settings and each process builds its own.
    """

    def __init__(self, space: FeatureSpace, weights: WeightsSource, device: str = "auto", engine: str = "auto") -> None:
        if engine not in ENGINES:
            raise UnknownNameError("engine", engine, ENGINES)
        self.space, self.weights, self.device, self.engine = space, weights, str(device), engine
        self._runner = None

    @classmethod
    def create(
        cls,
        model: str = DEFAULT_MODEL,
        weights: str | os.PathLike | None = None,
        layer: str | Sequence[str] | None = None,
        pooling: str = "avg",
        image_size: int | None = None,
        tta: str = "none",
        device: str = "auto",
        engine: str = "auto",
        decode: str | None = None,
    ) -> Extractor:
        """`decode` None: the default mode for a new store (see `settle_space` for an existing one)."""
        backbone = get_backbone(model)
        source = backbone.weights(weights)
        space = FeatureSpace.of(backbone, source, layer, pooling, image_size, tta, decode or DEFAULT_DECODE)
        return cls(space, source, device, engine)

    def layer_widths(self) -> dict[str, int]:
        """Features each layer contributes, in column order, from shapes alone (no weights read, nothing
        computed); refuses unknown layer names."""
        from featx.features._network import layer_widths

        backbone = get_backbone(self.space.model)
        if self.space.layer_names is None:
            return {backbone.feature_node or "features": backbone.feature_dim}
        return layer_widths(backbone, self.space.layer_names, self.space.crop)

    def validate(self, progress: bool = False) -> None:
        """Check what a new store needs without building the network: layer names, and the weights (fetched
        on first use, with a progress bar on stderr if `progress`)."""
        from featx.features._network import layer_widths

        layer_widths(get_backbone(self.space.model), self.space.layer_names, self.space.crop)
        self.weights.fetch(progress)

    def runner(self):
        """The network on its engine and device (see `engines.build_runner`), built on the first call."""
        if self._runner is None:
            from featx.backbones._device import resolve_device
            from featx.features._engines import build_runner

            self._runner = build_runner(self.space, self.weights, resolve_device(self.device), self.engine)
        return self._runner

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_runner": None}


def settle_space(extractor: Extractor, decode: str | None, store: Path | None, dtype: str) -> Extractor:
    """The extractor of a run whose decode mode is `decode` (None: not named) and whose store is `store`
    (None: the default store of the space).

    A run that names no decode mode extends an existing store made with the legacy (full) decoding, as
    featx 0.1.0 made them, rather than refusing it: that store, or else the default store of the legacy
    space when that exists. Otherwise `extractor` as it is.
    """
    space = extractor.space
    if decode is not None or space.decode == LEGACY_DECODE:
        return extractor
    legacy = space.with_decode(LEGACY_DECODE)
    if store is None:
        adopt = not space.store_path(dtype).exists() and legacy.store_path(dtype).exists()
    elif store.is_file():
        try:
            with FeatureStore.open(store) as opened:
                adopt = opened.space.decode == LEGACY_DECODE
        except FeatxError:
            adopt = False  # not a store, or busy: opening it for the run says so
    else:
        adopt = False
    return Extractor(legacy, extractor.weights, extractor.device, extractor.engine) if adopt else extractor

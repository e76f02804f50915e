"""The Extractor: a feature space's network on a device and engine, what every extraction runs (locally, in the
transformer, on Ray actors); below both the extraction loop and the Ray backend."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from featx.backbones._preprocessing import DEFAULT_DECODE, LEGACY_DECODE, Preprocessing
from featx.backbones._registry import Backbone, get_backbone
from featx.backbones._weights import WeightsSource
from featx.errors import FeatxError
from featx.features._space import FeatureSpace
from featx.features._store import FeatureStore
from featx.names import DEFAULT_MODEL, validate_parameters

if TYPE_CHECKING:
    import torch

    from featx.features._engines import Runner


class Extractor:
    """A feature space's network on a device and engine: what every extraction runs.

    Each decision is taken once and kept: the registry entry (`backbone`, looked up at most once), the
    device (`resolved_device()`, resolved at most once) and the network (`runner()`, built at most once).
    None of them is pickled, so an extractor travels to Ray actors and joblib workers as its settings and
    each process decides again (a worker's 'auto' device is its own).
    """

    _PER_PROCESS = ("_backbone", "_device", "_runner")  # decided in each process, never pickled

    def __init__(
        self,
        space: FeatureSpace,
        weights: WeightsSource,
        device: str = "auto",
        engine: str = "auto",
        backbone: Backbone | None = None,
    ) -> None:
        validate_parameters(engine=engine)
        self.space, self.weights, self.device, self.engine = space, weights, str(device), engine
        self._backbone, self._device, self._runner = backbone, None, None

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
        """`decode` None: the default mode for a new store (see `settle_space` for an existing one). Each
        parameter is checked once: against `featx.names.PARAMETERS` here (`image_size` by `Preprocessing.at_size`,
        `engine` by the constructor), the model by the registry, the device when first resolved."""
        validate_parameters(model=model, weights=weights, layer=layer, pooling=pooling, tta=tta, decode=decode)
        backbone = get_backbone(model)
        source = backbone.weights(weights)
        space = FeatureSpace.of(backbone, source, layer, pooling, image_size, tta, decode or DEFAULT_DECODE)
        return cls(space, source, device, engine, backbone)

    def with_space(self, space: FeatureSpace) -> Extractor:
        """This extractor (its weights, device and engine, and what it decided) in another feature space of
        the same model."""
        other = Extractor(space, self.weights, self.device, self.engine, self._backbone)
        other._device = self._device
        return other

    @property
    def backbone(self) -> Backbone:
        """The registry entry of the space's model, looked up once."""
        if self._backbone is None:
            self._backbone = get_backbone(self.space.model)
        return self._backbone

    @property
    def preprocessing(self) -> Preprocessing:
        """What every image goes through before the network (the feature space's, decode mode included)."""
        return self.space.preprocessing

    def resolved_device(self) -> torch.device:
        """The compute device ('auto' -> cuda when available, else cpu), resolved and checked once."""
        if self._device is None:
            from featx.backbones._device import resolve_device

            self._device = resolve_device(self.device)
        return self._device

    def layer_widths(self) -> dict[str, int]:
        """Features each layer contributes, in column order, from shapes alone (no weights read, nothing
        computed); refuses unknown layer names."""
        from featx.features._network import layer_widths

        return layer_widths(self.backbone, self.space.layer_names, self.space.crop)  # the default layer too: its size

    def validate(self, progress: bool = False) -> None:
        """Check what a new store needs without building the network: layer names, and the weights (fetched
        on first use, with a progress bar on stderr if `progress`)."""
        from featx.features._network import layer_widths

        layer_widths(self.backbone, self.space.layer_names, self.space.crop)
        self.weights.fetch(progress)

    def runner(self) -> Runner:
        """The network on its engine and device (see `engines.build_runner`), built on the first call."""
        if self._runner is None:
            from featx.features._engines import build_runner

            self._runner = build_runner(self.space, self.weights, self.resolved_device(), self.engine, self.backbone)
        return self._runner

    def __getstate__(self) -> dict:
        return {**self.__dict__, **dict.fromkeys(self._PER_PROCESS)}

    def __setstate__(self, state: dict) -> None:
        # pickles written before the backbone and device were kept have neither (docs/compatibility.md)
        self.__dict__.update({**dict.fromkeys(self._PER_PROCESS), **state})


def settle_space(extractor: Extractor, decode: str | None, store: Path | None, dtype: str) -> Extractor:
    """The extractor of a run whose decode mode is `decode` (None: not named) and whose store is `store`
    (None: the default store of the space).

    A run that names no decode mode extends an existing store made with the legacy (full) decoding rather than
    refusing it (docs/compatibility.md): that store, or else the default store of the legacy space when that
    exists. Otherwise `extractor` as it is.
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
    return extractor.with_space(legacy) if adopt else extractor

"""The feature space: everything that determines a feature vector, and the cache files it names.

A store holds exactly one feature space, and a model bundle records the one it was trained on. Its JSON
(`as_dict`) never changes for a given space, so older stores and bundles keep their space and their file names
(docs/compatibility.md).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from featx.backbones._preprocessing import LEGACY_DECODE, Preprocessing
from featx.errors import FeatureSpaceMismatchError, FeatxError

if TYPE_CHECKING:
    from featx.backbones._registry import Backbone
    from featx.backbones._weights import WeightsSource

DEFAULT_LAYER = "default:"  # marks the backbone's own feature layer in the JSON ("default:<node>")


def cache_dir() -> Path:
    """Where stores go by default: $FEATX_CACHE, else ./cache (beside the project, where `featx fit` looks)."""
    return Path(os.environ.get("FEATX_CACHE", "cache"))


def user_cache_dir() -> Path:
    """Where derived files shared by every project go (exported ONNX graphs): $FEATX_CACHE, else the
    platform's user cache folder (~/.cache/featx on Linux, honouring XDG_CACHE_HOME)."""
    if "FEATX_CACHE" in os.environ:
        return Path(os.environ["FEATX_CACHE"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("featx", appauthor=False))


def parse_layers(layer: str | Sequence[str] | None) -> list[str] | None:
    """None, "a", "a,b" or ["a", "b"] -> list of node names (None: the backbone's default layer)."""
    if layer is None or layer == "":
        return None
    names = layer.split(",") if isinstance(layer, str) else list(layer)
    return [n.strip() for n in names if n.strip()] or None


def digest(value: object, length: int) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class FeatureSpace:
    """Model, weights id, preprocessing, layers, pooling and test-time augmentation.

    `layer` is as recorded: node names, or ("default:<node>",) for the backbone's own feature layer.
    Optional settings (`tta`, and the decode mode `preprocessing.decode`, recorded as "decode") are recorded
    only when not at their original value, so a space written before they existed reads back unchanged.
    `preprocessing` is the whole plan every extraction path applies (decode mode, resize, crop).
    """

    model: str
    weights: str
    preprocessing: Preprocessing
    layer: tuple[str, ...]
    pooling: str = "avg"
    tta: str = "none"

    @classmethod
    def of(
        cls,
        backbone: Backbone,
        weights: WeightsSource,
        layer: str | Sequence[str] | None = None,
        pooling: str = "avg",
        image_size: int | None = None,
        tta: str = "none",
        decode: str = LEGACY_DECODE,
    ) -> FeatureSpace:
        """The space of `backbone` with `weights`; `image_size` replaces the weights' resize and crop."""
        return cls(
            model=backbone.name,
            weights=weights.id,
            preprocessing=backbone.preprocessing_for(weights).at_size(image_size).with_decode(decode),
            layer=tuple(parse_layers(layer) or [DEFAULT_LAYER + (backbone.feature_node or "forward_features")]),
            pooling=pooling,
            tta=tta,
        )

    @property
    def decode(self) -> str:
        return self.preprocessing.decode

    def with_decode(self, decode: str) -> FeatureSpace:
        return replace(self, preprocessing=self.preprocessing.with_decode(decode))

    @property
    def layer_names(self) -> list[str] | None:
        """The layers to build the network with (None: the backbone's own feature layer)."""
        return None if self.layer[0].startswith(DEFAULT_LAYER) else list(self.layer)

    # ---- JSON ---------------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """The JSON object stored in stores and bundles (the same for the same settings in every version)."""
        return {
            "model": self.model,
            "weights": self.weights,
            "preprocessing": self.preprocessing.as_dict(),
            "layer": list(self.layer),
            "pooling": self.pooling,
            **({"tta": self.tta} if self.tta != "none" else {}),
            **({"decode": self.decode} if self.decode != LEGACY_DECODE else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, space: dict) -> FeatureSpace:
        """The space a store or bundle recorded."""
        try:
            return cls(
                model=space["model"],
                weights=space["weights"],
                preprocessing=Preprocessing.from_dict(space["preprocessing"], space.get("decode", LEGACY_DECODE)),
                layer=tuple(space["layer"]),
                pooling=space["pooling"],
                tta=space.get("tta", "none"),
            )
        except (KeyError, TypeError) as exc:
            raise FeatxError(f"not a featx feature space: {json.dumps(space)[:200]}") from exc

    @classmethod
    def from_json(cls, text: str) -> FeatureSpace:
        return cls.from_dict(json.loads(text))

    def difference(self, other: FeatureSpace, my_name: str, their_name: str) -> str:
        """'' when the two spaces are equal, else what differs, for messages."""
        mine, theirs = (_leaves({**space.as_dict(), "tta": space.tta}) for space in (self, other))  # "none" said as such
        return ", ".join(
            f"{k}: {my_name} {mine.get(k)!r}, {their_name} {theirs.get(k)!r}"
            for k in sorted(set(mine) | set(theirs))
            if mine.get(k) != theirs.get(k)
        )

    def check_same(self, other: FeatureSpace, my_name: str, their_name: str, message: str) -> None:
        """Raise FeatureSpaceMismatchError (`message` and what differs) unless `other` is this space."""
        diff = self.difference(other, my_name, their_name)
        if diff:
            raise FeatureSpaceMismatchError(f"{message} ({diff})")

    # ---- what it names --------------------------------------------------------------------------------
    @property
    def crop(self) -> int:
        return self.preprocessing.crop

    @property
    def image_size(self) -> int | None:
        """The --image-size that gives this preprocessing (None: the weights' own)."""
        from featx.backbones._registry import get_backbone

        backbone = get_backbone(self.model)
        try:
            own = backbone.preprocessing_for(self.weights_source())
        except FeatxError:  # weights named by a file's hash: the model's own
            own = backbone.preprocessing()
        return None if self.preprocessing == own.with_decode(self.decode) else self.crop

    def store_path(self, dtype: str = "float32") -> Path:
        """cache/<model>-<hash of the space>[-float16].h5: one store per feature space and dtype."""
        suffix = "" if dtype == "float32" else f"-{dtype}"
        return cache_dir() / f"{self.model.replace('/', '_')}-{digest(self.as_dict(), 8)}{suffix}.h5"

    # ---- back to weights ------------------------------------------------------------------------------
    def weights_source(self, file: str | os.PathLike | None = None) -> WeightsSource:
        """The weights this space was computed with: found by name, or `file` when named by a hash."""
        from featx.backbones._registry import get_backbone

        backbone = get_backbone(self.model)
        if file is not None:
            source = backbone.weights(file)
        elif self.weights == backbone.default_weights().id:
            source = backbone.default_weights()
        elif self.weights == "random":
            source = backbone.weights("random")
        elif self.weights.startswith("torchvision:"):
            source = backbone.weights(self.weights.rsplit(".", 1)[-1])
        else:
            raise FeatxError(
                f"the features come from weights {self.weights!r}, which featx cannot find by name; "
                "pass the same weights file with --weights FILE"
            )
        if source.id != self.weights:
            raise FeatureSpaceMismatchError(f"weights {source.location()} are {source.id!r}, not {self.weights!r}")
        return source


def _leaves(values: dict, prefix: str = "") -> dict:
    """A nested dict's values by dotted key ("preprocessing.crop"): a difference names what differs, not two
    whole preprocessing dicts."""
    flat = {}
    for key, value in values.items():
        flat.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat

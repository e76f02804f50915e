"""How `featx finetune` trains: `FinetuneConfig`, whose fields carry their help text and the values they accept
(the CLI builds its options from them and the library checks values against them: each stated once), and
`FinetuneResult`. Torch-free, so that `featx finetune --help` stays instant."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from featx.errors import ParameterError, UnknownNameError
from featx.names import AUGMENTS, CLASS_WEIGHTS, MAX_IMAGE_SIZE, MAX_SEED, SCHEDULES

AUTO, NONE = "auto", "none"  # freeze_until's two words that are not layer names
_KINDS = {int: "an integer", float: "a finite number", str: "a non-empty string"}


@dataclass(frozen=True)
class Setting:
    """What one configuration field accepts: a `kind` (int, float, str), a range or choices; None where the
    default is None or `optional`. `short` and `metavar` only shape its CLI option."""

    help: str
    kind: type = int
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    short: str | None = None
    optional: bool = False

    def check(self, name: str, value: object, default: object) -> None:
        """ParameterError (UnknownNameError for a choice) unless `value` is accepted."""
        if value is None and (default is None or self.optional):
            return
        number = isinstance(value, numbers.Integral if self.kind is int else numbers.Real) and not isinstance(value, bool)
        if not (isinstance(value, str) and value.strip() if self.kind is str else number and math.isfinite(value)):
            raise ParameterError(f"{name} must be {_KINDS[self.kind]}, got {value!r}")  # NaN trained a NaN network
        if self.choices is not None and value not in self.choices:
            raise UnknownNameError(name.replace("_", " "), value, self.choices)
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise ParameterError(f"{name} must be {self.range}, got {value!r}")

    @property
    def range(self) -> str:
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


def _setting(default, help: str, **accepts):
    return field(default=default, metadata={"setting": Setting(help, **accepts)})


@dataclass(frozen=True)
class FinetuneConfig:
    """How to train. `epochs` counts the all-layer epochs, after `freeze_epochs` head-only ones (as fastai)."""

    # The defaults are the recipe measured best on ELPV (docs/benchmarks.md, 3 seeds): 78.4% for the head, 81.5%
    # for an SVM on its features with the 8 symmetries, against 73.3% / 75.0% with the earlier defaults (the
    # weights' 256/224 crop, which cuts a cell's edges; 10 epochs; no label smoothing; body lr 5e-4).
    epochs: int = _setting(19, "All-layer epochs.", low=0)
    freeze_epochs: int = _setting(1, "Head-only warm-up epochs before them (body frozen, BatchNorm statistics kept).",
                                  low=0)
    image_size: int | None = _setting(None, "Train at S x S (shorter side resized to S, centre crop); default: the "
                                            "weights' input size, the whole image (224 for Lite0).", low=8, high=MAX_IMAGE_SIZE,
                                      metavar="S")
    augment: str = _setting("d4", "d4: the 8 rotations and mirror images (cells, tiles, microscopy); flip: horizontal "
                                  "(photos); none.", kind=str, choices=AUGMENTS)
    jitter: float = _setting(0.1, "Random zoom in by up to this fraction, at a random position (0: none).",
                             kind=float, low=0)
    batch_size: int = _setting(32, "Images per step, at least 2 (BatchNorm trains on batches).", low=2, short="-b")
    lr: float = _setting(2e-3, "Peak learning rate of the head (and of the warm-up).", kind=float, low=0, low_open=True)
    body_lr: float = _setting(1e-3, "Peak learning rate of the body's last stages; earlier stages down to "
                                    "body-lr / lr-ratio.", kind=float, low=0, low_open=True)
    lr_ratio: float = _setting(10.0, "How many times lower the body's first stages learn than its last.",
                               kind=float, low=1)
    weight_decay: float = _setting(0.01, "AdamW's weight decay.", kind=float, low=0)
    label_smoothing: float = _setting(0.1, "Share of each target spread over the other classes.", kind=float,
                                      low=0, high=1, high_open=True)
    class_weight: str | None = _setting(None, "balanced: loss weights inverse to the class frequencies.", kind=str,
                                        choices=CLASS_WEIGHTS)
    schedule: str = _setting("onecycle", "onecycle: warm up, then cosine down (fastai's fit_one_cycle); cosine: "
                                         "down from the peak.", kind=str, choices=SCHEDULES)
    val_size: float = _setting(0.15, "Stratified share of DATA that picks the best epoch and stops early (0: keep "
                                     "the last epoch).", kind=float, low=0, high=1, high_open=True)
    patience: int = _setting(30, "All-layer epochs without a better validation score (accuracy, then loss) before "
                                 "stopping (the best epoch is kept either way).", low=1)
    seed: int = _setting(0, "Seed of the split, the new head, the order, augmentation and dropout.", low=0,
                         high=MAX_SEED)
    freeze_until: str | None = _setting(AUTO, "Keep this layer (a module name, e.g. blocks.1) and all before it as "
                                              "pretrained: faster steps, generic early features. auto: the stages "
                                              "at 1/4 of the input's resolution or finer (Lite0: blocks.1, ResNet: "
                                              "layer1); none (or None): train every layer.", kind=str,
                                        metavar="LAYER", optional=True)
    ordinal: str | None = _setting(None, "The classes are ordered grades, comma-separated, low to high (e.g. "
                                         "good,fair,poor): soft targets make near misses cost less.", kind=str,
                                   metavar="CLASSES")

    def check(self) -> None:
        """ParameterError (UnknownNameError for an unknown choice) for a value this configuration cannot use."""
        for f in fields(self):
            f.metadata["setting"].check(f.name, getattr(self, f.name), f.default)
        if self.epochs + self.freeze_epochs < 1:
            raise ParameterError("at least one epoch is needed (epochs + freeze_epochs >= 1)")

    @classmethod
    def of(cls, config: FinetuneConfig | Mapping | None = None, **options: object) -> FinetuneConfig:
        """`config` (default: the defaults; a mapping: of field names) with `options` (field names) replaced,
        checked."""
        if isinstance(config, Mapping):
            config, options = None, {**config, **options}
        elif config is not None and not isinstance(config, cls):
            raise ParameterError(f"config must be a FinetuneConfig or a dict of its fields, got {type(config).__name__}")
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise UnknownNameError("finetune option", min(unknown), [f.name for f in fields(cls)])
        config = cls(**{**asdict(config or cls()), **options})
        config.check()
        return config


@dataclass
class FinetuneResult:
    """What `finetune` did: the weights file, one history row per epoch, the epoch kept, skipped files."""

    path: Path
    history: list[dict]
    best_epoch: int
    classes: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)

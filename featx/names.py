"""The names featx accepts and their defaults, in one torch-free module (the CLI builds its options from it), and
the table of extraction parameters checked once, in the manner of scikit-learn's `_parameter_constraints`:
`extract`, `Extractor`, `PretrainedFeatures` and `Preprocessing.at_size` check `PARAMETERS`.

A value outside a parameter's options is an `UnknownNameError` (an unknown pooling, tta, engine...); any other
bad value a `ParameterError` naming the parameter and the value; both are exit 2 in the CLI. Whether a model, a
layer or a device exists is the registry's, the network's and `resolve_device`'s to say, with the same errors.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass

from featx.errors import ParameterError, UnknownNameError

DEFAULT_MODEL = "efficientnet_lite0"
POOLINGS = ("avg", "max", "gem")
TTAS = ("none", "d4")  # d4: features averaged over the 8 symmetries of the square
ENGINES = ("auto", "torch", "compile", "onnx")
DTYPES = ("float32", "float16")
DECODES = ("full", "reduced")  # full: every pixel (the first stores' mode: docs/compatibility.md); reduced: large images at a reduced size first
MODEL_FORMATS = ("skops", "joblib")
CLASS_WEIGHTS = ("balanced",)
SCORINGS = ("balanced_accuracy", "accuracy")  # what cross-validation maximises; balanced: each class counts the same
AUGMENTS = ("d4", "flip", "none")  # fine-tuning: d4, the 8 symmetries of the square; flip, a horizontal mirror
SCHEDULES = ("onecycle", "cosine")  # fine-tuning learning-rate schedules
DEFAULT_BATCH_SIZE = 64
MAX_SEED = 2**32 - 1  # scikit-learn's random_state takes no other
COMPARE_TEST_SIZE = 0.25  # featx compare's test part, unless a split CSV names it
# The largest image size (resize, crop) featx applies or reads from a file: 4x the largest input of any pretrained
# network it loads (timm's 1,024 px SAM and Sapiens ViTs). A crafted fine-tuned file's crop of 60,000 made each
# decode worker try 10.8 GB an image; a batch of 64 at this bound is still 13 GB in float32.
MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class Options:
    """One of `values`; an unknown one is called a `label` in messages."""

    values: tuple[str, ...]
    label: str

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(self.values)


@dataclass(frozen=True)
class AtLeast:
    """An integer (not a bool) >= `low` (and <= `high`, when given)."""

    low: int
    high: int | None = None

    def accepts(self, value: object) -> bool:
        return (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= self.low
                and (self.high is None or value <= self.high))

    def __str__(self) -> str:
        return f"an integer >= {self.low}" if self.high is None else f"an integer from {self.low} to {self.high}"


@dataclass(frozen=True)
class InstanceOf:
    """An instance of `types`, described as `what`."""

    types: tuple[type, ...]
    what: str

    def accepts(self, value: object) -> bool:
        return isinstance(value, self.types)

    def __str__(self) -> str:
        return self.what


@dataclass(frozen=True)
class Names:
    """A string, or a list or tuple of strings, described as `what`."""

    what: str

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))

    def __str__(self) -> str:
        return self.what


class _NoneValue:
    def accepts(self, value: object) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


NONE = _NoneValue()
Constraint = Options | AtLeast | InstanceOf | Names | _NoneValue
_PATH = (str, os.PathLike)

PARAMETERS: dict[str, tuple[Constraint, ...]] = {
    "model": (InstanceOf((str,), "a model name (see featx models)"),),
    "weights": (NONE, InstanceOf(_PATH, "'random', a weights file or a named variant")),
    "layer": (NONE, Names("node name(s): 'a,b' or ['a', 'b']")),
    "pooling": (Options(POOLINGS, "pooling"),),
    "image_size": (NONE, AtLeast(1, MAX_IMAGE_SIZE)),
    "tta": (Options(TTAS, "test-time augmentation (tta)"),),
    "decode": (NONE, Options(DECODES, "decode mode")),
    "engine": (Options(ENGINES, "engine"),),
    "dtype": (Options(DTYPES, "dtype"),),
    "batch_size": (AtLeast(1),),
    "workers": (NONE, AtLeast(0)),
    "ray_actors": (NONE, AtLeast(1)),
    "cache": (NONE, InstanceOf((bool, *_PATH), "False or a store path")),
}


def validate_parameters(**values: object) -> None:
    """Raise for the first value its entry in `PARAMETERS` does not allow (see the module's docstring)."""
    for name, value in values.items():
        allowed = PARAMETERS[name]
        if any(constraint.accepts(value) for constraint in allowed):
            continue
        options = [constraint for constraint in allowed if isinstance(constraint, Options)]
        if options and isinstance(value, str):
            raise UnknownNameError(options[0].label, value, options[0].values)
        raise ParameterError(f"{name} must be {' or '.join(map(str, allowed))}, got {value!r}")


def parameter_choices(name: str) -> tuple[str, ...]:
    """The names a parameter accepts (for the CLI's choices)."""
    return next(constraint.values for constraint in PARAMETERS[name] if isinstance(constraint, Options))

"""The names featx accepts and their defaults, in one torch-free module (the CLI builds its options from it)."""
from __future__ import annotations

DEFAULT_MODEL = "efficientnet_lite0"
POOLINGS = ("avg", "max", "gem")
TTAS = ("none", "d4")  # d4: features averaged over the 8 symmetries of the square
ENGINES = ("auto", "torch", "compile", "onnx")
DTYPES = ("float32", "float16")
DECODES = ("full", "reduced")  # full: every pixel (featx 0.1.0); reduced: large images at a reduced size first
MODEL_FORMATS = ("skops", "joblib")
CLASS_WEIGHTS = ("balanced",)
AUGMENTS = ("d4", "flip", "none")  # fine-tuning: d4, the 8 symmetries of the square; flip, a horizontal mirror
SCHEDULES = ("onecycle", "cosine")  # fine-tuning learning-rate schedules
DEFAULT_BATCH_SIZE = 64

"""Shared fixtures: real images (ELPV solar cells, scikit-image photographs) and a private cache folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """No test writes into the repository's cache/ folder."""
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "featx-cache"))
    return tmp_path / "featx-cache"


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """No test reaches the internet for weights: tests of downloading unset this and serve files on loopback."""
    monkeypatch.setenv("FEATX_OFFLINE", "1")


@pytest.fixture(scope="session")
def elpv_folder(tmp_path_factory) -> Path:
    """Real ELPV images, 5 per class, in class folders (20 images)."""
    from featx.datasets import write_elpv_folder

    return write_elpv_folder(tmp_path_factory.mktemp("elpv") / "cells", per_class=5)


@pytest.fixture
def elpv_copy(elpv_folder, tmp_path) -> Path:
    """A private, writable copy of elpv_folder."""
    return Path(shutil.copytree(elpv_folder, tmp_path / "cells"))


@pytest.fixture(scope="session")
def chelsea() -> Image.Image:
    """scikit-image's photograph of Chelsea the cat."""
    from skimage import data

    return Image.fromarray(data.chelsea())


def synthetic_space(model: str = "synthetic"):
    """A feature space for stores filled by hand, without a network."""
    from featx.backbones._preprocessing import Preprocessing
    from featx.features._space import FeatureSpace

    return FeatureSpace(model, "random", Preprocessing(8, 8, "bilinear", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), ("x",))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)

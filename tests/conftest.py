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


def assert_same_features(actual, expected, rtol: float = 1e-4) -> None:
    """Equal up to float noise at the features' own scale: random-weight mobilenet_v3_small features are about
    1e-8, so any absolute tolerance of 1e-6 would let every pair of vectors pass."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def interrupt_once_rows_are_committed(command: list[str], store: Path, timeout: float = 600):
    """Start `command` (an extraction into `store`), send it SIGINT as soon as a row is committed, and return
    (returncode, stderr, what happened: seconds to the first row, whether it ended first, its signal masks).

    The child starts with SIGINT unblocked and at its default, as from a shell: a process started from a test
    runner inherits the runner's blocked and ignored signals, and a child that ignores SIGINT simply finishes."""
    import signal
    import subprocess
    import time

    import h5py

    def restore_sigint() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def rows() -> int:  # read without the store's lock: a read meeting a half-written header is retried
        try:
            with h5py.File(store, "r", locking=False) as h5:
                return int(h5.attrs["rows"])
        except (OSError, KeyError):
            return 0

    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=restore_sigint)
    try:
        with open(f"/proc/{process.pid}/status") as f:
            masks = " ".join(line.strip() for line in f if line.startswith(("SigBlk", "SigIgn")))
    except OSError:
        masks = "unknown"
    while rows() == 0 and process.poll() is None and time.monotonic() < started + timeout:
        time.sleep(0.1)  # the first rows, whatever the machine's load (a fixed wait failed on a busy machine)
    seen = time.monotonic() - started
    ended_first = process.poll() is not None
    process.send_signal(signal.SIGINT)
    _, err = process.communicate()
    return process.returncode, err, f"first row after {seen:.1f} s; ended before the interrupt: {ended_first}; {masks}"

"""Stores and models written by featx 0.1.0 (tests/data/v0.1.0) open, extend and predict unchanged."""
import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import featx
from featx.backbones._registry import get_backbone
from featx.classify._bundle import load_bundle
from featx.classify._inference import predict
from featx.datasets import write_elpv_folder
from featx.features._space import FeatureSpace
from featx.features._store import FeatureStore

V010 = Path(__file__).parent / "data" / "v0.1.0"


@pytest.fixture
def old_store(tmp_path) -> Path:
    """The 0.1.0 Lite0 store beside the very images it was made from (paths are relative to the store)."""
    write_elpv_folder(tmp_path / "cells", per_class=4, seed=0)
    return Path(shutil.copy(V010 / "lite0.h5", tmp_path / "lite0.h5"))


def test_feature_spaces_of_0_1_0_read_back_and_are_rebuilt_exactly(tmp_path):
    lite0 = get_backbone("efficientnet_lite0")
    small = get_backbone("mobilenet_v3_small")
    expected = {
        "lite0.h5": FeatureSpace.of(lite0, lite0.weights()),
        "mnv3-d4.h5": FeatureSpace.of(small, small.weights("random"), "features.3,features.12", "gem", 64, "d4"),
    }
    for name, space in expected.items():
        with h5py.File(V010 / name, "r") as h5:
            raw = h5.attrs["feature_space"]
        with FeatureStore.open(shutil.copy(V010 / name, tmp_path / name)) as store:
            assert store.space == space and space.to_json() == raw  # same JSON, byte for byte
        assert FeatureSpace.from_dict(space.as_dict()) == space
        # 0.1.0 named default stores <model>-<sha256 of that JSON>.h5: the same files are found again
        assert space.store_path().name == f"{space.model}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}.h5"


def test_a_0_1_0_store_extends_and_a_rerun_extracts_nothing(old_store, tmp_path):
    original = old_store.read_bytes()
    before = featx.load_features(old_store)
    assert old_store.read_bytes() == original  # reading leaves a 0.1.0 store as it is
    with h5py.File(old_store, "a") as h5:  # as if an upgrade had been killed before it committed
        h5.create_dataset("files/path.bytes", data=np.frombuffer(b"junk", np.uint8), maxshape=(None,))
    again = featx.extract(tmp_path / "cells", store=old_store, progress=False, workers=0)
    assert (again.n_files, again.n_extracted, again.n_failed) == (16, 0, 0)
    with h5py.File(old_store, "r") as h5:  # upgraded: texts out of HDF5's global heap
        assert h5.attrs["format"] == "featx-store/2" and h5["files/path.bytes"].dtype == np.uint8
    upgraded = featx.load_features(old_store)
    assert list(upgraded.paths) == list(before.paths) and list(upgraded.classes) == list(before.classes)
    more = write_elpv_folder(tmp_path / "more", per_class=1, seed=7)
    added = featx.extract(more, store=old_store, progress=False, workers=0)
    assert added.n_extracted == len(featx.load_features(old_store).paths) - 16 > 0
    after = featx.load_features(old_store)
    old = {p: f for p, f in zip(before.paths, before.features)}
    for path, features in zip(after.paths, after.features):
        if path in old:
            np.testing.assert_array_equal(features, old[path])


def test_a_0_1_0_model_predicts_as_it_did(old_store, tmp_path):
    bundle = load_bundle(V010 / "lite0-svm.skops")
    stored = featx.load_features(old_store)
    expected = [bundle.classes[i] for i in bundle.pipeline.predict(stored.features)]
    predictions, done = predict(bundle, [str(p) for p in stored.paths], store=tmp_path / "apply.h5", workers=0, progress=False)
    assert done.n_extracted == 16 and predictions.predicted == expected
    features = featx.load_features(tmp_path / "apply.h5")
    order = {p: i for i, p in enumerate(stored.paths)}
    np.testing.assert_allclose(features.features[[order[p] for p in features.paths]], stored.features, rtol=1e-4, atol=1e-4)

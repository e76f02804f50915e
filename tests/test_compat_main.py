"""Files written by featx's main before issue #26 moved its modules into subpackages (tests/data/main-ec68bad:
a store, a skops model, a fine-tuned network, a pickled Pipeline([PretrainedFeatures(), LogisticRegression()])
and a pickled FinetunedClassifier) load with today's code and give the outputs recorded when they were made
(expected.json; the folder's make.py wrote both, on a CPU)."""
import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import featx
from featx.backbones._registry import get_backbone
from featx.classify._bundle import load_bundle
from featx.classify._inference import predict
from featx.features._space import FeatureSpace
from featx.finetuning._apply import load_finetuned

DATA = Path(__file__).parent / "data" / "main-ec68bad"
EXPECTED = json.loads((DATA / "expected.json").read_text())
_spec = importlib.util.spec_from_file_location("make_main_ec68bad", DATA / "make.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)
# Outputs are recorded to 1e-6: recomputed on a CPU they differ by that rounding only. The pipeline's features
# may come from another engine than when recorded (ONNX Runtime, or PyTorch without it): on these cells the two
# engines' features differ by up to 1.0e-5 and the pipeline's probabilities by 4e-7 (measured), hence its
# looser tolerances.
EXACT, ENGINE_PROBABILITIES, ENGINE_FEATURES = 1e-6, 1e-5, 1e-4


@pytest.fixture
def folder(tmp_path) -> Path:
    """A writable copy of the files beside their cells (the store holds paths relative to itself)."""
    return Path(shutil.copytree(DATA, tmp_path / "data"))


def cells(folder: Path) -> list[str]:
    return [str(folder / p) for p in EXPECTED["cells"]]


def test_the_store_reads_back_and_a_rerun_extracts_nothing(folder):
    expected, store = EXPECTED["store.h5"], folder / "store.h5"
    original = store.read_bytes()
    stored = featx.load_features(store)
    assert store.read_bytes() == original  # reading leaves it as it is
    assert [str(Path(p).relative_to(folder)) for p in stored.paths] == expected["paths"]
    assert list(stored.classes) == expected["classes"]
    assert make.features_sha256(stored.features) == expected["features_sha256"]
    with featx.FeatureStore.open(store) as opened:
        assert list(opened.keys()) == expected["keys"] and opened.space.to_json() == expected["feature_space"]
        lite0 = get_backbone("efficientnet_lite0")
        assert opened.space == FeatureSpace.of(lite0, lite0.weights(), decode="reduced")  # rebuilt the same
    again = featx.extract(folder / "cells", store=store, progress=False, workers=0)
    assert (again.n_files, again.n_extracted, again.n_failed) == (len(EXPECTED["cells"]), 0, 0)


def test_the_skops_model_predicts_as_it_did(folder):
    expected = EXPECTED["model.skops"]
    bundle = load_bundle(folder / "model.skops")
    assert bundle.space.to_json() == EXPECTED["store.h5"]["feature_space"]
    # into the store beside the cells (store=), which holds their rows already: nothing is extracted
    predictions, sources = predict(bundle, cells(folder), store=folder / "store.h5", workers=0, progress=False)
    assert sources.extracted.n_extracted == 0
    assert predictions.predicted == expected["predicted"]
    np.testing.assert_allclose(predictions.scores, expected["probabilities"], rtol=0, atol=EXACT)


def test_the_finetuned_network_predicts_as_it_did(folder):
    expected = EXPECTED["finetuned.safetensors"]
    network = load_finetuned(folder / "finetuned.safetensors")
    scores, found, failures = network.probabilities(cells(folder), workers=0, device="cpu", progress=False)
    assert network.classes == expected["classes"] and found.all() and failures == []
    np.testing.assert_allclose(scores, expected["probabilities"], rtol=0, atol=EXACT)


def test_the_pickled_finetuned_classifier_predicts_as_it_did(folder):
    expected = EXPECTED["finetuned_classifier.pkl"]
    with open(folder / "finetuned_classifier.pkl", "rb") as f:
        classifier = pickle.load(f).set_params(device="cpu")
    np.testing.assert_allclose(classifier.predict_proba(cells(folder)), expected["probabilities"], rtol=0, atol=EXACT)
    assert list(classifier.predict(cells(folder))) == expected["predicted"]


def test_the_pickled_pipeline_predicts_as_it_did(folder):
    expected = EXPECTED["pipeline.pkl"]
    with open(folder / "pipeline.pkl", "rb") as f:
        pipeline = pickle.load(f)
    probabilities = pipeline.predict_proba(cells(folder))  # features computed afresh, into the default store
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=0, atol=ENGINE_PROBABILITIES)
    assert list(pipeline.predict(cells(folder))) == expected["predicted"]
    # ... and equal to those of the store extract wrote then
    stored = featx.load_features(folder / "store.h5")
    fresh = pipeline[0].transform(list(map(str, stored.paths)))
    np.testing.assert_allclose(fresh, stored.features, rtol=0, atol=ENGINE_FEATURES)

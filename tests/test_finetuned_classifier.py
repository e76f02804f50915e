"""FinetunedClassifier: featx.finetune as a scikit-learn classifier on real ELPV cells, at a tiny size."""
import pickle
import shutil

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_predict

from featx import FinetuneConfig, FinetunedClassifier
from featx.errors import BadInputError
from featx.finetuning._apply import load_finetuned

CONFIG = FinetuneConfig(image_size=32, freeze_epochs=1, epochs=1, batch_size=8, val_size=0, seed=1)


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    from featx.datasets import load_elpv

    data = load_elpv()
    rng = np.random.default_rng(0)
    picked = np.concatenate([rng.choice(np.flatnonzero(data.target == k), 8, replace=False) for k in (0, 3)])
    return data.filenames[picked], np.where(data.target[picked] == 0, 9, 10)  # as text, "10" sorts before "9"


@pytest.fixture(scope="module")
def fitted(cells):
    return FinetunedClassifier(config=CONFIG, workers=0).fit(*cells)


def test_fit_predict_proba_in_the_labels_own_order(fitted, cells, tmp_path):
    X, y = cells
    assert list(fitted.classes_) == [9, 10] and fitted.best_epoch_ == 2 and fitted.failures_ == []
    proba = fitted.predict_proba(X)
    assert proba.shape == (16, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    network = load_finetuned(fitted.save_network(tmp_path / "n.safetensors"))
    assert network.classes == ["10", "9"]  # the network's columns, sorted as text: swapped back for sklearn
    np.testing.assert_allclose(proba, network.probabilities(list(X), workers=0, progress=False)[0][:, ::-1])
    np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[proba.argmax(1)])


def test_clone_pickle_and_the_saved_network(fitted, cells, tmp_path):
    X, _ = cells
    params = clone(fitted).get_params()
    assert params["config"] == CONFIG and not hasattr(clone(fitted), "network_")
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(X[:4]), fitted.predict_proba(X[:4]))
    assert load_finetuned(fitted.save_network(tmp_path / "n.safetensors")).metadata["image_size"] == 32


def test_cross_validation(cells):
    X, y = cells
    proba = cross_val_predict(FinetunedClassifier(config=CONFIG, workers=0), X, y, cv=2, method="predict_proba")
    assert proba.shape == (16, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert proba[:, 0].std() > 0.01  # each fold's network scores images differently: not a constant answer


def test_a_bad_file_at_predict_time_is_named(fitted, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(BadInputError, match="broken.png"):
        fitted.predict([str(broken)])
    with pytest.raises(ValueError, match="got a single str; wrap it in a list"):
        fitted.predict(str(broken))


def test_labels_with_surrounding_spaces_are_trained_and_given_back_as_they_were(cells):
    """The network's class names are the labels as featx reads them from a CSV, stripped: "good " was trained as
    "good" and failed to be found after training; labels that only spaces tell apart, or empty ones, are refused
    before any training."""
    X, y = cells
    text = np.where(y == 9, "good ", " bad")
    fitted = FinetunedClassifier(config=FinetuneConfig(image_size=32, freeze_epochs=1, epochs=0, batch_size=8, val_size=0),
                                 workers=0).fit(X, text)
    assert list(fitted.classes_) == [" bad", "good "] and set(fitted.predict(X[:4])) <= {" bad", "good "}
    for labels in (np.where(y == 9, "good", "good "), np.where(y == 9, "good", " ")):
        with pytest.raises(ValueError, match="distinct and non-empty"):
            FinetunedClassifier(config=CONFIG, workers=0).fit(X, labels)


def test_a_failed_refit_leaves_the_fitted_estimator_as_it_was(fitted, cells, tmp_path):
    """fit set classes_ before training: a refit that failed left the new class names over the old network."""
    X, y = cells
    estimator = pickle.loads(pickle.dumps(fitted))
    broken = [tmp_path / f"broken{i}.png" for i in range(4)]
    for path in broken:
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(BadInputError, match="none is readable"):
        estimator.fit(broken, ["a", "b", "a", "b"])
    with pytest.raises(ValueError, match="distinct and non-empty"):
        estimator.fit(X, np.where(y == 9, "good", "good "))
    assert list(estimator.classes_) == [9, 10] and estimator.network_ == fitted.network_
    np.testing.assert_array_equal(estimator.predict(X[:4]), fitted.predict(X[:4]))


def test_file_names_that_are_not_utf8_train_and_failures_name_the_users_files(cells, tmp_path):
    """fit wrote X and y to a temporary UTF-8 CSV: a name os.listdir gives as 'caf\\udce9.png' raised
    UnicodeEncodeError, and errors named that CSV, a file the user never wrote."""
    import os

    X, y = cells
    copies = [os.fsdecode(bytes(tmp_path) + f"/caf\xe9{i}.png".encode("latin-1")) for i in range(len(X))]
    for source, copy in zip(X, copies):
        shutil.copy(source, copy)
    broken = os.fsdecode(bytes(tmp_path) + b"/caf\xe9-broken.png")
    with open(broken, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
    config = FinetuneConfig(image_size=32, freeze_epochs=1, epochs=0, batch_size=8, val_size=0)
    fitted = FinetunedClassifier(config=config, workers=0).fit([*copies, broken], [*y, 9])
    assert [path for path, _ in fitted.failures_] == [broken]
    assert set(fitted.predict(copies[:4])) <= {9, 10}


def test_an_unknown_tta_is_refused_not_taken_for_none(fitted, cells, tmp_path):
    """tta other than "d4" or "none" silently meant no test-time augmentation; the bundle path refused it."""
    from featx.errors import UnknownNameError

    X, y = cells
    with pytest.raises(UnknownNameError, match="unknown test-time augmentation \\(tta\\) 'D4'"):
        FinetunedClassifier(config=CONFIG, tta="D4", workers=0).fit(X, y)  # before any training
    with pytest.raises(UnknownNameError, match="'flip'"):
        pickle.loads(pickle.dumps(fitted)).set_params(tta="flip").predict(X[:2])
    network = load_finetuned(fitted.save_network(tmp_path / "n.safetensors"))
    for label, image in ((9, X[0]), (10, X[-1])):
        (tmp_path / "data" / str(label)).mkdir(parents=True)
        shutil.copy(image, tmp_path / "data" / str(label))
    for apply in (network.predict, network.evaluate):
        with pytest.raises(UnknownNameError, match="'flip'"):
            apply(tmp_path / "data", tta="flip", workers=0, progress=False)


def test_the_network_is_built_once_and_again_after_unpickling(fitted, cells, monkeypatch):
    """predict_proba built the network from the file's bytes on every call."""
    from featx.backbones._registry import Backbone

    X, _ = cells
    build, built = Backbone.build_model, []
    monkeypatch.setattr(Backbone, "build_model", lambda *args, **kwargs: built.append(1) or build(*args, **kwargs))
    estimator = pickle.loads(pickle.dumps(fitted))
    first = estimator.predict_proba(X[:4])
    np.testing.assert_array_equal(estimator.predict_proba(X[:4]), first)
    estimator.predict(X[4:6])
    assert len(built) == 1
    restored = pickle.loads(pickle.dumps(estimator))  # the built network is not pickled
    assert "_built" not in restored.__dict__ and "_built" in estimator.__dict__
    np.testing.assert_array_equal(restored.predict_proba(X[:4]), first)
    assert len(built) == 2

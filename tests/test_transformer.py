"""PretrainedFeatures as a scikit-learn transformer: API checks, inputs, caching, CV, pickling; datasets."""
from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
from conftest import assert_same_features
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks as checks

from featx.backbones._device import BatchRunner
from featx.datasets import ELPV_CLASSES, load_elpv, load_folder
from featx.errors import FeatureSpaceMismatchError
from featx.features._engines import OnnxRunner
from featx.features._extraction import extract
from featx.features._store import FeatureStore, load_features
from featx.features._transformer import PretrainedFeatures
from featx.images._inputs import display_path

FAST = {"model": "mobilenet_v3_small", "weights": "random"}  # 576-d, a few ms per image


@pytest.fixture(scope="module")
def arrays() -> list[np.ndarray]:
    """In-memory images of assorted sizes and modes (RGB, grey, RGBA)."""
    return [skimage.data.astronaut(), skimage.data.camera(), skimage.data.chelsea(), skimage.data.coins(), skimage.data.logo()]


@pytest.fixture(scope="module")
def elpv() -> tuple[np.ndarray, np.ndarray]:
    """24 ELPV cells: 12 functional (0) and 12 defective (1), interleaved."""
    data = load_elpv()
    good, bad = np.flatnonzero(data.target == 0)[:12], np.flatnonzero(data.target == 3)[:12]
    order = np.ravel(np.column_stack([good, bad]))
    return data.filenames[order], (data.target[order] == 3).astype(int)


@pytest.fixture
def passes(monkeypatch) -> list[int]:
    """Images that went through a network: sum(passes) after the test's calls."""
    counted: list[int] = []
    # whichever engine runs; every path of each goes through exactly one of these
    for runner, method in ((BatchRunner, "__call__"), (OnnxRunner, "submit")):
        original = getattr(runner, method)

        def counting(self, images, original=original):
            counted.append(len(images))
            return original(self, images)

        monkeypatch.setattr(runner, method, counting)
    return counted


# ---- scikit-learn API conventions -------------------------------------------------------------------


API_CHECKS = [
    checks.check_estimator_cloneable,
    checks.check_estimator_repr,
    checks.check_estimator_tags_renamed,
    checks.check_valid_tag_types,
    checks.check_no_attributes_set_in_init,
    checks.check_do_not_raise_errors_in_init_or_set_params,
    checks.check_mixin_order,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_estimators_unfitted,
    checks.check_transformers_unfitted,
    checks.check_get_feature_names_out_error,
    checks.check_fit1d,
    checks.check_parameters_default_constructible,
]


@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(check):
    check("PretrainedFeatures", PretrainedFeatures(**FAST, cache=False))


def test_check_estimator_skips_numeric_checks_honestly():
    """Tags say: not a numeric 2-D input; sklearn's generic suite therefore does not apply."""
    tags = PretrainedFeatures().__sklearn_tags__()
    assert not tags.input_tags.two_d_array and tags.input_tags.one_d_array and tags.input_tags.string
    assert tags.transformer_tags.preserves_dtype == []
    with pytest.warns(checks.SkipTestWarning):
        checks.check_estimator(PretrainedFeatures(**FAST, cache=False))


def test_init_only_stores_parameters_and_fit_validates():
    est = PretrainedFeatures("no_such_model", pooling="median", batch_size=0)  # no error until fit
    assert est.get_params()["model"] == "no_such_model"
    for bad in ({"model": "no_such_model"}, {"pooling": "median"}, {"batch_size": 0}, {"cache": 3}, {"layer": "nope"}):
        (name, value), = bad.items()
        with pytest.raises(ValueError, match=rf"{name.replace('_', '.')}.*{value}|{value}.*{name.replace('_', '.')}"):
            PretrainedFeatures(**{**FAST, **bad}).fit(["x.png"])


def test_fit_returns_self_keeps_params_and_adds_only_trailing_underscore_attributes(arrays, tmp_path):
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5")
    before = dict(vars(est))
    assert est.fit(arrays) is est
    assert est.get_params() == PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").get_params()
    added = set(vars(est)) - set(before)
    assert added and all(a.endswith("_") or a.startswith("_") for a in added)
    assert est.get_feature_names_out().tolist() == [f"features_{i}" for i in range(576)]  # the default layer


def test_clone_is_unfitted_with_the_same_params(arrays, tmp_path):
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").fit(arrays[:2])
    est.transform(arrays[:2])
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "feature_space_") and not hasattr(copy, "_extractor")
    with pytest.raises(NotFittedError):
        copy.transform(arrays[:2])


# ---- inputs and outputs -----------------------------------------------------------------------------


def test_every_input_kind_gives_the_same_features(elpv, tmp_path):
    paths = list(elpv[0][:4])
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").fit(paths)
    reference = est.transform(paths)
    assert reference.shape == (4, 576) and reference.dtype == np.float32
    pil = [Image.open(p) for p in paths]
    grey = [np.asarray(Image.open(p)) for p in paths]  # H x W uint8
    rgb = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    for X in (np.array(paths), pd.Series(paths), pd.DataFrame({"image": paths}), [Path(p) for p in paths], pil, grey, rgb, np.stack(rgb)):
        assert_same_features(est.transform(X), reference)
    mixed = est.transform([paths[0], pil[1], grey[2], rgb[3]])
    assert_same_features(mixed, reference)


def test_an_opened_photo_is_upright_as_its_path_is(tmp_path):
    """A PIL image from Image.open keeps its EXIF orientation unapplied; the transformer turns it upright as it
    reads the file's path, so both give one feature vector."""
    from skimage import data

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(data.astronaut()[:, 64:]).save(path, exif=exif.tobytes(), quality=95)
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").fit([path])
    from_path = est.transform([path])
    assert_same_features(est.transform([Image.open(path)]), from_path)
    sideways = np.asarray(Image.open(path).convert("RGB"))  # an array has no orientation: taken as it is
    assert np.abs(est.transform([sideways]) - from_path).max() > 0.05 * np.abs(from_path).max()


def test_order_and_subset_invariance(arrays, tmp_path):
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").fit(arrays)
    full = est.transform(arrays)
    np.testing.assert_array_equal(est.transform(arrays[::-1]), full[::-1])
    np.testing.assert_array_equal(est.transform(arrays[1:3]), full[1:3])


def test_set_output_pandas_keeps_the_index(arrays, tmp_path):
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").set_output(transform="pandas")
    X = pd.Series(arrays[:3], index=["a", "b", "c"], dtype=object)
    frame = est.fit_transform(X)
    assert isinstance(frame, pd.DataFrame) and frame.shape == (3, 576)
    assert list(frame.index) == ["a", "b", "c"]
    assert list(frame.columns) == list(est.get_feature_names_out())


def test_another_layer_and_pooling(arrays, tmp_path):
    est = PretrainedFeatures(**FAST, layer="features.3,features.12", pooling="gem", cache=tmp_path / "s.h5")
    features = est.fit_transform(arrays[:2])
    assert features.shape == (2, 24 + 576) and est.layer_widths_ == {"features.3": 24, "features.12": 576}
    names = est.get_feature_names_out()
    assert names[0] == "features.3_0" and names[23] == "features.3_23" and names[24] == "features.12_0"
    assert len(names) == 600


@pytest.mark.parametrize(
    "X, message",
    [
        ("image.png", "single str"),
        (np.zeros((3, 4)), "shape"),
        ([], "0 images"),
        ([1.5, 2.5], "not an image"),
        ([np.zeros((8, 8), dtype=np.float64)], "uint8"),
        ([np.zeros((8, 8, 2), dtype=np.uint8)], "X\\[0\\]"),
    ],
)
def test_bad_inputs_raise_value_errors(X, message, tmp_path):
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").fit([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match=message):
        est.transform(X)


def test_a_failed_file_raises_naming_it(elpv, tmp_path):
    broken, folder = tmp_path / "broken.png", tmp_path / "folder"
    broken.write_bytes(b"not an image")
    folder.mkdir()
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").fit([str(broken)])
    for bad in (broken, tmp_path / "missing.png", folder):
        with pytest.raises(ValueError, match=rf"^1 image\(s\) could not be used.*{bad.name}"):  # a folder said once
            est.transform([elpv[0][0], str(bad)])


def test_a_float16_store_named_as_the_cache_grows_in_float16(elpv, tmp_path):
    """A store of `featx extract --float16` serves the images it holds and takes new ones in its own dtype."""
    store = tmp_path / "half.h5"
    extract(list(elpv[0][:4]), store=store, dtype="float16", progress=False, **FAST)
    est = PretrainedFeatures(**FAST, cache=store).fit(elpv[0][:6])
    features = est.transform(elpv[0][:6])
    with FeatureStore.open(store) as opened:
        assert opened.dtype == "float16" and opened.count("rows") == 6
        stored, found = opened.features_for([display_path(path) for path in elpv[0][:6]])
    assert found.all()
    np.testing.assert_array_equal(features, stored.astype(np.float32))


# ---- the shared, content-keyed store ----------------------------------------------------------------


def test_features_are_computed_once_per_content(arrays, passes, tmp_path):
    est = PretrainedFeatures(**FAST, cache=tmp_path / "s.h5")
    first = est.fit_transform(arrays + arrays[:2])  # duplicates in one call: computed once
    assert sum(passes) == len(arrays)
    np.testing.assert_array_equal(PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").fit_transform(arrays), first[:5])
    assert sum(passes) == len(arrays)  # a new instance reads the store
    PretrainedFeatures(**FAST, cache=False).fit_transform(arrays)
    PretrainedFeatures(**FAST, cache=False).fit_transform(arrays)
    assert sum(passes) == 3 * len(arrays)  # no cache: computed every time


def test_default_cache_is_the_extract_store(elpv, passes, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    paths = list(elpv[0][:6])
    report = extract(paths, FAST["model"], weights="random", progress=False, workers=0)
    assert sum(passes) == 6 and report.store.parent == tmp_path / "cache"
    features = PretrainedFeatures(**FAST).fit_transform(paths)
    assert sum(passes) == 6  # everything came from the store featx extract wrote
    stored = load_features(report.store)
    order = [list(stored.paths).index(display_path(p)) for p in paths]
    np.testing.assert_array_equal(features, stored.features[order])


def test_a_store_of_another_feature_space_is_refused(arrays, tmp_path):
    PretrainedFeatures(**FAST, cache=tmp_path / "s.h5").fit_transform(arrays[:1])
    with pytest.raises(FeatureSpaceMismatchError):
        PretrainedFeatures(**FAST, pooling="max", cache=tmp_path / "s.h5").fit_transform(arrays[:1])


def test_cross_validation_and_grid_search_compute_each_image_once(elpv, passes, tmp_path):
    X, y = elpv
    pipe = make_pipeline(PretrainedFeatures(**FAST, cache=tmp_path / "s.h5"), LogisticRegression(max_iter=500))
    cross_val_score(pipe, X, y, cv=3)
    assert sum(passes) == len(X)
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=3).fit(X, y)
    assert sum(passes) == len(X)  # 9 more fits + refit, all from the store


def test_grid_search_over_the_model_uses_one_store_per_feature_space(elpv, passes, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    X, y = elpv
    pipe = make_pipeline(PretrainedFeatures(weights="random"), LogisticRegression())
    grid = {"pretrainedfeatures__model": ["mobilenet_v3_small", "resnet18"], "logisticregression__C": [0.1, 1.0]}
    search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert sum(passes) == 2 * len(X)  # 12 fits + refit, each image once per backbone
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 2
    assert search.best_params_["pretrainedfeatures__model"] in grid["pretrainedfeatures__model"]


@pytest.mark.slow
def test_parallel_grid_search_shares_the_store(elpv, tmp_path):
    """Worker processes wait for each other's writes: every content ends up in the store exactly once."""
    X, y = elpv
    pipe = make_pipeline(PretrainedFeatures(**FAST, cache=tmp_path / "s.h5"), LogisticRegression(max_iter=500))
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3, n_jobs=2).fit(X, y)
    with FeatureStore.open(tmp_path / "s.h5") as store:
        assert sorted(store.keys()) == sorted(set(store.keys())) and len(store.keys()) == len(X)


# ---- learning and persistence -----------------------------------------------------------------------


def test_pipeline_with_pretrained_features_learns_elpv(elpv, tmp_path):
    X, y = elpv
    pipe = make_pipeline(PretrainedFeatures(cache=tmp_path / "s.h5"), LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.6  # real ImageNet features separate defective cells from functional ones


def test_pickled_fitted_pipeline_predicts_in_a_fresh_process(elpv, tmp_path):
    X, y = elpv
    pipe = make_pipeline(PretrainedFeatures(**FAST, cache=tmp_path / "s.h5"), LogisticRegression(max_iter=500)).fit(X, y)
    expected = pipe.predict(X)
    data = pickle.dumps(pipe)
    assert pipe[0]._extractor._runner is not None  # the network of this process, built once...
    assert pickle.loads(data)[0]._extractor._runner is None  # ...is never pickled
    assert len(data) < 100_000  # parameters and a linear model, never the network
    (tmp_path / "pipe.pkl").write_bytes(data)
    np.save(tmp_path / "X.npy", X)
    script = textwrap.dedent(
        f"""
        import pickle, numpy as np
        from featx.backbones._device import BatchRunner
        from featx.features._engines import OnnxRunner
        passes = []
        # every forward pass of either engine goes through exactly one of these (as the `passes` fixture)
        for runner, method in ((BatchRunner, "__call__"), (OnnxRunner, "submit")):
            original = getattr(runner, method)
            setattr(runner, method, lambda self, images, original=original: passes.append(len(images)) or original(self, images))
        pipe = pickle.load(open({str(tmp_path / "pipe.pkl")!r}, "rb"))
        predicted = pipe.predict(np.load({str(tmp_path / "X.npy")!r}, allow_pickle=True))
        print(" ".join(map(str, predicted)), sum(passes))
        """
    )

    def fresh_process() -> list[str]:
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()

    out = fresh_process()
    assert out[:-1] == [str(v) for v in expected] and out[-1] == "0"  # same answers, all from the store
    (tmp_path / "s.h5").unlink()
    out = fresh_process()
    assert out[:-1] == [str(v) for v in expected] and out[-1] == str(len(set(X)))  # the counter sees recomputation


# ---- datasets ---------------------------------------------------------------------------------------


def test_load_folder_is_like_load_files(tmp_path, arrays):
    for name, image in (("cats", arrays[2]), ("people", arrays[0])):
        (tmp_path / name).mkdir()
        Image.fromarray(image).save(tmp_path / name / f"{name}.png")
    data = load_folder(tmp_path)
    assert data.target_names == ["cats", "people"] and data.target.tolist() == [0, 1]
    assert [Path(f).name for f in data.filenames] == ["cats.png", "people.png"]


def test_load_elpv():
    data = load_elpv()
    assert len(data.filenames) == len(data.target) == 2624 and data.target_names == list(ELPV_CLASSES)
    assert set(data.target.tolist()) == {0, 1, 2, 3} and Path(data.filenames[0]).is_file()


def test_fit_refuses_an_image_size_the_default_layer_cannot_take_and_a_layer_that_is_no_name():
    """fit took vgg16 at 16 px (its default layer was sized from the registry, unchecked) and transform refused
    it; layer=[1] raised AttributeError."""
    from featx.errors import ParameterError
    from featx.features._transformer import PretrainedFeatures

    paths = list(load_elpv().filenames[:2])
    with pytest.raises(ParameterError, match=r"^vgg16 cannot take 16 x 16 images .*: choose another --image-size$"):
        PretrainedFeatures("vgg16", weights="random", image_size=16).fit(paths)
    with pytest.raises(ParameterError, match=r"^layer must be None or node name\(s\): 'a,b' or \['a', 'b'\], got \[1\]$"):
        PretrainedFeatures(weights="random", layer=[1]).fit(paths)


def test_a_vision_transformer_is_refused_in_one_line_before_any_weights_are_read():
    """Its forward_features gives N x T x D tokens: the run failed at the first batch with a traceback."""
    from featx.errors import ParameterError
    from featx.features._transformer import PretrainedFeatures

    with pytest.raises(ParameterError, match=r"^timm/vit_tiny_patch16_224 gives \(1, 197, 192\) token sequences at "
                                             r"features, not feature maps: featx pools CNN feature maps"):
        PretrainedFeatures("timm/vit_tiny_patch16_224", weights="random").fit(list(load_elpv().filenames[:2]))

"""Input size, test-time augmentation over the 8 symmetries of the square, and the symmetries helper."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from featx.cli import main
from sklearn.base import clone

import featx
from featx.backbones._registry import get_backbone
from featx.classify._bundle import ModelBundle
from featx.datasets import load_elpv
from featx.errors import ParameterError, UnknownNameError
from featx.features._network import build_feature_network
from featx.features._space import FeatureSpace
from featx.features._store import FeatureStore
from featx.features._transformer import PretrainedFeatures
from featx.names import DEFAULT_MODEL

SMALL = {"image_size": 64, "engine": "torch", "batch_size": 8}  # the default backbone, real weights, tiny inputs


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    """Scikit-image's Chelsea, cropped square and shrunk to 64 px (SMALL's size: no resampling, which is not
    exactly rotation-equivariant); its rotations and mirror images all differ."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.chelsea()[:, 60:360]).resize((64, 64), Image.Resampling.BILINEAR))


def test_symmetries_are_the_8_distinct_views_of_the_square(cat):
    views = featx.symmetries(cat)
    assert len(views) == 8 and np.array_equal(views[0], cat)
    assert all(v.dtype == np.uint8 and v.shape == cat.shape for v in views)
    assert len({v.tobytes() for v in views}) == 8
    assert np.array_equal(views[1], np.rot90(cat)) and np.array_equal(views[4], cat[:, ::-1])
    grey = featx.symmetries(np.asarray(cat[:40, :60, 0]))  # grey, not square: rotations swap H and W
    assert [v.shape for v in grey[:2]] == [(40, 60, 3), (60, 40, 3)]
    assert all(len({v.tobytes() for v in featx.symmetries(view)}) == 8 for view in views[:2])


def test_d4_features_are_invariant_to_rotations_and_mirrors_and_average_the_views(cat, tmp_path):
    views = featx.symmetries(cat)
    d4 = PretrainedFeatures(tta="d4", cache=tmp_path / "d4.h5", **SMALL).fit(views)
    plain = PretrainedFeatures(cache=tmp_path / "plain.h5", **SMALL).fit(views)
    with_tta, without = d4.transform(views), plain.transform(views)
    scale = float(np.abs(with_tta).max())
    np.testing.assert_allclose(with_tta, np.broadcast_to(with_tta[0], with_tta.shape), atol=1e-4 * scale)
    assert np.abs(without - without[0]).max() > 0.05 * scale  # without tta the network sees other images
    np.testing.assert_allclose(with_tta[0], without.mean(0), atol=1e-4 * scale)  # tta = mean over the views


def test_onnx_and_torch_agree_with_tta_and_image_size(cat, tmp_path):
    pytest.importorskip("onnxruntime")
    views = featx.symmetries(cat)[:3]
    common = {**SMALL, "tta": "d4", "image_size": 48}
    onnx = PretrainedFeatures(**{**common, "engine": "onnx"}, cache=tmp_path / "onnx.h5").fit(views).transform(views)
    torch_ = PretrainedFeatures(**common, cache=tmp_path / "torch.h5").fit(views).transform(views)
    np.testing.assert_allclose(onnx, torch_, rtol=1e-3, atol=1e-4 * float(np.abs(torch_).max()))


def test_image_size_sets_the_crop_and_the_store(tmp_path):
    backbone = get_backbone(DEFAULT_MODEL)
    default = backbone.preprocessing()
    native = default.at_size(300)
    assert (native.resize, native.crop, native.mean) == (300, 300, default.mean) and default.at_size(None) == default
    weights = backbone.weights()
    spaces = [FeatureSpace.of(backbone, weights, None, "avg", size) for size in (None, 300, 384)]
    assert spaces[0] == FeatureSpace.of(backbone, weights, None, "avg")
    # stores made before keep their space: the default size records the weights' own preprocessing, no more
    assert set(spaces[0].as_dict()) == {"model", "weights", "preprocessing", "layer", "pooling"}
    assert spaces[0].as_dict()["preprocessing"] == default.as_dict()
    assert (spaces[1].as_dict()["preprocessing"]["resize"], spaces[1].as_dict()["preprocessing"]["crop"]) == (300, 300)
    assert len({s.store_path() for s in spaces}) == 3
    assert [s.image_size for s in spaces] == [None, 300, 384]
    # a 300 x 300 ELPV cell at its native size reaches the network untouched
    cell = load_elpv().filenames[:1]
    report = featx.extract(list(cell), image_size=300, engine="torch", workers=0, progress=False, store=tmp_path / "s.h5")
    with FeatureStore.open(report.store) as store:
        assert store.space.crop == 300
    from PIL import Image

    pixels = torch.from_numpy(np.array(Image.open(cell[0]).convert("RGB"))).permute(2, 0, 1)[None]
    with torch.inference_mode():
        expected = build_feature_network(backbone, weights)(pixels).numpy()
    np.testing.assert_allclose(featx.load_features(report.store).features, expected, rtol=1e-4, atol=1e-5)


def test_transformer_params_clone_and_set_like_any_other(cat, tmp_path):
    t = PretrainedFeatures(image_size=64, tta="d4")
    assert t.get_params()["image_size"] == 64 and t.get_params()["tta"] == "d4"
    copy = clone(t)
    assert (copy.image_size, copy.tta) == (64, "d4") and not hasattr(copy, "feature_space_")
    t.set_params(image_size=96, tta="none", engine="torch", cache=tmp_path / "s.h5").fit([cat])
    assert t.feature_space_["preprocessing"]["crop"] == 96 and "tta" not in t.feature_space_
    assert t.transform([cat]).shape == (1, 1280)
    layered = PretrainedFeatures(layer="blocks.5,blocks.6", tta="d4", **SMALL, cache=tmp_path / "l.h5").fit([cat])
    assert layered.feature_space_["tta"] == "d4" and layered.transform([cat]).shape == (1, 192 + 320)


@pytest.mark.parametrize("params, message", [
    ({"tta": "flips"}, "unknown test-time augmentation \\(tta\\) 'flips'; valid names: none, d4"),
    ({"image_size": 0}, "image_size must be None or an integer from 1 to 4096, got 0"),
    ({"image_size": "300"}, "image_size must be None or an integer from 1 to 4096, got '300'"),
    ({"image_size": True}, "image_size must be None or an integer from 1 to 4096, got True"),
    ({"image_size": 4097}, "image_size must be None or an integer from 1 to 4096, got 4097"),  # what a file may state
])
def test_bad_values_are_clear_value_errors(params, message, cat):
    with pytest.raises(ValueError, match=message):
        PretrainedFeatures(**params).fit([cat])


def test_bad_tta_in_extract_and_the_network_is_named(elpv_folder, tmp_path):
    backbone = get_backbone("mobilenet_v3_small")
    with pytest.raises(UnknownNameError, match=r"test-time augmentation \(tta\) 'rot90'"):
        build_feature_network(backbone, backbone.weights("random"), tta="rot90")
    with pytest.raises(ParameterError, match="image_size must be .*, got -1"):
        featx.extract(elpv_folder, image_size=-1, store=tmp_path / "s.h5", progress=False)


def test_cli_image_size_and_tta(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    args = ["extract", str(elpv_folder), "--store", str(store), "--engine", "torch", "-w", "0", "-q", "-b", "8"]
    result = CliRunner().invoke(main, [*args, "--image-size", "48", "--tta", "d4"])
    assert result.exit_code == 0, result.output
    assert "20 extracted" in result.output
    with FeatureStore.open(store) as opened:
        assert opened.space.tta == "d4" and opened.space.preprocessing.resize == 48
    other = CliRunner().invoke(main, [*args, "--image-size", "64"])  # another feature space: refused
    assert other.exit_code == 1 and "feature space" in other.output
    said = other.stderr.strip().splitlines()[-1]  # what differs, not the two whole preprocessing dicts
    assert "preprocessing.crop: store has 48, run asks 64" in said and "mean" not in said and "tta: store has 'd4'" in said, said
    for bad in (["--tta", "flips"], ["--image-size", "0"]):
        result = CliRunner().invoke(main, [*args, *bad])
        assert result.exit_code == 2 and bad[1] in result.output


def test_a_model_bundle_reextracts_in_its_own_size_and_tta():
    backbone = get_backbone(DEFAULT_MODEL)
    space = FeatureSpace.of(backbone, backbone.weights(), None, "gem", 300, "d4")
    extractor = ModelBundle(pipeline=None, classes=["a", "b"], space=space, dtype="float32").extractor()
    assert extractor.space == space and (space.image_size, space.tta, space.pooling) == (300, "d4", "gem")
    assert type(extractor.weights) is type(backbone.weights()) and extractor.weights.id == backbone.weights().id
    plain = ModelBundle(None, ["a"], FeatureSpace.of(backbone, backbone.weights(), None, "avg"), "float32")
    assert plain.extractor().space.as_dict() == plain.space.as_dict() and plain.space.image_size is None

"""The feature space and the one extraction path: what builds a network, when, and how parameters are checked."""
import numpy as np
import pytest
import torch
from PIL import Image

import featx
from featx import PretrainedFeatures
from featx.backbones._registry import get_backbone
from featx.backbones._weights import FileWeights, TorchvisionWeights
from featx.errors import FeatxError, UnknownNameError
from featx.features._space import FeatureSpace

SMALL = dict(model="mobilenet_v3_small", workers=0, progress=False, engine="torch")


def test_optional_settings_are_recorded_only_when_used():
    backbone = get_backbone("mobilenet_v3_small")
    plain = FeatureSpace.of(backbone, backbone.weights("random"))
    assert set(plain.as_dict()) == {"model", "weights", "preprocessing", "layer", "pooling"}
    assert plain.as_dict()["layer"] == ["default:features"] and plain.layer_names is None
    d4 = FeatureSpace.of(backbone, backbone.weights("random"), "features.3", "gem", 64, "d4")
    assert d4.as_dict()["tta"] == "d4" and d4.layer_names == ["features.3"] and d4.image_size == 64
    assert FeatureSpace.from_json(d4.to_json()) == d4 and d4.store_path() != plain.store_path()
    with pytest.raises(FeatxError, match="not a featx feature space"):
        FeatureSpace.from_dict({"model": "x"})


def test_torchvision_weights_load_from_the_hub_cache(elpv_folder, tmp_path, monkeypatch):
    """A real state dict saved under the hub's file name in TORCH_HOME is what the default weights load."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    backbone = get_backbone("mobilenet_v3_small")
    source = backbone.default_weights()
    assert isinstance(source, TorchvisionWeights) and not source.available()
    torch.manual_seed(123)  # not the registry's build seed: these weights differ from "random"
    state = backbone.build().state_dict()
    source.expected_file().parent.mkdir(parents=True)
    torch.save(state, source.expected_file())
    torch.save(state, tmp_path / "same.pth")
    assert source.available()
    cached = featx.extract(elpv_folder, store=tmp_path / "hub.h5", **SMALL)
    from_file = featx.extract(elpv_folder, store=tmp_path / "file.h5", weights=tmp_path / "same.pth", **SMALL)
    random = featx.extract(elpv_folder, store=tmp_path / "random.h5", weights="random", **SMALL)
    a, b, c = (featx.load_features(r.store).features for r in (cached, from_file, random))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with featx.FeatureStore.open(cached.store) as store:
        assert store.space.weights == "torchvision:MobileNet_V3_Small_Weights.IMAGENET1K_V1"


def test_a_new_store_is_checked_without_reading_weights(elpv_folder, tmp_path, monkeypatch):
    def refuse(self, model):
        raise AssertionError("weights read")

    monkeypatch.setattr(FileWeights, "load_into", refuse)
    with pytest.raises(UnknownNameError, match="layer of efficientnet_lite0"):
        featx.extract(elpv_folder, layer="blocks.99", store=tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()


def test_the_transformer_builds_its_network_once_per_process(elpv_folder, monkeypatch, tmp_path):
    import featx.features._engines

    built = []
    original = featx.features._engines.build_runner
    monkeypatch.setattr(featx.features._engines, "build_runner", lambda *a: built.append(a) or original(*a))
    files = sorted(str(p) for p in elpv_folder.rglob("*.png"))
    t = PretrainedFeatures("mobilenet_v3_small", weights="random", engine="torch", cache=tmp_path / "s.h5").fit(files)
    assert not built  # fit reads shapes only
    first = t.transform(files[:3])
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[3:5]]
    t.transform(arrays)  # in-memory images: the same run, the same network
    t.transform(files[5:8])
    assert len(built) == 1
    np.testing.assert_array_equal(t.transform(files[:3]), first)


def test_timm_backbones_are_described_once_without_weights(monkeypatch):
    import timm

    from featx.backbones import _registry as backbones

    backbones._timm_backbone.cache_clear()
    calls = []
    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(torch.empty(0).device) or original(*a, **k))
    first = get_backbone("timm/resnet18")
    assert get_backbone("timm/resnet18") is first and first.feature_dim == 512
    assert calls == [torch.device("meta")]  # built once, on the meta device: nothing allocated, nothing read


@pytest.mark.parametrize("params", [{"engine": "tensorrt"}, {"device": "tpu"}, {"pooling": "median"}, {"batch_size": 0}])
def test_transformer_parameters_are_checked_at_fit_as_value_errors(params, tmp_path):
    (name, value), = params.items()
    with pytest.raises(ValueError, match=rf"{name.replace('_', '.')}.*{value}|{value}.*{name.replace('_', '.')}"):
        PretrainedFeatures("mobilenet_v3_small", weights="random", **params).fit(["x.png"])


def test_extract_parameter_errors_are_value_errors(elpv_folder, tmp_path):
    for params in ({"dtype": "float8"}, {"engine": "tensorrt"}, {"device": "tpu"}, {"batch_size": 0}):
        (name, value), = params.items()
        with pytest.raises(ValueError, match=rf"{name.replace('_', '.')}.*{value}|{value}.*{name.replace('_', '.')}"):
            featx.extract(elpv_folder, store=tmp_path / "s.h5", **{**SMALL, "weights": "random", **params})

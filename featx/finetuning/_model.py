"""The network being fine-tuned (`Trainee`: a backbone's whole classifier on a device, with its head, the
layers kept frozen and the parameter groups of the two phases) and its loss."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from featx.backbones._device import autocast
from featx.backbones._preprocessing import Preprocessing, normalisation
from featx.errors import ParameterError, UnknownNameError
from featx.features._network import d4_views, layer_names
from featx.finetuning._config import AUTO, NONE, FinetuneConfig

BODY_GROUPS = 3  # the body's parameters, in network order, split in this many learning-rate groups


class Trainee:
    """A backbone's whole classifier on a device: input normalisation, class probabilities and, for training,
    its head and the parameter groups of the two phases."""

    def __init__(self, model: nn.Module, head: nn.Module | None, pre: Preprocessing, device: torch.device,
                 freeze_until: str | None = None, name: str = "the model") -> None:
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.head = head
        self.frozen_until = _frozen_until(self.model, freeze_until, pre.crop, device)
        self.fixed = _layers_until(self.model, self.frozen_until, name) if self.frozen_until else []
        if head is not None and any(module is head for module in self.fixed):
            raise ParameterError(f"freeze_until {freeze_until!r} reaches the head: nothing would be fine-tuned")
        self.device = device
        self.scale, self.shift = (t.to(device) for t in normalisation(pre.mean, pre.std))

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float() * self.scale - self.shift
        return x.contiguous(memory_format=torch.channels_last)

    def _fixed_parameters(self) -> set[int]:
        return {id(p) for module in self.fixed for p in module.parameters(recurse=False)}

    def phase(self, frozen: bool) -> None:
        """Frozen: only the head learns and BatchNorm layers keep their statistics (eval mode). Either way the
        layers up to `freeze_until` stay as they are; autograd then skips their backward pass altogether."""
        head, fixed = {id(p) for p in self.head.parameters()}, self._fixed_parameters()
        for p in self.model.parameters():
            p.requires_grad_(id(p) in head if frozen else id(p) not in fixed)
        self.model.train()
        for module in self.model.modules() if frozen else self.fixed:
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def optimizer(self, frozen: bool, config: FinetuneConfig) -> torch.optim.AdamW:
        """AdamW; the head at `lr`, the body in BODY_GROUPS groups from body_lr / lr_ratio up to body_lr."""
        head = list(self.head.parameters())
        groups = [{"params": head, "lr": config.lr, "peak": config.lr}]
        if not frozen:
            ids = {id(p) for p in head} | self._fixed_parameters()
            body = [p for p in self.model.parameters() if id(p) not in ids]
            bounds = np.linspace(0, len(body), BODY_GROUPS + 1).round().astype(int)
            for g in range(BODY_GROUPS):
                peak = config.body_lr / config.lr_ratio ** ((BODY_GROUPS - 1 - g) / max(BODY_GROUPS - 1, 1))
                groups.insert(g, {"params": body[bounds[g] : bounds[g + 1]], "lr": peak, "peak": peak})
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)

    def scores(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class probabilities of a uint8 batch (eval mode); tta 'd4': averaged over the 8 symmetries."""
        x = self.inputs(images)
        with torch.no_grad(), autocast(self.device):
            if tta == "d4":
                return self.model(d4_views(x)).float().softmax(1).unflatten(0, (8, -1)).mean(0)
            return self.model(x).float().softmax(1)

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the model's state dict on the CPU."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}


# The stride below which `auto` keeps layers pretrained. Why: no backward pass runs through the high-resolution
# early layers (Lite0 at 224 px on 2 CPU cores: 55-63 s per epoch, about 100 s with every layer trained), whose
# generic edges and textures ImageNet taught well; this is the recipe of the best ELPV rows (docs/benchmarks.md).
EARLY_STRIDE = 4


def _frozen_until(model: nn.Module, freeze_until: str | None, size: int, device: torch.device) -> str | None:
    """The layer `freeze_until` names: None for none; for auto, the last stage (a module at most one level
    below the top) whose output is at 1/EARLY_STRIDE of the input's resolution or finer, found by one forward
    pass at `size`; None for a network without such outputs (a vision transformer)."""
    if freeze_until is None or freeze_until.lower() == NONE:  # the help's "none (or None)"
        return None
    if freeze_until != AUTO:
        return freeze_until
    widths: dict[str, int] = {}  # module -> its output's width, in the order the modules finish

    def record(name: str) -> Callable:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                widths[name] = output.shape[-1]
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n and n.count(".") <= 1]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last))
    finally:
        for hook in hooks:
            hook.remove()
    early = [name for name, width in widths.items() if width * EARLY_STRIDE >= size]
    return early[-1] if early else None


def _layers_until(model: nn.Module, name: str, model_name: str) -> list[nn.Module]:
    """The modules registered up to and including `name` and its submodules (network order in timm and
    torchvision models); an unknown name is the error `featx extract --layer` gives."""
    modules = list(model.named_modules())[1:]
    inside = [i for i, (module_name, _) in enumerate(modules) if module_name == name or module_name.startswith(name + ".")]
    if not inside:
        raise UnknownNameError(f"layer of {model_name}", name, layer_names(model))
    return [module for _, module in modules[: inside[-1] + 1]]


class Loss(nn.Module):
    """Cross-entropy with optional label smoothing and class weights, against the labels or, for ordered
    grades, against soft ordinal targets: row y of `targets`, SORD's softmax(-(rank k - rank y)^2) over the
    classes k (Diaz & Marathe, CVPR 2019), so a near miss costs less than a far one. Written here because it
    is one line over torch's cross-entropy, which takes such probability targets."""

    def __init__(self, weight: torch.Tensor | None, smoothing: float, targets: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("targets", targets)
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = y if self.targets is None else self.targets[y]
        return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.smoothing)

    @classmethod
    def of(cls, config: FinetuneConfig, train_labels: np.ndarray, classes: Sequence[str]) -> Loss:
        """The training loss; class weights for "balanced": n / (k * count of the class)."""
        n_classes, weight, targets = len(classes), None, None
        if config.class_weight == "balanced":
            counts = np.bincount(train_labels, minlength=n_classes).astype(np.float64)
            weight = torch.tensor(len(train_labels) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
        if config.ordinal:
            rank = torch.tensor(ordinal_ranks(config.ordinal, classes), dtype=torch.float32)
            targets = (-(rank[None, :] - rank[:, None]) ** 2).softmax(1)
        return cls(weight, config.label_smoothing, targets)


def ordinal_ranks(ordinal: str, classes: Sequence[str]) -> np.ndarray:
    """Each class's grade in `ordinal` (class names, comma-separated, low to high), which must name all of them."""
    order = [name.strip() for name in ordinal.split(",")]
    if sorted(order) != sorted(classes):
        raise ParameterError(f"ordinal must name each class of DATA once, in order; DATA has {', '.join(classes)}, "
                             f"ordinal has {', '.join(order)}")
    return np.array([order.index(name) for name in classes])

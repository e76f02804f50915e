"""Where a backbone's weights come from. Nothing here downloads: missing weights raise a clear error."""
from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from .errors import WeightsUnavailableError


class WeightsSource(ABC):
    """A source of weights for one architecture; `id` names it in a store's feature space."""

    id: str

    @abstractmethod
    def available(self) -> bool:
        """True when the weights can be loaded right now, offline."""

    @abstractmethod
    def location(self) -> str:
        """Where the weights are (or are expected), for listings and error messages."""

    @abstractmethod
    def load_into(self, model: nn.Module) -> None:
        """Load the weights into `model`, or raise WeightsUnavailableError."""

    def check_available(self) -> None:
        """Raise WeightsUnavailableError, saying where they were expected, unless the weights can be loaded."""
        if not self.available():
            raise WeightsUnavailableError(f"weights {self.id} are not on this machine: expected at {self.location()}")

    def fine_tuned_from(self) -> tuple[str | None, list[str] | None]:
        """(base model name, class names) of weights made by `featx finetune`; (None, None) for others."""
        return None, None


class RandomWeights(WeightsSource):
    """The architecture's own random initialisation (the registry seeds it, so every process agrees)."""

    id = "random"

    def available(self) -> bool:
        return True

    def location(self) -> str:
        return "random initialisation"

    def load_into(self, model: nn.Module) -> None:
        pass


FINETUNED_FORMAT = "featx-finetuned/1"  # the "featx" metadata entry of a safetensors file written by featx finetune


def is_safetensors(path: str | os.PathLike) -> bool:
    """True for a safetensors file: an 8-byte little-endian header length, then a JSON header."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20)


def safetensors_metadata(path: str | os.PathLike) -> dict:
    """The "featx" JSON metadata of a safetensors file ({} when absent); a FeatxError if it cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata["featx"]) if "featx" in metadata else {}
    except Exception as exc:
        raise WeightsUnavailableError(f"cannot read weights file {path}: {exc}") from exc


class FileWeights(WeightsSource):
    """A local state-dict file (`--weights FILE`): safetensors, or a torch file read without pickle."""

    def __init__(self, path: str | os.PathLike, label: str | None = None) -> None:
        self.path = Path(path)
        self._label = label

    @property
    def id(self) -> str:  # type: ignore[override]
        if self._label:
            return self._label
        if not self.path.is_file():
            raise WeightsUnavailableError(f"weights file not found: {self.path}")
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"file:sha256:{digest.hexdigest()[:16]}"

    def available(self) -> bool:
        return self.path.is_file()

    def location(self) -> str:
        return str(self.path)

    def load_into(self, model: nn.Module) -> None:
        if not self.path.is_file():
            raise WeightsUnavailableError(f"weights file not found: {self.path}")
        try:
            if is_safetensors(self.path):
                from safetensors.torch import load_file

                state = load_file(self.path)
            else:
                state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip, safetensors and torch errors all mean the same to the user
            raise WeightsUnavailableError(f"cannot read weights file {self.path}: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        load_state_dict(model, state, source=str(self.path))

    def fine_tuned_from(self) -> tuple[str | None, list[str] | None]:
        if not is_safetensors(self.path):
            return None, None
        meta = safetensors_metadata(self.path)
        if meta.get("format") != FINETUNED_FORMAT:
            return None, None
        return meta["model"], list(meta["classes"])


class TorchvisionWeights(WeightsSource):
    """A torchvision weights enum member, read from the torch hub cache as torchvision itself does."""

    def __init__(self, weights) -> None:
        self.weights = weights
        self.id = f"torchvision:{weights}"

    def expected_file(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(self.weights.url)

    def available(self) -> bool:
        return self.expected_file().is_file()

    def location(self) -> str:
        return str(self.expected_file())

    def check_available(self) -> None:
        if not self.available():
            raise WeightsUnavailableError(
                f"weights {self.weights} are not on this machine and featx does not download.\n"
                f"  expected file: {self.expected_file()}\n"
                f"  get it from {self.weights.url} on a connected machine and copy it there "
                f"(or set TORCH_HOME), or pass --weights FILE."
            )

    def load_into(self, model: nn.Module) -> None:
        self.check_available()
        model.load_state_dict(self.weights.get_state_dict(progress=False, check_hash=True))


class TimmHubWeights(WeightsSource):
    """A timm model's pretrained weights, taken from the local Hugging Face cache only."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.id = f"timm:{model_name}"

    def _cached_file(self) -> str | None:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(self.model_name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename) if hub_id else None
            if isinstance(found, str):
                return found
        return None

    def available(self) -> bool:
        return self._cached_file() is not None

    def location(self) -> str:
        return self._cached_file() or "Hugging Face hub cache (not present)"

    def check_available(self) -> None:
        if self._cached_file() is None:
            raise WeightsUnavailableError(
                f"pretrained weights of timm model {self.model_name!r} are not in the local Hugging Face "
                "cache and featx does not download; fetch them on a connected machine "
                "(timm.create_model(name, pretrained=True)) and copy ~/.cache/huggingface, or pass --weights FILE."
            )

    def load_into(self, model: nn.Module) -> None:
        self.check_available()
        path = self._cached_file()
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        load_state_dict(model, state, source=path)


def load_state_dict(model: nn.Module, state: dict, source: str) -> None:
    """Load `state` by name; failing that, tensor by tensor in order when every shape matches.

    The in-order fallback is what loads a checkpoint saved under another naming of the same
    architecture (the EfficientNet-PyTorch names of the Lite0 package into timm's modules).
    """
    own = model.state_dict()
    if set(state) == set(own):
        model.load_state_dict(state)
        return
    if len(state) == len(own) and all(a.shape == b.shape for a, b in zip(state.values(), own.values())):
        model.load_state_dict(dict(zip(own, state.values())))
        return
    raise WeightsUnavailableError(
        f"weights in {source} do not fit this architecture "
        f"({len(state)} tensors in the file, {len(own)} in the model, names and shapes differ)"
    )

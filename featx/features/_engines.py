"""Inference engines for extraction: PyTorch (`BatchRunner`) or ONNX Runtime (`OnnxRunner`, ~2x on CPUs).

Both run the same `FeatureNetwork` (uint8 in, normalisation inside), so a store's feature space does not
depend on the engine: ONNX Runtime runs the network exported once per feature space and cached on disk.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from featx.backbones._device import BatchRunner
from featx.backbones._preprocessing import LEGACY_DECODE
from featx.backbones._registry import Backbone, get_backbone
from featx.backbones._weights import WeightsSource, one_line
from featx.errors import FeatxError, FeatxWarning, ParameterError
from featx.features._space import FeatureSpace, digest, user_cache_dir
from featx.outputs import atomic_path

OPSET = 17


def onnx_path(space: FeatureSpace) -> Path | None:
    """<user cache>/onnx/<model>-<hash>.onnx: one exported graph per space and featx/torch/opset version;
    the decode mode acts before the network, so spaces that differ only by it share a graph. None for
    weights from a file (fine-tuned networks): each would leave a graph (13.5 MB for Lite0) in the shared
    cache that nothing removes, so theirs is exported for the run only."""
    if space.weights.startswith("file:"):
        return None
    from featx import __version__

    network = space.with_decode(LEGACY_DECODE).as_dict()
    key = {"space": network, "featx": __version__, "torch": torch.__version__, "opset": OPSET}
    return user_cache_dir() / "onnx" / f"{space.model.replace('/', '_')}-{digest(key, 12)}.onnx"


CHUNK = 8  # images per ONNX Runtime call: small batches stay in the CPU's caches
NetworkFactory = Callable[[], torch.nn.Module]
_INSTALL = 'ONNX Runtime is not installed: pip install "featx[onnx]" (or use --engine torch)'


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxExportError(FeatxError):
    """A network ONNX cannot export: --engine onnx says so in one line, --engine auto extracts with PyTorch."""

    def __init__(self, exc: Exception) -> None:
        self.why = f"ONNX cannot export this network ({type(exc).__name__}: {one_line(exc)})"
        super().__init__(f"{self.why}: use --engine torch")


def export_onnx(network: torch.nn.Module, crop: tuple[int, int], path: Path) -> None:
    """Export `network` (uint8 N x 3 x H x W -> float N x D, dynamic N) to `path`, atomically.

    Through a temporary file (featx.outputs.atomic_path): torch.onnx.export writes in place, and a run killed
    mid-export must not leave a truncated graph that later runs would load.
    """
    network = network.cpu().float().eval()
    example = torch.zeros(2, 3, *crop, dtype=torch.uint8)
    common = dict(input_names=["images"], output_names=["features"], opset_version=OPSET)
    with atomic_path(path) as temp:
        try:  # the TorchScript exporter copes best with fx GraphModules and timm models
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    network, (example,), temp, dynamo=False,
                    dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, **common,
                )
        except Exception as exc:
            if importlib.util.find_spec("onnxscript") is None:  # the dynamo exporter's need, not featx[onnx]'s
                raise OnnxExportError(exc) from None
            batch = torch.export.Dim("batch", min=1)
            try:
                torch.onnx.export(network, (example,), temp, dynamo=True, dynamic_shapes=({0: batch},), **common)
            except Exception as again:
                raise OnnxExportError(again) from None


def build_runner(
    space: FeatureSpace, weights: WeightsSource, device: torch.device, engine: str, backbone: Backbone | None = None
) -> Runner:
    """The network of a feature space on its engine: what extraction and PretrainedFeatures both run.

    The network is built only when needed: not at all for ONNX Runtime when the graph is cached.
    `backbone`: the space's registry entry when the caller holds it (None: looked up).
    """
    from featx.features._network import build_feature_network

    entry = backbone if backbone is not None else get_backbone(space.model)

    def network() -> torch.nn.Module:
        return build_feature_network(entry, weights, space.layer_names, space.pooling, space.tta)

    return select_runner(network, device, engine, onnx_path(space), space.crop)


class OnnxRunner:
    """Runs a FeatureNetwork with ONNX Runtime on the CPU; same interface as `BatchRunner`.

    `network()` builds the network; it is called only when the graph is not in the cache yet.
    """

    def __init__(self, network: NetworkFactory, crop: tuple[int, int], cache_path: str | os.PathLike | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise FeatxError(_INSTALL) from exc
        self.device = torch.device("cpu")
        if cache_path is None:  # not to be kept: exported into a folder removed once the session holds the graph
            with tempfile.TemporaryDirectory(prefix="featx-onnx-") as folder:
                path = Path(folder) / "network.onnx"
                export_onnx(network(), crop, path)
                self.session = self._session(ort, path)
        else:
            path = Path(cache_path)
            session = self._cached_session(ort, path)
            if session is None:
                export_onnx(network(), crop, path)
                session = self._session(ort, path)
            self.session = session
        self.input_name = self.session.get_inputs()[0].name
        self.threads = torch.get_num_threads()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="featx-onnx")  # threads start on use

    @classmethod
    def _cached_session(cls, ort, path: Path):
        """The session of the graph cached at `path`; None when there is none, or it cannot be loaded (a damaged
        file: it is a cache, so it is exported again, said once)."""
        if not path.exists():
            return None
        try:
            return cls._session(ort, path)
        except Exception as exc:  # onnxruntime raises its own InvalidProtobuf, Fail...
            warnings.warn(FeatxWarning(f"the cached ONNX graph {path} cannot be loaded ({type(exc).__name__}): "
                                       "exported again"), stacklevel=4)
            return None

    @staticmethod
    def _session(ort, path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # yield to the decoders
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.submit(images).result()

    def submit(self, images: torch.Tensor) -> Chunks:
        """Start computing the features of a batch: its chunks queue up for the compute threads.

        Hand-written rather than ONNX Runtime's intra-op threads, which split every operator across
        threads and wait for the slowest at each one: on a few cores shared with decode workers, whole
        chunks run single-threaded on independent threads, with the next batch's chunks already queued,
        keep every core busy (docs/performance.md).
        """
        batch = np.ascontiguousarray(images.cpu().numpy())
        return Chunks([self._pool.submit(self._run, chunk) for chunk in np.array_split(batch, -(-len(batch) // CHUNK))])

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: chunk})[0]


class Chunks:
    """A batch's features being computed in chunks; `result()` waits and joins them."""

    def __init__(self, futures: list[Future]) -> None:
        self.futures = futures

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def result(self) -> np.ndarray:
        return np.concatenate([f.result() for f in self.futures]).astype(np.float32, copy=False)


Runner = BatchRunner | OnnxRunner  # same interface: __call__(uint8 batch) -> features, submit(batch) -> future


def select_runner(
    network: NetworkFactory, device: torch.device, engine: str, cache_path: str | os.PathLike | None, crop: int = 224
) -> Runner:
    """'torch' -> BatchRunner; 'compile' -> BatchRunner through torch.compile; 'onnx' -> OnnxRunner (CPU only);
    'auto' -> onnx on a CPU with onnxruntime, else torch.

    `network()` builds the FeatureNetwork (not called when the ONNX graph is cached); `cache_path`: where the
    exported graph is kept (see `onnx_path`; None: not kept); `crop`: the input's H, W.
    """
    network = functools.cache(network)  # built at most once, even when auto falls back to PyTorch
    if engine in ("torch", "compile") or (engine == "auto" and (device.type != "cpu" or not onnxruntime_available())):
        return BatchRunner(network(), device, compile=engine == "compile")
    if device.type != "cpu":
        raise ParameterError(f"--engine onnx runs on the CPU only, not on {device}; use --engine torch or --device cpu")
    if engine == "onnx":
        return OnnxRunner(network, (crop, crop), cache_path)
    try:
        return OnnxRunner(network, (crop, crop), cache_path)
    except Exception as exc:  # auto: a model ONNX cannot export or run still extracts, with PyTorch
        if isinstance(exc, FeatxError) and not isinstance(exc, OnnxExportError):
            raise  # the network itself cannot be built (layer name, weights): no fallback helps
        why = exc.why if isinstance(exc, OnnxExportError) else f"ONNX failed ({type(exc).__name__}: {exc})"
        warnings.warn(f"{why}; extracting with PyTorch", stacklevel=2)
        return BatchRunner(network(), device)

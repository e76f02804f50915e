"""ONNX Runtime vs PyTorch: same features on real images, one export per feature space, engine choice."""
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

from featx.cli import main  # noqa: E402

import featx  # noqa: E402
from featx.backbones._device import BatchRunner  # noqa: E402
from featx.backbones._registry import get_backbone  # noqa: E402
from featx.errors import FeatxError, FeatxWarning  # noqa: E402
from featx.features import _engines as engines  # noqa: E402
from featx.features._network import build_feature_network  # noqa: E402
from featx.features._store import FeatureStore  # noqa: E402


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """12 real ELPV images, 3 per class."""
    from featx.datasets import write_elpv_folder

    return write_elpv_folder(tmp_path_factory.mktemp("engines") / "cells", per_class=3)


@pytest.fixture
def exports(monkeypatch):
    """Counts calls of the ONNX exporter."""
    calls = []
    real = engines.export_onnx

    def counted(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(engines, "export_onnx", counted)
    return calls


def assert_same_features(onnx: np.ndarray, torch_: np.ndarray) -> None:
    # atol relative to the features' scale: random-weight networks give features of any magnitude
    np.testing.assert_allclose(onnx, torch_, rtol=1e-3, atol=1e-4 * max(float(np.abs(torch_).max()), 1e-12))


@pytest.mark.parametrize(
    "model, weights, layer, pooling, dim",
    [
        ("efficientnet_lite0", None, None, "avg", 1280),
        ("resnet18", "random", "layer3,layer4", "gem", 768),
        ("mobilenet_v3_small", "random", None, "max", 576),
    ],
)
def test_onnx_and_torch_features_agree_and_share_the_store(cells, tmp_path, exports, model, weights, layer, pooling, dim):
    common = dict(model=model, weights=weights, layer=layer, pooling=pooling, workers=0, progress=False, batch_size=5)
    a = featx.extract(cells, store=tmp_path / "torch.h5", engine="torch", **common)
    b = featx.extract(cells, store=tmp_path / "onnx.h5", engine="onnx", **common)
    assert len(exports) == 1 and a.n_extracted == b.n_extracted == 12
    ft, fo = featx.load_features(a.store), featx.load_features(b.store)
    assert list(ft.paths) == list(fo.paths) and fo.features.shape == (12, dim)
    assert np.abs(ft.features).max() > 0
    assert_same_features(fo.features, ft.features)
    with FeatureStore.open(a.store) as sa, FeatureStore.open(b.store) as sb:
        assert sa.space == sb.space  # the engine is not part of the feature space
    again = featx.extract(cells, store=a.store, engine="onnx", **common)  # a torch store takes onnx runs
    assert (again.n_extracted, again.n_cached) == (0, 12)


def test_the_exported_graph_is_cached_and_reused(cells, tmp_path, exports, private_cache):
    common = dict(model="mobilenet_v3_small", weights="random", workers=0, progress=False, engine="onnx")
    featx.extract(cells, store=tmp_path / "1.h5", **common)
    graphs = list((private_cache / "onnx").glob("*.onnx"))
    assert len(exports) == 1 and graphs == [exports[0]]
    mtime = graphs[0].stat().st_mtime_ns
    featx.extract(cells, store=tmp_path / "2.h5", **common)
    assert len(exports) == 1 and graphs[0].stat().st_mtime_ns == mtime
    assert not list((private_cache / "onnx").glob("*.tmp"))  # written via a temp file, none left over
    featx.extract(cells, store=tmp_path / "3.h5", pooling="gem", **common)  # another feature space
    assert len(exports) == 2 and len(list((private_cache / "onnx").glob("*.onnx"))) == 2
    graphs[0].write_bytes(graphs[0].read_bytes()[:1000])  # a damaged cache file: exported again, said once
    with pytest.warns(FeatxWarning, match="cannot be loaded .*: exported again"):
        featx.extract(cells, store=tmp_path / "4.h5", **common)
    assert len(exports) == 3 and graphs[0].stat().st_size > 1000


@pytest.fixture(scope="module")
def small_network():
    backbone = get_backbone("mobilenet_v3_small")
    return build_feature_network(backbone, backbone.weights("random"))


def test_auto_picks_onnx_on_cpu_and_torch_elsewhere(small_network, tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    runner = engines.select_runner(lambda: small_network, cpu, "auto", tmp_path / "m.onnx")
    assert isinstance(runner, engines.OnnxRunner) and runner.device == cpu
    images = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8)
    out = runner(images)
    assert out.shape == (3, 576) and out.dtype == np.float32
    assert isinstance(engines.select_runner(lambda: small_network, cpu, "torch", tmp_path / "m.onnx"), BatchRunner)
    # on CUDA, auto means torch (BatchRunner stubbed: no GPU here)
    monkeypatch.setattr(engines, "BatchRunner", lambda network, device, compile: ("torch", device))
    cuda = torch.device("cuda")
    assert engines.select_runner(lambda: small_network, cuda, "auto", tmp_path / "m.onnx") == ("torch", cuda)
    with pytest.raises(FeatxError, match="CPU only"):
        engines.select_runner(lambda: small_network, cuda, "onnx", tmp_path / "m.onnx")
    with pytest.raises(FeatxError, match="unknown engine 'tensorrt'"):  # checked once, by extract's parameters
        featx.extract(tmp_path, engine="tensorrt", store=tmp_path / "s.h5")


def test_missing_onnxruntime_gives_the_install_hint(cells, tmp_path, small_network, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(FeatxError, match=r'pip install "featx\[onnx\]"'):
        featx.extract(cells, "mobilenet_v3_small", weights="random", engine="onnx", store=tmp_path / "s.h5")
    auto = engines.select_runner(lambda: small_network, torch.device("cpu"), "auto", tmp_path / "m.onnx")
    assert isinstance(auto, BatchRunner)
    result = CliRunner().invoke(main, ["extract", str(cells), "--store", str(tmp_path / "c.h5"), "--engine", "onnx",
                                       "--model", "mobilenet_v3_small", "--weights", "random", "-w", "0", "-q"])
    assert result.exit_code == 1 and 'pip install "featx[onnx]"' in result.output


def test_cli_engine_option(cells, tmp_path):
    store = tmp_path / "s.h5"
    args = ["extract", str(cells), "--store", str(store), "--model", "mobilenet_v3_small", "--weights", "random",
            "-w", "0", "-q"]
    result = CliRunner().invoke(main, [*args, "--engine", "onnx"])
    assert result.exit_code == 0, result.output
    assert "12 extracted" in result.output
    bad = CliRunner().invoke(main, [*args, "--engine", "tensorrt"])
    assert bad.exit_code == 2 and "tensorrt" in bad.output


def test_chunked_concurrent_onnx_runs_match_single_images_and_torch(cells, small_network, tmp_path):
    from featx.images._decode import decode

    pre = get_backbone("mobilenet_v3_small").preprocessing()
    images = [pre.geometric()(decode(p.read_bytes())) for p in sorted(cells.rglob("*.png"))]
    batch = torch.stack(images + [im.flip(-1) for im in images[:7]])  # 19 images: chunks of 8, 8 and 3
    runner = engines.select_runner(lambda: small_network, torch.device("cpu"), "onnx", tmp_path / "m.onnx")
    assert engines.CHUNK < len(batch) and runner.threads >= 1
    whole = runner(batch)
    singles = np.concatenate([runner(batch[i : i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(whole, singles, rtol=1e-4, atol=1e-5 * float(np.abs(singles).max()))
    assert_same_features(whole, BatchRunner(small_network, torch.device("cpu"))(batch))
    cached = engines.select_runner(
        lambda: pytest.fail("the network was built although its graph is cached"),
        torch.device("cpu"), "onnx", tmp_path / "m.onnx",
    )
    np.testing.assert_allclose(cached(batch[:3]), whole[:3], rtol=1e-4, atol=1e-5 * float(np.abs(singles).max()))


def test_compile_engine_gives_the_torch_features(cells, tmp_path):
    common = dict(model="mobilenet_v3_small", weights="random", workers=0, progress=False, batch_size=6)
    plain = featx.extract(cells, store=tmp_path / "torch.h5", engine="torch", **common)
    compiled = featx.extract(cells, store=tmp_path / "compiled.h5", engine="compile", **common)
    assert compiled.n_extracted == 12
    assert_same_features(featx.load_features(compiled.store).features, featx.load_features(plain.store).features)


def test_spaces_that_differ_only_by_decode_mode_share_a_graph():
    from featx.features._engines import onnx_path
    from featx.features._space import FeatureSpace

    backbone = get_backbone("mobilenet_v3_small")
    space = FeatureSpace.of(backbone, backbone.weights("random"))
    assert onnx_path(space.with_decode("reduced")) == onnx_path(space)
    assert space.with_decode("reduced").store_path() != space.store_path()
    assert onnx_path(FeatureSpace.of(backbone, backbone.weights("random"), pooling="max")) != onnx_path(space)


class _Eigenvalues(torch.nn.Module):
    """An operator ONNX has no export for (aten::linalg_eigvals)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(images.float().mean(1)[:, :4, :4]).real.flatten(1)


def test_a_network_onnx_cannot_export_is_one_line_for_onnx_and_runs_on_torch_for_auto(tmp_path):
    """The exporter's fallback needs onnxscript, which featx[onnx] does not install: its ModuleNotFoundError
    hid the real reason, with a traceback."""
    cpu = torch.device("cpu")
    with pytest.raises(engines.OnnxExportError, match=r"^ONNX cannot export this network \(\w+Error: .*\): use "
                                                      r"--engine torch$") as raised:
        engines.select_runner(_Eigenvalues, cpu, "onnx", tmp_path / "m.onnx", crop=8)
    assert "\n" not in str(raised.value) and "onnxscript" not in str(raised.value)
    with pytest.warns(UserWarning, match=r"^ONNX cannot export this network \(.*\); extracting with PyTorch$"):
        auto = engines.select_runner(_Eigenvalues, cpu, "auto", tmp_path / "m.onnx", crop=8)
    assert isinstance(auto, BatchRunner) and not (tmp_path / "m.onnx").exists()

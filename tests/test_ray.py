"""Extraction on a real local Ray instance gives the store a local run gives: keys, features, failures, resume."""
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from featx.cli import main
from test_extract import make_bad_files

import featx
import featx.features._ray
from featx.errors import ExtractionInterrupted, FeatxError
from featx.features._store import FeatureStore

FAST = dict(model="mobilenet_v3_small", weights="random", engine="torch", progress=False)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray Data's own, copying its context


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One small Ray instance for the module. Its one GPU is a declared resource only (no CUDA here):
    with device='auto' the run takes the GPU shape (decode tasks, then actors holding a GPU each), whose
    actors find no CUDA and compute on their CPU; device='cpu' takes the CPU shape (fused, one per CPU).
    Yields the workers' FEATX_CACHE (where their ONNX graphs go)."""
    ray = pytest.importorskip("ray")
    cache = tmp_path_factory.mktemp("ray-cache")
    ray.init(
        num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=300 * 2**20,
        runtime_env={"env_vars": {"FEATX_CACHE": str(cache)}},
    )
    yield cache
    ray.shutdown()


def assert_same_store(ours: Path, reference: Path) -> None:
    """Same keys, same files with the same labels and features (float tolerance), same failures."""
    with FeatureStore.open(ours) as a, FeatureStore.open(reference) as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert a.failures() == b.failures()
    mine, theirs = featx.load_features(ours), featx.load_features(reference)
    assert list(mine.paths) == list(theirs.paths) and list(mine.labels) == list(theirs.labels)
    assert list(mine.classes) == list(theirs.classes)
    scale = np.abs(theirs.features).max()
    np.testing.assert_allclose(mine.features, theirs.features, rtol=1e-4, atol=1e-4 * scale)
    with FeatureStore.open(ours) as a, FeatureStore.open(reference) as b:  # pHashes and statistics, for featx audit
        (rows_a, hashes_a, stats_a), (rows_b, hashes_b, stats_b) = a.quality(), b.quality()
        assert rows_a.keys() == rows_b.keys() and len(rows_b) > 0
        order_a, order_b = [rows_a[key] for key in sorted(rows_b)], [rows_b[key] for key in sorted(rows_b)]
        np.testing.assert_array_equal(hashes_a[order_a], hashes_b[order_b])
        np.testing.assert_allclose(stats_a[order_a], stats_b[order_b], rtol=1e-5)


def test_a_ray_run_stores_what_a_local_run_stores_bad_files_included(ray_cluster, elpv_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE", str(ray_cluster))  # the ONNX graph is exported once, for both runs
    make_bad_files(elpv_copy, sorted(elpv_copy.rglob("cell*.png"))[0])
    local = featx.extract(elpv_copy, store=tmp_path / "local.h5", workers=1, batch_size=8, progress=False)
    on_ray = featx.extract(elpv_copy, store=tmp_path / "ray.h5", batch_size=8, progress=False, ray="auto")
    assert (on_ray.n_files, on_ray.n_unique, on_ray.n_extracted) == (local.n_files, local.n_unique, 20)
    assert sorted(on_ray.failures) == sorted(local.failures) and on_ray.n_failed == 5
    assert_same_store(tmp_path / "ray.h5", tmp_path / "local.h5")
    again = featx.extract(elpv_copy, store=tmp_path / "ray.h5", progress=False, ray="auto")
    assert (again.n_extracted, again.n_cached, again.n_failed) == (0, 20, 5)  # nothing sent to the cluster


def test_a_run_resumes_and_sends_only_new_contents_to_the_cluster(ray_cluster, elpv_folder, tmp_path, monkeypatch):
    store = tmp_path / "s.h5"
    files = sorted(elpv_folder.rglob("*.png"))
    featx.extract(files[::2], store=store, **FAST)  # half of the images are in the store already
    sent: list[int] = []
    first: list[int] = []  # rows of the first batch back: Ray may join blocks, so not always batch_size
    ray_batches = featx.features._ray.ray_batches

    def killed_after_one_batch(paths, *args):
        sent.append(len(paths))
        batch = next(ray_batches(paths, *args))
        first.append(len(batch.indices))
        yield batch
        raise KeyboardInterrupt  # the run dies after its first commit

    monkeypatch.setattr(featx.features._ray, "ray_batches", killed_after_one_batch)
    with pytest.raises(ExtractionInterrupted) as interrupted:  # Ctrl-C: what was computed is committed first
        featx.extract(elpv_folder, store=store, batch_size=4, device="cpu", ray="auto", ray_actors=1, **FAST)
    with FeatureStore.open(store) as opened:
        assert 0 < first[0] < 10 and opened.count("rows") == 10 + first[0] == 10 + interrupted.value.kept

    def counted(paths, *args):
        sent.append(len(paths))
        return ray_batches(paths, *args)

    monkeypatch.setattr(featx.features._ray, "ray_batches", counted)
    fast = ["--model", "mobilenet_v3_small", "--weights", "random", "--engine", "torch", "--device", "cpu", "-q"]
    args = ["extract", str(elpv_folder), "--store", str(store), *fast, "--ray-actors", "1", "--ray"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    left = 10 - first[0]
    assert sent == [10, left] and f"{left} extracted, {20 - left} already in the store" in result.output
    featx.extract(elpv_folder, store=tmp_path / "local.h5", **FAST)
    assert_same_store(store, tmp_path / "local.h5")


def test_features_and_failures_come_back_to_the_driver_intact():
    """An actor's output (rows as float32 bytes, b'' for failures) decodes to the batch a local run yields."""
    features = np.array([[1.5, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)  # zero bytes at the end are kept
    extractor = types.SimpleNamespace(runner=lambda: lambda images: features[: len(images)])
    network = featx.features._ray._Network(extractor)
    reasons = np.array(["", "truncated", ""], dtype=object)
    measured = np.array([(1, (0.5,)), None, (2, (0.25,))] + [None], dtype=object)[:-1]  # (pHash, statistics)
    batch = {"index": np.array([7, 3, 5]), "image": np.zeros((3, 3, 2, 2), np.uint8), "reason": reasons,
             "permanent": np.array([False, True, False]), "measured": measured}
    got = featx.features._ray._feature_batch(network(batch))
    assert got.indices == [7, 5] and got.failures == [(3, "truncated", True)]
    assert got.measured == [(1, (0.5,)), (2, (0.25,))]  # each decoded file's, in the order of the indices
    np.testing.assert_array_equal(got.features, features)
    failed = featx.features._ray._feature_batch(network({**batch, "reason": np.array(["a", "b", "c"], dtype=object)}))
    assert failed.indices == [] and failed.features is None and [i for i, *_ in failed.failures] == [7, 3, 5]


def test_without_ray_the_flag_says_how_to_install_it(elpv_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FeatxError, match=r'pip install "featx\[ray\]"'):
        featx.extract(elpv_folder, store=tmp_path / "s.h5", ray="auto", **FAST)
    for flags in (["--ray"], ["--ray-address", "ray://head:10001"]):  # a flag: DATA after it stays DATA
        result = CliRunner().invoke(main, ["extract", *flags, str(elpv_folder), "--store", str(tmp_path / "s.h5")])
        assert result.exit_code == 1 and 'pip install "featx[ray]"' in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "s.h5").exists()

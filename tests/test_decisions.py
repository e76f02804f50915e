"""Each decision of an extraction taken once (issue #26): the registry entry, the device, the preprocessing."""
from __future__ import annotations

import pickle

import pytest

import featx
import featx.backbones._device
import featx.backbones._registry
from featx.backbones._preprocessing import Preprocessing
from featx.features._extractor import Extractor


class _CountingRegistry(dict):
    def __init__(self, entries: dict) -> None:
        super().__init__(entries)
        self.lookups: list[str] = []

    def __getitem__(self, name: str):
        self.lookups.append(name)
        return super().__getitem__(name)


@pytest.fixture
def decisions(monkeypatch) -> dict[str, list]:
    """Every registry lookup and device resolution made from now on."""
    registry = _CountingRegistry(featx.backbones._registry.REGISTRY)
    monkeypatch.setattr(featx.backbones._registry, "REGISTRY", registry)
    devices: list = []
    resolve = featx.backbones._device.resolve_device
    monkeypatch.setattr(featx.backbones._device, "resolve_device", lambda d="auto": devices.append(d) or resolve(d))
    return {"registry": registry.lookups, "devices": devices}


def test_one_extract_looks_the_model_up_once_and_resolves_the_device_once(elpv_folder, tmp_path, decisions):
    report = featx.extract(elpv_folder, "mobilenet_v3_small", weights="random", engine="torch",
                           store=tmp_path / "s.h5", progress=False)
    assert report.n_extracted > 0
    assert decisions["registry"] == ["mobilenet_v3_small"]
    assert decisions["devices"] == ["auto"]


def test_the_transformer_decides_once_across_fit_and_transforms(elpv_folder, tmp_path, decisions):
    files = sorted(str(p) for p in elpv_folder.rglob("*.png"))
    t = featx.PretrainedFeatures("mobilenet_v3_small", weights="random", engine="torch", cache=tmp_path / "s.h5")
    t.fit(files).transform(files[:3])
    t.transform(files[3:6])
    assert decisions["registry"] == ["mobilenet_v3_small"]
    assert decisions["devices"] == ["auto"]


def test_decisions_are_per_process_and_old_pickles_load(tmp_path):
    extractor = Extractor.create("mobilenet_v3_small", "random", engine="torch")
    extractor.resolved_device()
    copy = pickle.loads(pickle.dumps(extractor))
    assert (copy._backbone, copy._device, copy._runner) == (None, None, None)  # each process decides again
    state = {k: v for k, v in extractor.__dict__.items() if k not in ("_backbone", "_device")}  # as main pickled
    old = Extractor.__new__(Extractor)
    old.__setstate__(state)
    assert old.backbone.name == "mobilenet_v3_small" and old.resolved_device().type in ("cpu", "cuda")


def test_preprocessing_builds_its_transform_once():
    pre = Preprocessing(256, 224, "bilinear", (0.5,) * 3, (0.5,) * 3, decode="reduced")
    assert pre.geometric() is Preprocessing(256, 224, "bilinear", (0.5,) * 3, (0.5,) * 3, decode="reduced").geometric()
    assert pre.geometric().keywords["reducing_gap"] == 3.0

"""Modules that moved into subpackages (issue #26) keep importing from their old paths, with a DeprecationWarning,
as the very same objects: code that imports them and pickles that name their classes keep working
(tests/test_compat_main.py loads such pickles)."""
import importlib
import sys

import pytest

import featx
from featx._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_warns_and_gives_the_same_objects(old, monkeypatch):
    monkeypatch.delitem(sys.modules, f"featx.{old}", raising=False)
    with pytest.warns(DeprecationWarning, match=rf"featx\.{old} is deprecated: it moved to featx\.{MOVED[old].split('.')[0]}"):
        module = importlib.import_module(f"featx.{old}")
    new = importlib.import_module(f"featx.{MOVED[old]}")
    public = [name for name in vars(new) if not name.startswith("_")]
    assert public and all(getattr(module, name) is getattr(new, name) for name in public)


def test_old_modules_named_like_their_packages_keep_their_public_names():
    from featx import auditing, backbones, finetuning

    assert callable(backbones.get_backbone) and "efficientnet_lite0" in backbones.REGISTRY
    assert callable(auditing.audit) and callable(finetuning.finetune) and finetuning.FinetuneConfig().epochs > 0


def test_the_public_api_is_unchanged():
    names = ["extract", "PretrainedFeatures", "load_features", "FeatureSet", "FeatureStore", "get_backbone",
             "finetune", "FinetuneConfig", "FinetunedClassifier", "audit", "Audit", "symmetries", "FeatxError",
             "ExtractReport"]
    assert set(names) <= set(featx.__all__) and all(callable(getattr(featx, name)) for name in names)
    from featx.classify import fit

    assert fit.__module__ == "featx.classify._fitting"

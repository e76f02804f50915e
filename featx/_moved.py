"""featx's modules before the subpackages (`featx.store`, `featx.transformer`, ...) keep importing, with a
DeprecationWarning, as scikit-learn 0.22 did for its moved modules: code that imports them and pickles that name
their classes (a pickled `Pipeline([PretrainedFeatures(), ...])` records `featx.transformer.PretrainedFeatures`)
keep working. Each old name is a thin module that reads every attribute from its new home, so the classes are the
very same objects."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module (below featx.) -> its new home. featx.backbones, featx.auditing and featx.finetuning are packages
# now, named like the modules they replace: their public names are the packages' exports.
MOVED = {
    "inputs": "images._inputs", "content": "images._content", "decode": "images._decode",
    "memory": "images._memory", "views": "images._views",
    "weights": "backbones._weights",
    "preprocessing": "backbones._preprocessing", "device": "backbones._device",
    "space": "features._space", "store": "features._store", "loader": "features._loader",
    "network": "features._network", "engines": "features._engines", "extraction": "features._extraction",
    "distributed": "features._ray", "transformer": "features._transformer", "neighbours": "features._neighbours",
    "classifiers": "classify._classifiers", "fitting": "classify._fitting", "bundle": "classify._bundle",
    "inference": "classify._inference",
    "report": "reports._report", "html_report": "reports._html", "figures": "reports._figures",
    "audit_page": "auditing._page",
    "finetuned": "finetuning._apply", "finetuned_classifier": "finetuning._estimator",
    "viz.classes": "viz._classes", "viz.feature_maps": "viz._feature_maps", "viz.dream": "viz._dream",
    "viz.attack": "viz._attack", "viz.images": "viz._images",
}


class _Alias(types.ModuleType):
    """An old module path: every attribute is read from the module that now holds it."""

    def __getattr__(self, name: str):
        target = self.__dict__.get("_target")
        if target is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module(target), name)


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path=None, target=None):
        if fullname.startswith("featx.") and fullname[len("featx."):] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return _Alias(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        new = "featx." + MOVED[module.__name__[len("featx."):]]
        module.__dict__["_target"] = new
        warnings.warn(
            f"{module.__name__} is deprecated: it moved to {new.rsplit('.', 1)[0]}; import from there",
            DeprecationWarning,
            stacklevel=2,
        )


def install() -> None:
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(_OldPaths())

"""Candidates of a comparison and the one split they all share."""
from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featx.errors import BadInputError, FeatxError, ParameterError
from featx.images._inputs import ImageList
from featx.names import DEFAULT_MODEL, validate_parameters


@dataclass(frozen=True)
class Candidate:
    """One feature space (model, layers, pooling, image size, views, weights) and a classifier."""

    model: str = DEFAULT_MODEL
    layer: str | None = None
    pooling: str = "avg"
    image_size: int | None = None
    tta: str = "none"
    weights: str | None = None  # a file (e.g. from featx finetune) or a named variant
    clf: str = "logreg"
    weights_name: str = field(default="", compare=False, repr=False)  # how names show `weights` ("": its file name)

    @property
    def space(self) -> Candidate:
        """The candidate without its classifier: what one store holds."""
        return Candidate(self.model, self.layer, self.pooling, self.image_size, self.tta, self.weights, clf="",
                         weights_name=self.weights_name)

    @property
    def views(self) -> int:
        return 8 if self.tta == "d4" else 1

    @property
    def name(self) -> str:
        shown = self.weights_name or (Path(self.weights).name if self.weights else "")
        parts = [f"{self.model}[{shown}]" if shown else self.model,
                 f"{self.image_size}px" if self.image_size else "", self.layer or "", self.pooling,
                 "" if self.tta == "none" else self.tta]
        return " ".join(p for p in parts if p) + (f" / {self.clf}" if self.clf else "")


def _listed(values: Any) -> list:
    """A value or a sequence of values (a string is one value)."""
    return [values] if values is None or isinstance(values, (str, int, os.PathLike)) else list(values)


Listed = Any  # a value or a sequence of values


def candidates(models: Listed, layers: Listed, poolings: Listed, image_sizes: Listed, ttas: Listed, weights: Listed,
               clfs: Listed) -> list[Candidate]:
    """The product of the lists, checked before anything runs (one line for an unknown name, a bad value or an
    empty list). A weights file makes candidates of the model it was fine-tuned from (its metadata), else of each
    model listed; a fine-tuned file's candidates take the image size it was trained at, in place of `image_sizes`
    (its network learned the images at that scale)."""
    from featx.backbones._registry import get_backbone
    from featx.classify._classifiers import get_classifier

    models, weights = _listed(models), _listed(weights)
    lists = {"models": models, "layers": layers, "poolings": poolings, "image sizes": image_sizes, "views (tta)": ttas, "classifiers": clfs}
    if empty := [name for name, values in lists.items() if not _listed(values)]:
        raise ParameterError(f"nothing to compare: the list of {empty[0]} is empty")
    for model in models:
        get_backbone(model)
    layers = list(dict.fromkeys(_layer(layer) for layer in _listed(layers)))
    for clf in _listed(clfs):
        get_classifier(clf)
    for name, values in (("pooling", poolings), ("image_size", image_sizes), ("tta", ttas)):
        for value in _listed(values):
            validate_parameters(**{name: value})
    bases = [(model, None, None) for model in models]
    bases += [(base, str(w), size) for w in weights if w is not None for base, size in _fine_tuned(w, models)]
    settings = list(itertools.product(_listed(layers), _listed(poolings), _listed(image_sizes), _listed(ttas),
                                      _listed(clfs)))
    shown = distinct_names([w for _, w, _ in bases if w is not None])
    for model in dict.fromkeys(model for model, _, _ in bases):  # before any extraction: see check_layers
        for layer in layers:
            check_layers(model, layer)
    made = [Candidate(model, layer, pooling, trained or size, tta, w, clf, shown.get(w, ""))
            for (model, w, trained), (layer, pooling, size, tta, clf) in itertools.product(bases, settings)]
    return list(dict.fromkeys(made))  # a trained size stands for every listed one: once each


def distinct_weights(weights: Listed) -> tuple[list, list[tuple[str, str]]]:
    """The weights listed, each file once by its bytes (a copy, or one file under two names, is one feature
    space: it would be fused with itself), and the (left out, same as) pairs, to say so."""
    from featx.outputs import sha256

    kept, seen, same = [], {}, []
    for w in _listed(weights):
        key = sha256(w) if w is not None and os.path.isfile(w) else w
        if key in seen:
            same.append((str(w), str(seen[key])))
        else:
            seen[key] = w
            kept.append(w)
    return kept, same


def _layer(layer: str | None) -> str | None:
    """A candidate's layers as one string, each named once, blanks dropped (None: the model's default), so that
    two spellings of one feature space make one candidate."""
    from featx.features._space import parse_layers

    names = parse_layers(layer)
    return ",".join(dict.fromkeys(names)) if names else None


def check_layers(model: str, layer: str | None) -> None:
    """Refuse a layer `model` does not have (one line), from its network built on PyTorch's meta device: no
    weights read, nothing computed."""
    if layer is None:
        return
    import torch

    from featx.backbones._registry import get_backbone
    from featx.features._network import build_feature_network

    backbone = get_backbone(model)
    with torch.device("meta"):
        build_feature_network(backbone, backbone.weights("random"), layer)


def distinct_names(files: Sequence[str]) -> dict[str, str]:
    """Each weights file's name as candidates show it: its file name, or, where another file has the same name
    (runA/tuned.pth, runB/tuned.pth), the shortest end of its path that no other file's path ends with."""
    parts = {file: Path(file).parts for file in dict.fromkeys(files)}
    shown = {}
    for file, own in parts.items():
        others = [p for f, p in parts.items() if f != file]
        k = next((k for k in range(1, len(own)) if all(p[-k:] != own[-k:] for p in others)), len(own))
        shown[file] = str(Path(*own[-k:]))
    return shown


def _fine_tuned(weights, models: list[str]) -> list[tuple[str, int | None]]:
    """The model a weights file was fine-tuned from and the image size it was trained at; the models listed
    (no size) for another file, or one that cannot be read (its candidates then fail and are reported)."""
    from featx.backbones._weights import is_safetensors, safetensors_metadata

    if is_safetensors(weights):
        try:
            metadata = safetensors_metadata(weights)
        except FeatxError:
            metadata = {}
        if metadata.get("model"):
            return [(metadata["model"], metadata.get("image_size"))]
    return [(model, None) for model in models]


def _recorded(weights: str, key: str) -> set[str]:
    """The content keys a fine-tuned file's metadata lists under `key` (empty: none recorded)."""
    from featx.backbones._weights import is_safetensors, safetensors_metadata

    if not is_safetensors(weights):
        return set()
    try:
        return set(safetensors_metadata(weights).get(key, ()))
    except FeatxError:
        return set()


def trained_on(weights: str) -> set[str]:
    """Content keys of the images a fine-tuned file was trained or validated on (empty: none recorded)."""
    return _recorded(weights, "trained_on")


def learned_from(weights: str) -> set[str]:
    """Content keys of the images whose labels a fine-tuned file's network was trained on: those it saw, less its
    validation part, which only picked the epoch (older files record no validation part: all of it counts)."""
    return trained_on(weights) - _recorded(weights, "validated_on")


Group = str | Callable[[str], str] | Mapping[str, str] | None
"""A file's group: a function of its path, a regular expression on it, or a mapping of its path (a CSV's column)."""


def group_of(group: Group) -> Callable[[str], str] | None:
    """The function naming a file's group: the regex's first group (or whole match), the mapping's value."""
    if group is None or callable(group):
        return group
    if isinstance(group, Mapping):
        def given(path: str) -> str:
            if path not in group:
                raise BadInputError(f"{path}: no group given (its cell in the group column is empty or it is not listed)")
            return group[path]

        return given
    try:
        pattern = re.compile(group)
    except re.error as exc:
        raise ParameterError(f"invalid group pattern {group!r}: {exc}") from None

    def named(path: str) -> str:
        found = pattern.search(path)
        if not found:
            raise BadInputError(f"the group pattern {group!r} does not match {path}")
        return found.group(1) if pattern.groups else found.group(0)

    return named


@dataclass(frozen=True)
class Split:
    """The labelled unique images of a comparison (one file per content) and their train/test parts."""

    paths: tuple[str, ...]
    keys: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    train: np.ndarray
    test: np.ndarray
    said: tuple[str, ...] = ()  # lines for the user: files left out of it or ignored, and why

    @classmethod
    def of(cls, images: ImageList, test_size: float, seed: int, group: Group = None,
           test_files: ImageList | None = None,
           cv: int = 5, source: str = "DATA") -> Split:
        """Unique labelled contents of `images` (`source`: what they came from, for errors), split once:
        stratified by class (and `group`), or the files whose content `test_files` hold as the test part.
        Refused (one line) before any work: a single class, a class too small for `cv` folds, a test file that
        cannot be read."""
        from sklearn.model_selection import train_test_split

        from featx.classify._fitting import check_classes
        from featx.images._content import content_keys

        first: dict[str, int] = {}
        unreadable, said = [], []
        for i, hashed in enumerate(content_keys(images.paths)):
            if images.labels[i] < 0:
                continue
            if hashed.key is None:
                unreadable.append((images.paths[i], hashed.error or "unreadable"))
                continue
            j = first.setdefault(hashed.key, i)
            if images.labels[j] != images.labels[i]:
                raise BadInputError(f"identical images carry different labels: {images.paths[j]}, {images.paths[i]}")
        keys, index = list(first), np.array(list(first.values()), dtype=np.int64)
        if not len(index):
            raise BadInputError("no labelled image found (use class folders or CSV labels)")
        if unreadable:
            said.append(f"left out of the comparison: {listed(unreadable, 'file(s) that cannot be read')}")
        labels = images.labels[index]
        present, labels = np.unique(labels, return_inverse=True)
        classes = tuple(images.classes[i] for i in present)
        check_classes(source, classes, labels, cv, test_split=test_files is None)
        paths = [images.paths[i] for i in index]
        if test_files is not None:
            hashed = content_keys(test_files.paths)
            if missing := [(p, h.error or "unreadable") for p, h in zip(test_files.paths, hashed) if h.key is None]:
                raise BadInputError(f"the split CSV names {listed(missing, 'file(s) that cannot be read')}; "
                                    "fix its paths (relative to the CSV)")
            if outside := [(p, "not among DATA's labelled images") for p, h in zip(test_files.paths, hashed)
                           if h.key not in first]:
                said.append(f"ignored: the split CSV names {listed(outside, 'file(s) not compared')}")
            held = {h.key for h in hashed}
            is_test = np.array([key in held for key in keys])
            train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
            if not len(test) or not len(train):
                raise BadInputError("the split CSV must name some, not all, of the images compared")
        else:
            named = group_of(group)
            strata = labels if named is None else [f"{label}/{named(path)}" for label, path in zip(labels, paths)]
            try:
                train, test = train_test_split(np.arange(len(keys)), test_size=test_size, stratify=strata,
                                               random_state=seed)
            except ValueError as exc:
                raise BadInputError(f"cannot hold out a stratified test part (test size {test_size}): {exc}") from None
        held_out = f"holding out --test-size {test_size}" if test_files is None else "holding out the split CSV's files"
        return cls(tuple(paths), tuple(keys), labels, classes, np.sort(train), np.sort(test),
                   tuple(said))._checked(cv, held_out, ("--cv",) if test_files is not None else ("--cv", "--test-size"))

    def _checked(self, cv: int, held_out: str, lower: tuple[str, ...] = ("--cv",)) -> Split:
        """The split itself, when each class has `cv` training images (else fit's one-line error)."""
        from featx.classify._fitting import check_training_part

        check_training_part(self.classes, self.labels[self.train], cv, held_out, lower)
        return self

    def without(self, keep: np.ndarray, cv: int) -> Split:
        """The split of the images `keep` (a mask over paths) only; each part keeps its images."""
        position = np.cumsum(keep) - 1
        return Split(tuple(p for p, k in zip(self.paths, keep) if k), tuple(k for k, kept in zip(self.keys, keep) if kept),
                     self.labels[keep], self.classes, position[self.train[keep[self.train]]],
                     position[self.test[keep[self.test]]])._checked(cv, "leaving out the images that cannot be read")

    def folds(self, cv: int, seed: int, scored: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The CV folds of the training part (indices into it), the same for every candidate. `scored` (a mask
        over the training part): only those images are held out, in `cv` stratified folds; the others are in
        every training fold."""
        from sklearn.model_selection import StratifiedKFold

        y = self.labels[self.train]
        held = np.arange(len(y)) if scored is None else np.flatnonzero(scored)
        folds = StratifiedKFold(cv, shuffle=True, random_state=seed).split(held, y[held])
        return [(np.setdiff1d(np.arange(len(y)), held[test]), held[test]) for _, test in folds]


def listed(failures: Sequence[tuple[str, str]], what: str) -> str:
    """"N what: path: why; ..." on one line (`failure_line`: the first few named, the others counted)."""
    from featx.images._failures import failure_line

    return f"{len(failures)} {what}: {failure_line(failures)}"


def unseen(weights: Sequence[str | None], split: Split, cv: int) -> np.ndarray | None:
    """A mask over the training part of the images no fine-tuned file learned from, when some did and each class
    keeps `cv` images (cross-validation scores on those only: a network knows the labels of the others, so a
    score on them is optimistic); else None."""
    learned = set().union(*(learned_from(str(w)) for w in weights if w is not None))
    mask = np.array([split.keys[i] not in learned for i in split.train], dtype=bool)
    counts = np.bincount(split.labels[split.train][mask], minlength=len(split.classes))
    return mask if not mask.all() and counts.min() >= cv else None


def fold_files(weights: str, cv: int) -> list[str]:
    """Those of the `cv` networks `featx finetune --folds` trained beside `weights` (each without one fold of its
    images; `fold_path`) that are there, in fold order."""
    from featx.backbones._weights import fold_path

    return [str(f) for f in (fold_path(weights, k, cv) for k in range(1, cv + 1)) if f.is_file()]


@dataclass(frozen=True)
class CrossFit:
    """Cross-fitted fine-tuned files: for each file that learned from training images, the networks each trained
    without one fold (`fold_files`), and those folds (indices into the training part, as `Split.folds`): fold k's
    images get their features from network k, which never saw them. `scored` (a mask over the training part):
    the images one network left out; those none was fine-tuned on (unreadable to it) sit in every training fold."""

    files: dict[str, tuple[str, ...]]
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]
    scored: np.ndarray

    @classmethod
    def of(cls, weights: Sequence[str | None], split: Split, cv: int) -> tuple[CrossFit | None, str]:
        """The cross-fit of the files that learned from training images, or None and why not ("" when no file
        learned from any, or none has fold networks)."""
        from featx.backbones._weights import fold_paths, safetensors_metadata

        learned = list(seen_in_training(weights, split))
        files = {w: tuple(fold_files(w, cv)) for w in learned}
        if not any(files.values()) and not any(fold_paths(w) for w in learned):
            return None, ""
        if missing := [w for w, found in files.items() if len(found) < cv]:
            others = ", ".join(f.name for f in fold_paths(missing[0])) or "none"
            return None, (f"{missing[0]} has no {cv} fold networks beside it (featx finetune --folds {cv}; found: "
                          f"{others}): the CV scores are not cross-fitted")
        train_keys, y = [split.keys[i] for i in split.train], split.labels[split.train]
        partitions = set()
        for w, found in files.items():
            recorded = [safetensors_metadata(f) for f in found]
            if [r.get("fold") for r in recorded] != [[k, cv] for k in range(1, cv + 1)]:
                return None, f"the fold networks of {w} do not record folds 1 to {cv} of {cv} (renamed?)"
            held = np.array([[key not in seen for key in train_keys] for seen in (set(r.get("trained_on", ())) for r in recorded)])
            count = held.sum(axis=0)  # 1: left out by one network; cv: by all (not fine-tuned on: unreadable to it)
            if not ((count == 1) | (count == cv)).all() or not (count == 1).any():
                return None, f"the fold networks of {w} were not fine-tuned on this training part"
            partitions.add(tuple(tuple(np.flatnonzero(h & (count == 1))) for h in held))
        if len(partitions) > 1:
            return None, "the fold networks of " + ", ".join(files) + " left out different folds"
        held = [np.array(fold, dtype=np.int64) for fold in partitions.pop()]
        folds = tuple((np.setdiff1d(np.arange(len(y)), fold), fold) for fold in held)
        if any(len(np.unique(y[fit])) < len(split.classes) for fit, _ in folds):
            return None, "a fold of the fold networks leaves a class out of its training part"
        scored = np.zeros(len(y), dtype=bool)
        scored[np.concatenate(held)] = True
        return cls(files, folds, scored), ""


def seen_in_training(weights: Sequence[str | None], split: Split) -> dict[str, int]:
    """How many images of the training part each fine-tuned file learned from (files with any): its network
    knows their labels, so cross-validation on them is optimistic."""
    keys = {split.keys[i] for i in split.train}
    counts = {str(file): len(learned_from(str(file)) & keys) for file in weights if file is not None}
    return {file: n for file, n in counts.items() if n}


def check_no_leak(weights: Sequence[str | None], split: Split) -> None:
    """Refuse weights fine-tuned on any image of the test part (one line naming the file)."""
    keys = {split.keys[i] for i in split.test}
    for file in (str(w) for w in weights if w is not None):
        if n := len(trained_on(file) & keys):
            raise BadInputError(f"{file} was fine-tuned on {n} image(s) of the test part: its scores would "
                                "be optimistic; fine-tune on the training part only, or use another split")

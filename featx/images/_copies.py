"""Copies told from look-alikes by their pixels (featx audit): two grey thumbnails aligned over a small
search of crops, then compared locally (torch-free).

A re-encoded, resized or slightly cropped copy, once aligned, differs from its source only by resampling
and compression noise, spread evenly; a distinct image as alike as a neighbouring ELPV cell of one module
correlates as well overall (0.997-0.998 at 96 px, above some 2% crops) but differs somewhere: a crack, a
mark, its own grain. So the check is the largest local difference of the aligned images (standardised,
smoothed), not their correlation (measured, docs/audit.md "Copies").
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

SIDE = 128  # grey thumbnail kept per image (16 KB), squashed to a square
SIZE = 96  # side at which a crop of one thumbnail and the whole other one are compared
SEARCH = 48  # side at which the crops are searched (the best one by correlation): 2x less time than at SIZE
CROP_STEP, CROP_MOST = 0.005, 0.06  # share of each side cut off, searched: centred in steps of 0.5%, and
SHIFT_STEP = 0.01  # in steps of 1% shifted by as much towards each side and corner
SMOOTH, MARGIN = 1.5, 4  # Gaussian sigma of the difference map, and its border left out (pixels at SIZE)
DIFFERENCE = 0.11  # largest local difference (in standard deviations of the images) of a copy: docs/audit.md


def thumbnail(path: str, key: str | None = None) -> np.ndarray | None:
    """The file's grey SIDE x SIDE thumbnail (uint8; upright, decoded as for extraction), or None when it
    cannot be read or decoded, or no longer holds the content `key`."""
    from featx.images._content import content_key, read_bytes
    from featx.images._decode import DecodeError, decode

    try:
        data = read_bytes(path)
        if key is not None and content_key(data) != key:
            return None
        image = decode(data, SIDE).convert("L")
    except (OSError, DecodeError):
        return None
    return np.asarray(image.resize((SIDE, SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0))


def crop_boxes(step: float = CROP_STEP, most: float = CROP_MOST, shift: float = SHIFT_STEP) -> list[tuple[float, float, float, float]]:
    """Boxes (in SIDE pixels) of the crops searched: c = 0, step, ... most cut off each side, centred, and
    for c a multiple of `shift` also shifted by c towards each side and corner (a crop of 2c from a corner)."""
    boxes = []
    for k in range(round(most / step) + 1):
        c = k * step
        shifts = (-c, 0, c) if c and round(c / shift, 6).is_integer() else (0,)
        for dx in shifts:
            for dy in shifts:
                boxes.append(((c + dx) * SIDE, (c + dy) * SIDE, (1 - c + dx) * SIDE, (1 - c + dy) * SIDE))
    return boxes


BOXES = crop_boxes()


def _views(thumb: np.ndarray, boxes: Sequence[tuple[float, float, float, float]], size: int = SIZE) -> np.ndarray:
    """Each box of `thumb` resampled to size x size, standardised (mean 0, variance 1): boxes x size^2."""
    image = Image.fromarray(thumb).convert("F")
    views = np.stack([np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box)).ravel() for box in boxes])
    views -= views.mean(axis=1, keepdims=True)
    return views / np.maximum(views.std(axis=1, keepdims=True), 1e-6)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest local difference of two standardised SIZE^2 views: |a - b| smoothed, the border left out."""
    from scipy.ndimage import gaussian_filter

    local = gaussian_filter((a - b).reshape(SIZE, SIZE), SMOOTH)[MARGIN:-MARGIN, MARGIN:-MARGIN]
    return float(np.abs(local).max())


def pixel_differences(thumb: Callable[[int], np.ndarray | None], a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """For each pair (a[i], b[i]) of image numbers: the largest local difference once aligned (`difference`;
    copies: at most DIFFERENCE), the crop of either image that correlates best with the other one whole;
    NaN when either thumbnail is None. `thumb(i)`: image i's thumbnail (the caller caches them)."""
    with _one_blas_thread():
        return _differences(thumb, a, b)


def turned_differences(thumb: Callable[[int], np.ndarray | None], a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """`pixel_differences` with image a[i] also rotated and mirrored (the 7 other symmetries of the square): the
    smallest, so that a turned or mirrored copy is not taken for a distinct image. 14x the work of a pair:
    for the few pairs a check would otherwise refute."""
    def turned(k: int, x: int) -> Callable[[int], np.ndarray | None]:
        def view(r: int) -> np.ndarray | None:
            t = thumb(r)
            if t is None or r != x:
                return t
            return np.ascontiguousarray(np.rot90(np.fliplr(t) if k >= 4 else t, k % 4))
        return view

    found = np.full(len(a), np.nan)
    with _one_blas_thread():
        for i, (x, y) in enumerate(zip(a, b)):
            found[i] = np.nanmin([_differences(turned(k, int(x)), [int(x)], [int(y)])[0] for k in range(1, 8)] + [np.inf])
    found[np.isinf(found)] = np.nan
    return found


def _one_blas_thread():
    """One BLAS thread: the products are small, and BLAS threads spun cost 2x the CPU (measured)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _differences(thumb: Callable[[int], np.ndarray | None], a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    partners: dict[int, list[tuple[int, int]]] = {}
    for i, (x, y) in enumerate(zip(a, b)):
        partners.setdefault(int(x), []).append((i, int(y)))
        partners.setdefault(int(y), []).append((i, int(x)))
    whole: dict[int, np.ndarray | None] = {}  # each image whole at SEARCH, standardised
    for x in partners:
        t = thumb(x)
        whole[x] = None if t is None else _views(t, BOXES[:1], SEARCH)[0]
    best = np.full(len(a), -np.inf)  # correlation of the best alignment found so far
    aligned: list[tuple[int, int, int] | None] = [None] * len(a)  # (cropped image, box, whole image)
    for x, pairs in partners.items():  # each image's crops once, against all its partners
        pairs = [(i, y) for i, y in pairs if whole[y] is not None]
        if whole[x] is None or not pairs:
            continue
        crops = _views(thumb(x), BOXES, SEARCH)
        others = np.stack([whole[y] for _, y in pairs])
        correlation = crops @ others.T  # boxes x pairs, times SEARCH^2
        top = correlation.argmax(axis=0)
        for (i, y), k, value in zip(pairs, top.tolist(), correlation[top, np.arange(len(pairs))].tolist()):
            if value > best[i]:
                best[i], aligned[i] = value, (x, k, y)
    found = np.full(len(a), np.nan)
    for i, how in enumerate(aligned):
        if how is not None:
            x, k, y = how
            found[i] = difference(_views(thumb(x), BOXES[k : k + 1])[0], _views(thumb(y), BOXES[:1])[0])
    return found

"""`featx audit` at scale: time and peak memory of an audit of --images real image files (default 20,000).

The files: every ELPV cell, plus variants of it until --images: a crop of 6-15% of each side, a turn of
1-4 degrees and a brightness gain of 0.9-1.1, each drawn at random, saved as PNG under the cell's class
(real images that look alike, as several photographs of one product do: they are the audit's costly case,
candidate near-duplicate pairs whose pixels must be compared). They are extracted once with the default
backbone at --image-size (default 128: the audit's cost depends on the number of images and the feature
dimension, 1280 at any input size, not on the extraction's resolution; a rerun reuses the store).

Each audit runs in its own process (`featx audit`, default settings, --clf auto), so its peak resident
memory is its own; printed: wall and CPU seconds, peak memory, the audit's step lines, and the same figures
for the baseline in the same run, the audit of the 2,624 original cells alone (the ratio, not the seconds,
is what carries between machines).

    python benchmarks/audit_scale.py [--images 20000] [--work DIR] [--image-size 128] [--n-jobs 2]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import featx
from featx.datasets import load_elpv


def variant(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A look-alike of `image`: cropped 6-15% per side, turned 1-4 degrees either way, brightness x 0.9-1.1."""
    w, h = image.size
    left, top, right, bottom = (rng.uniform(0.06, 0.15, 4) * [w, h, w, h]).round().astype(int)
    turned = image.crop((left, top, w - right, h - bottom)).rotate(rng.choice([-1, 1]) * rng.uniform(1, 4),
                                                                   resample=Image.BILINEAR, expand=False)
    pixels = np.asarray(turned, dtype=np.float32) * rng.uniform(0.9, 1.1)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)


def write_folder(root: Path, n_images: int, seed: int = 0) -> tuple[Path, Path]:
    """root/all/<class>/ (every cell and its variants, n_images files) and root/cells/<class>/ (the cells
    alone); existing files are kept."""
    elpv = load_elpv()
    n_cells = len(elpv.filenames)
    for i, (path, label) in enumerate(zip(elpv.filenames, elpv.target)):
        name = elpv.target_names[label]
        for folder in ("all", "cells"):
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            link = root / folder / name / Path(path).name
            if not link.exists():
                link.symlink_to(path)
        made = (n_images - n_cells) // n_cells + (i < (n_images - n_cells) % n_cells)
        image = None
        for v in range(made):
            target = root / "all" / name / f"{Path(path).stem}-v{v}.png"
            draw = np.random.default_rng([seed, i, v])  # each variant the same on a rerun
            if not target.exists():
                image = image or Image.open(path).convert("L")
                variant(image, draw).save(target)
    return root / "all", root / "cells"


PEAK = ("import atexit, sys\n"
        "atexit.register(lambda: print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')), "
        "file=sys.stderr, end=''))\n"
        "from featx.cli import main\nmain()")  # VmHWM: the peak of this program alone (not of the forked parent)


def measured_audit(store: Path, data: Path, out: Path, n_jobs: int) -> tuple[float, float]:
    """`featx audit` in a child process; prints its step lines, wall and CPU seconds and peak resident memory
    (its /proc VmHWM: getrusage's children's peak also counts the parent forked before the exec, here more than
    1 GB after the extraction; joblib's workers not included, the features reach them memory-mapped); returns
    (wall, CPU) seconds."""
    command = [sys.executable, "-c", PEAK, "audit", str(store), "--data", str(data), "--out", str(out), "--n-jobs", str(n_jobs)]
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    print(done.stderr.strip() + "\n" + done.stdout.strip())
    if done.returncode:
        raise SystemExit(f"featx audit failed ({done.returncode})")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak = int(done.stderr.strip().splitlines()[-1].split()[1]) / 2**20  # "VmHWM:  123 kB"
    print(f"audit of {data}: {wall:.0f} s wall, {cpu:.0f} s CPU, peak memory {peak:.2f} GB", flush=True)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--work", default="/tmp/featx-audit-scale")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.work)
    start = time.perf_counter()
    everything, cells = write_folder(work, args.images)
    print(f"{args.images} files under {everything} ({time.perf_counter() - start:.0f} s)", flush=True)
    store = work / "store.h5"
    for folder in (everything, cells):  # the cells' files too: their contents are in the store already
        featx.extract(folder, store=store, image_size=args.image_size, progress=False)
    figures = {}
    for name, data in (("cells", cells), ("all", everything)):  # the baseline first: its peak is then its own
        figures[name] = measured_audit(store, data, work / f"audit-{name}", args.n_jobs)
    ratio = [a / b for a, b in zip(figures["all"], figures["cells"])]
    print(f"{args.images} images vs the 2,624 cells: {ratio[0]:.1f}x wall, {ratio[1]:.1f}x CPU "
          f"({args.images / 2624:.1f}x the images)")


if __name__ == "__main__":
    main()

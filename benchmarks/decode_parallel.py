"""Decoding cost per format and size, and decode parallelism: threads against worker processes.

    python benchmarks/decode_parallel.py [--workers 1,2,4] [--photos 28] [--cells 512]

First the cost of featx's decode + resize + crop of one image on one core (efficientnet_lite0's 256/224
preprocessing), per format and size, in both decode modes. Then images/s of the same work done by featx's
`ImageFiles` (read, hash check, decode, resize, crop) over files on disk, for 12-megapixel JPEGs
(benchmarks/photos.py) and ELPV's 300x300 PNGs: in this process, in N threads (Pillow drops the GIL while
decoding and resampling) and in N DataLoader worker processes (what `featx extract` uses; the tensors are
collated and sent back to this process).
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from photos import write_photo_folder
from PIL import Image

from featx.backbones._registry import DEFAULT_MODEL, get_backbone
from featx.datasets import load_elpv
from featx.features._loader import ImageFiles, make_loader
from featx.images._content import content_key


def cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children (the DataLoader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def per_image_ms(blobs: list[bytes], pre) -> float:
    """CPU ms per image: unlike wall time, hardly changed by other jobs sharing the cores."""
    start = cpu_seconds()
    for blob in blobs:
        pre.load(blob)
    return 1000 * (cpu_seconds() - start) / len(blobs)


def costs(photos: list[Path], cells: list[str], pre) -> None:
    big = [p.read_bytes() for p in photos[:8]]
    web = []
    for blob in big:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(blob)).resize((500, 375), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        web.append(buffer.getvalue())
    pngs = []
    for blob in big[:3]:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(blob)).save(buffer, "PNG", compress_level=6)
        pngs.append(buffer.getvalue())
    small = [Path(p).read_bytes() for p in cells[:200]]
    print(f"decode + resize + crop, CPU ms per image ({DEFAULT_MODEL}: resize {pre.resize}, crop {pre.crop}):")
    print(f"{'images':<28} {'full':>7} {'reduced':>8} {'ratio':>6}")
    for name, blobs in (("12 MP JPEG (4000x3000)", big), ("12 MP PNG", pngs), ("web JPEG (500x375)", web),
                        ("ELPV PNG (300x300, grey)", small)):
        full, reduced = per_image_ms(blobs, pre.with_decode("full")), per_image_ms(blobs, pre.with_decode("reduced"))
        print(f"{name:<28} {full:7.1f} {reduced:8.1f} {full / reduced:6.2f}", flush=True)


def rate(run, files: ImageFiles, n: int) -> str:
    """'images/s (CPU ms per image)' of `run(files, n)`."""
    start, cpu = time.perf_counter(), cpu_seconds()
    run(files, n)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return f"{len(files) / wall:.1f} ({1000 * cpu / len(files):.1f})"


def threaded(files: ImageFiles, threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(files.__getitem__, range(len(files))):
            pass


def processes(files: ImageFiles, workers: int, batch_size: int = 32) -> None:
    for _ in make_loader(files, batch_size, workers):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4", help="thread and process counts to time")
    parser.add_argument("--photos", type=int, default=28, help="12-megapixel JPEGs")
    parser.add_argument("--cells", type=int, default=512, help="ELPV PNGs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pre = get_backbone(DEFAULT_MODEL).preprocessing().with_decode("reduced")
    cells = list(load_elpv().filenames[: args.cells])
    with tempfile.TemporaryDirectory() as tmp:
        photos = write_photo_folder(Path(tmp), max(1, args.photos // 14), (4000, 3000))
        costs(photos, cells, pre)
        load = os.getloadavg()[0]
        print(f"\nimages/s (CPU ms per image) of featx's decode stage, {os.cpu_count()} cores "
              f"(load average {load:.1f} at the start):")
        counts = [int(n) for n in args.workers.split(",")]
        print(f"{'images':<24} " + " ".join(f"{f'{n} threads':>15} {f'{n} processes':>15}" for n in counts))
        for name, paths in (("12 MP JPEG, reduced", [str(p) for p in photos]), ("ELPV PNG", cells)):
            files = ImageFiles(paths, [content_key(Path(p).read_bytes()) for p in paths], pre)
            rates = [r for n in counts for r in (rate(threaded, files, n), rate(processes, files, n))]
            print(f"{f'{name} ({len(paths)})':<24} " + " ".join(f"{r:>15}" for r in rates), flush=True)


if __name__ == "__main__":
    main()

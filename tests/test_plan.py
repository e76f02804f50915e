"""An extraction run is a pure plan (what to extract: dedup against the store, stat index, content keys) and a
compute/commit loop; files and in-memory images are one inputs object each, with the same interface (#26)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import featx
from PIL import Image
from featx.features._extraction import ArrayInputs, FileInputs, RunPlan, plan_run
from featx.features._store import FeatureStore
from featx.images._inputs import find_images
from featx.images._memory import as_rgb, image_key

SMALL = {"model": "mobilenet_v3_small", "weights": "random", "engine": "torch", "progress": False}


def test_a_plan_reads_the_store_writes_nothing_and_says_what_to_compute(elpv_copy, tmp_path):
    store = tmp_path / "s.h5"
    files = sorted(elpv_copy.rglob("*.png"))
    featx.extract([str(f) for f in files[:8]], store=store, **SMALL)
    shutil.copy(files[0], elpv_copy / "copy_of_a_known_cell.png")
    (elpv_copy / "broken.png").write_bytes(b"not an image")
    before = store.read_bytes()
    with FeatureStore.open(store) as opened:  # read-only: a plan that wrote would fail here
        plan = plan_run(FileInputs(find_images(elpv_copy)), opened)
    assert isinstance(plan, RunPlan) and store.read_bytes() == before
    # the copy's content is known; the broken file's bytes are new (they fail when decoded)
    assert plan.n_cached == 8 and len(plan.pending) == len(files) - 8 + 1 and plan.failures == []
    assert {len(group) for group in plan.pending.values()} == {1}
    report = featx.extract(elpv_copy, store=store, **SMALL)
    assert (report.n_cached, report.n_extracted, report.n_failed) == (8, len(files) - 8, 1)


def test_in_memory_images_are_planned_through_the_same_interface(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    images = [as_rgb(Image.open(f)) for f in sorted(elpv_folder.rglob("*.png"))[:3]]
    keys = [image_key(image) for image in images]
    t = featx.PretrainedFeatures(**{k: v for k, v in SMALL.items() if k != "progress"}, cache=store).fit(images)
    t.transform(images[:2])
    with FeatureStore.open(store) as opened:
        plan = plan_run(ArrayInputs(images + images[:1], keys + keys[:1], ["a", "b", "c", "a again"]), opened)
    assert plan.n_cached == 2 and list(plan.pending) == [keys[2]] and plan.entries == [] and plan.new_stats == {}


def test_planning_a_rerun_imports_no_torch(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    featx.extract(elpv_folder, store=store, **SMALL)
    probe = (
        "import sys\nfrom featx.features._extraction import FileInputs, plan_run\n"
        "from featx.features._store import FeatureStore\nfrom featx.images._inputs import find_images\n"
        f"with FeatureStore.open({str(store)!r}) as s:\n"
        f"    plan = plan_run(FileInputs(find_images({str(elpv_folder)!r})), s)\n"
        "print(len(plan.pending), 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["0", "False"]

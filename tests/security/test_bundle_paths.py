"""Nothing a manifest names may point outside its bundle (issue 16).

A manifest whose ``model_file`` or ``golden`` is absolute, climbs out with ``..``, is not listed in
``files`` or is reached through a symlink made ``edgec verify`` report "ok" on a model that is not the
bundle's, ``edgec publish`` upload an archive without the verified model, and the device's health
check pass while it ran the other slot's model. Every reader now refuses with exit 8 (integrity),
naming the field. One tiny ONNX bundle is built per module; each test tampers with copies of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgec.core import errors
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_conv_onnx

NOT_PLAIN = "is not a plain relative path inside the bundle"
NOT_LISTED = "is not listed in the manifest's files"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fp32 ONNX bundle, built once for the module."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    folder = tmp_path_factory.mktemp("bundle-paths")
    source = make_conv_onnx(folder / "tiny.onnx")
    return build(BuildConfig(source=str(source), out=folder / "out", name="tiny", cache=False)).bundle_dir


def edit_manifest(bundle: Path, drop: tuple[str, ...] = (), rehash: bool = False, **fields: Any) -> None:
    """Set manifest fields, drop ``files`` entries, and (``rehash``) record the files' current hashes."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    manifest["files"] = [f for f in manifest["files"] if f["path"] not in drop]
    if rehash:
        for entry in manifest["files"]:
            data = (bundle / entry["path"]).read_bytes()
            entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def pair(built: Path, root: Path) -> tuple[Path, Path]:
    """Two intact copies ``root/a`` and ``root/b`` of the built bundle (like a device's two slots)."""
    return shutil.copytree(built, root / "a"), shutil.copytree(built, root / "b")


def model_outside_absolute(a: Path, b: Path) -> str:
    (b / "model.onnx").unlink()
    edit_manifest(b, drop=("model.onnx",), model_file=str(a / "model.onnx"))
    return f"manifest field model_file '{a / 'model.onnx'}' {NOT_PLAIN}"


def model_outside_dotdot(a: Path, b: Path) -> str:
    (b / "model.onnx").unlink()
    edit_manifest(b, drop=("model.onnx",), model_file="../a/model.onnx")
    return f"manifest field model_file '../a/model.onnx' {NOT_PLAIN}"


def golden_outside(a: Path, b: Path) -> str:
    (b / "golden.npz").unlink()
    edit_manifest(b, drop=("golden.npz",), golden="../a/golden.npz")
    return f"manifest field golden '../a/golden.npz' {NOT_PLAIN}"


def model_unlisted(a: Path, b: Path) -> str:
    shutil.copyfile(b / "model.onnx", b / "extra.onnx")
    edit_manifest(b, model_file="extra.onnx")
    return f"manifest field model_file 'extra.onnx' {NOT_LISTED}"


def model_symlinked(a: Path, b: Path) -> str:
    (b / "blobs").mkdir()
    (b / "model.onnx").rename(b / "blobs" / "model.onnx")
    (b / "model.onnx").symlink_to(Path("blobs") / "model.onnx")
    return "model.onnx is a symlink; bundles hold plain files"


def model_parent_symlinked(a: Path, b: Path) -> str:
    (b / "real").mkdir()
    (b / "model.onnx").rename(b / "real" / "model.onnx")
    (b / "m").symlink_to("real")
    edit_manifest(b, rehash=False, model_file="m/model.onnx",
                  files=[{**f, "path": "m/model.onnx"} if f["path"] == "model.onnx" else f
                         for f in json.loads((b / "manifest.json").read_text())["files"]])
    return "m is a symlink; bundles hold plain files"


ATTACKS: dict[str, Callable[[Path, Path], str]] = {
    "absolute_model_file": model_outside_absolute,
    "dotdot_model_file": model_outside_dotdot,
    "golden_outside": golden_outside,
    "unlisted_model_file": model_unlisted,
    "symlinked_model_file": model_symlinked,
    "symlinked_model_parent": model_parent_symlinked,
}


@pytest.fixture(params=sorted(ATTACKS))
def attacked(request: pytest.FixtureRequest, built: Path, tmp_path: Path) -> tuple[Path, str]:
    """Bundle ``b`` tampered one way (beside an intact ``a``), and the message the refusal must carry."""
    a, b = pair(built, tmp_path)
    return b, ATTACKS[request.param](a, b)


def run_shim(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m edgec_shim ARGS`` run inside the bundle with only the bundle on the import path."""
    env = {**os.environ, "PYTHONPATH": str(bundle)}
    return subprocess.run([sys.executable, "-m", "edgec_shim", *args], capture_output=True, text=True,
                          cwd=bundle, env=env, timeout=300)


# -- edgec verify / inspect / debug -----------------------------------------------------------------

def test_verify_refuses_a_manifest_name_outside_the_bundle(attacked: tuple[Path, str]) -> None:
    bundle, message = attacked
    proc = run_cli("verify", str(bundle))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, message)
    assert proc.stdout == ""


def test_inspect_refuses_a_model_file_outside_the_bundle(built: Path, tmp_path: Path) -> None:
    a, b = pair(built, tmp_path)
    message = model_outside_absolute(a, b)
    proc = run_cli("inspect", str(b))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, message)


def test_inspect_refuses_a_model_file_symlinked_out_of_the_bundle(built: Path, tmp_path: Path) -> None:
    a, b = pair(built, tmp_path)
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to(a / "model.onnx")
    proc = run_cli("inspect", str(b))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "model.onnx is a symlink")


def test_debug_refuses_a_model_file_outside_the_bundle_before_writing(built: Path, tmp_path: Path) -> None:
    a, b = pair(built, tmp_path)
    message = model_outside_dotdot(a, b)
    proc = run_cli("debug", str(b), "--reference", str(a))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, message)
    assert not (b / "layers.json").exists()


def test_debug_refuses_a_reference_bundle_whose_model_file_is_outside(built: Path, tmp_path: Path) -> None:
    a, b = pair(built, tmp_path)
    message = model_outside_absolute(a, b)
    proc = run_cli("debug", str(a), "--reference", str(b))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, message)
    assert not (a / "layers.json").exists()


def test_verify_of_a_golden_file_that_cannot_be_read_is_one_integrity_line(built: Path, tmp_path: Path) -> None:
    _, b = pair(built, tmp_path)
    (b / "golden.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    edit_manifest(b, rehash=True)  # the hashes match: only reading the golden data can fail
    proc = run_cli("verify", str(b))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "golden.npz", "cannot be read")


def test_verify_of_a_model_file_the_runtime_cannot_load_is_one_integrity_line(built: Path, tmp_path: Path) -> None:
    _, b = pair(built, tmp_path)
    (b / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf")
    edit_manifest(b, rehash=True)
    proc = run_cli("verify", str(b))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, "model.onnx", "cannot be loaded")


def test_verify_refuses_a_model_file_that_is_a_directory_of_unlisted_files(built: Path, tmp_path: Path) -> None:
    _, b = pair(built, tmp_path)
    (b / "model.onnx").unlink()
    (b / "model.onnx").mkdir()
    edit_manifest(b, drop=("model.onnx",))
    proc = run_cli("verify", str(b))
    assert_one_line_error(proc, errors.EXIT_INTEGRITY, f"manifest field model_file 'model.onnx' {NOT_LISTED}")


# -- the shim, shipped inside the bundle --------------------------------------------------------------

def test_shim_verify_refuses_a_manifest_name_outside_the_bundle(attacked: tuple[Path, str]) -> None:
    bundle, message = attacked
    proc = run_shim(bundle, "verify", ".")
    assert proc.returncode == 8, proc.stderr
    assert proc.stdout == "" and proc.stderr.strip() == f"edgec_shim: error: {message}"


def test_shim_bench_refuses_golden_data_outside_the_bundle(built: Path, tmp_path: Path) -> None:
    a, b = pair(built, tmp_path)
    message = golden_outside(a, b)
    proc = run_shim(b, "bench", ".", "--runs", "2")
    assert proc.returncode == 8, proc.stderr
    assert proc.stdout == "" and proc.stderr.strip() == f"edgec_shim: error: {message}"


def test_shim_verify_of_a_malformed_files_entry_is_an_integrity_error(built: Path, tmp_path: Path) -> None:
    _, b = pair(built, tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["files"].append({"path": "model.onnx"})
    (b / "manifest.json").write_text(json.dumps(manifest))
    proc = run_shim(b, "verify", ".")
    assert proc.returncode == 8, proc.stderr
    assert proc.stderr.strip() == f"edgec_shim: error: manifest files entry {len(manifest['files'])} is malformed: " \
                                  "expected path, sha256 (64 hex digits) and size (bytes)"


def test_shim_ships_the_shared_bundle_file_check(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert "edgec_shim/bundle_files.py" in {f["path"] for f in manifest["files"]}
    assert (built / "edgec_shim" / "bundle_files.py").read_text().count("import edgec") == 0


# -- the device agent's health check, serve, publish ------------------------------------------------

def device_with_slots(built: Path, root: Path) -> tuple[Path, Path]:
    """A device directory: ``slots/a`` (the committed model), ``slots/b`` and ``current -> slots/b``."""
    a, b = pair(built, root / "slots")
    (root / "current").symlink_to(Path("slots") / "b")
    return a, b


def test_health_check_refuses_a_slot_whose_model_is_the_other_slots(built: Path, tmp_path: Path) -> None:
    from edgec.cloud_sync.health import check_health, verify_files

    a, b = device_with_slots(built, tmp_path)
    message = model_outside_dotdot(a, b)
    for check in (verify_files, check_health):
        with pytest.raises(errors.IntegrityError, match="manifest field model_file") as caught:
            check(tmp_path / "current")
        assert message in caught.value.message


def test_health_check_refuses_golden_data_from_the_other_slot(built: Path, tmp_path: Path) -> None:
    from edgec.cloud_sync.health import check_health

    a, b = device_with_slots(built, tmp_path)
    message = golden_outside(a, b)
    with pytest.raises(errors.IntegrityError) as caught:
        check_health(tmp_path / "current")
    assert message in caught.value.message


def test_serve_refuses_to_load_a_bundle_whose_model_is_outside(built: Path, tmp_path: Path) -> None:
    from edgec.cloud_sync.serving.host import load_bundle

    a, b = pair(built, tmp_path)
    message = model_outside_absolute(a, b)
    with pytest.raises(errors.IntegrityError) as caught:
        load_bundle(b)
    assert caught.value.message == message


@pytest.fixture(scope="module")
def keys_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tuf")
    from tests.support.cli import cli

    folder = tmp_path_factory.mktemp("bundle-paths-keys") / "keys"
    code, _, err = cli("keys", "init", "--keys", str(folder))
    assert code == 0, err
    return folder


def assert_integrity_line(err: str, message: str) -> None:
    """One ``edgec: integrity error:`` line carrying ``message`` (``--no-verify`` prefixes the bundle's name)."""
    assert err.count("\n") == 1 and err.startswith("edgec: integrity error: ") and message in err, err


def publish(bundle: Path, keys: Path, store: Path, *extra: str) -> tuple[int, str, str]:
    from tests.support.cli import cli

    return cli("publish", str(bundle), "--store", str(store), "--keys", str(keys), "--channel", "stable", *extra)


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no_verify"])
def test_publish_refuses_a_model_file_outside_the_bundle_before_uploading(
        built: Path, tmp_path: Path, keys_template: Path, verify: bool) -> None:
    a, b = pair(built, tmp_path)
    message = model_outside_dotdot(a, b)
    code, out, err = publish(b, keys_template, tmp_path / "store", *(() if verify else ("--no-verify",)))
    assert code == errors.EXIT_INTEGRITY, err
    assert_integrity_line(err, message)
    assert out == ""
    assert not (tmp_path / "store" / "bundles").exists()


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no_verify"])
def test_publish_refuses_a_bundle_without_its_golden_file_before_uploading(
        built: Path, tmp_path: Path, keys_template: Path, verify: bool) -> None:
    _, b = pair(built, tmp_path)
    (b / "golden.npz").unlink()
    edit_manifest(b, drop=("golden.npz",))
    code, out, err = publish(b, keys_template, tmp_path / "store", *(() if verify else ("--no-verify",)))
    assert code == errors.EXIT_INTEGRITY, err
    assert_integrity_line(err, f"manifest field golden 'golden.npz' {NOT_LISTED}")
    assert out == ""
    assert not (tmp_path / "store" / "bundles").exists()


def test_an_intact_bundle_still_verifies_everywhere(built: Path, tmp_path: Path) -> None:
    from edgec.cloud_sync.health import check_health

    _, b = device_with_slots(built, tmp_path)
    assert run_cli("verify", str(b)).returncode == 0
    assert run_shim(b, "verify", ".").returncode == 0
    assert check_health(tmp_path / "current").latency_ms > 0


# -- the shared check itself ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/etc/passwd", "../a/model.onnx", "sub/../../model.onnx", "..\\a\\model.onnx",
                                  "model.onnx\\..", "", "./model.onnx", "sub//model.onnx", "sub/", "C:/model.onnx",
                                  "c:model.onnx", "model\x00.onnx", "sub/./model.onnx"])
def test_only_plain_relative_names_pass(name: str) -> None:
    from edgec.runtime_shims.bundle_files import BundleFileError, plain_name

    with pytest.raises(BundleFileError, match="is not a plain relative path inside the bundle"):
        plain_name(name, "manifest field model_file")


@pytest.mark.parametrize("value", [None, 3, ["model.onnx"]])
def test_a_name_that_is_not_a_string_is_refused(value: object) -> None:
    from edgec.runtime_shims.bundle_files import BundleFileError, plain_name

    with pytest.raises(BundleFileError, match="is not a plain relative path"):
        plain_name(value, "manifest field golden")


def package_bundle(root: Path) -> tuple[Path, dict[str, Any]]:
    """A bundle whose model is a directory (Core ML ``model.mlpackage``) with every member listed."""
    members = {"model.mlpackage/Manifest.json": b"{}", "model.mlpackage/Data/model.mlmodel": b"spec",
               "model.mlpackage/Data/weights/weight.bin": b"\0" * 64, "golden.npz": b"golden"}
    files = []
    for rel, data in members.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    return root, {"model_file": "model.mlpackage", "golden": "golden.npz", "files": files}


def test_a_model_directory_whose_files_are_listed_passes(tmp_path: Path) -> None:
    from edgec.runtime_shims.bundle_files import check_bundle, named_path

    bundle, manifest = package_bundle(tmp_path)
    assert check_bundle(str(bundle), manifest) == 4
    assert named_path(str(bundle), manifest, "model_file") == os.path.join(str(bundle), "model.mlpackage")


def test_a_model_directory_with_an_unlisted_or_symlinked_member_is_refused(tmp_path: Path) -> None:
    from edgec.runtime_shims.bundle_files import BundleFileError, check_bundle

    bundle, manifest = package_bundle(tmp_path / "extra")
    (bundle / "model.mlpackage" / "Data" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleFileError, match="model.mlpackage/Data/extra.bin is not listed"):
        check_bundle(str(bundle), manifest)
    bundle, manifest = package_bundle(tmp_path / "link")
    (bundle / "model.mlpackage" / "Data" / "other").symlink_to(tmp_path)
    with pytest.raises(BundleFileError, match="model.mlpackage/Data/other is a symlink"):
        check_bundle(str(bundle), manifest)


def test_a_files_entry_outside_the_bundle_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from edgec.runtime_shims.bundle_files import BundleFileError, check_bundle

    bundle, manifest = package_bundle(tmp_path / "b")
    manifest["files"].append({"path": "../secret", "sha256": "0" * 64, "size": 1})
    with pytest.raises(BundleFileError, match="manifest files entry 5 path '../secret' is not a plain relative"):
        check_bundle(str(bundle), manifest)

"""The build farm: a 2-target x 2-precision matrix as Ray tasks on a local Ray instance (2 CPUs), bundles landing
in a local store folder and in moto's S3 server on 127.0.0.1, downloaded and verified; failing cells reported
with their family while the others land; no half bundle ever visible in the store."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.models import make_calib, make_conv_onnx

pytest.importorskip("obstore")
pytest.importorskip("openvino")
ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1"}
MATRIX = ["--target", "onnx,openvino", "--precision", "fp32,int8"]
NAMES = ["m-onnx-fp32", "m-onnx-int8", "m-openvino-fp32", "m-openvino-int8"]


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[str]:
    """A local Ray instance with 2 CPUs (its workers inherit the S3 test credentials and the test cache dir)."""
    for key, value in S3_ENV.items():
        os.environ.setdefault(key, value)
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (real HTTP), reached by obstore like a real bucket."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("farm-model")
    return make_conv_onnx(folder / "m.onnx"), make_calib(folder / "calib.npz")


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"farm-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=name)
    return f"s3://{name}/bundles?endpoint={endpoint}&region=us-east-1"


def build(capsys: pytest.CaptureFixture[str], model: tuple[Path, Path], *extra: str) -> tuple[int, Any, str]:
    from edgec.compiler.cli import main

    capsys.readouterr()
    code = main(["build", str(model[0]), *MATRIX, "--calib", str(model[1]), "--executor", "ray", "--json", "-q", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip().startswith("[") else None, captured.err


def fetch_and_verify(store_url: str, dest: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    from edgec.cloud_sync.farm_store import fetch_bundle
    from edgec.compiler.cli import main

    bundles = [str(fetch_bundle(store_url, name, dest)) for name in NAMES]
    capsys.readouterr()
    assert main(["verify", *bundles]) == 0
    return capsys.readouterr().out.splitlines()


def markers(folder: Path) -> set[str]:
    return {p.parent.name for p in folder.rglob(".edgec-entry.json")}


RECIPE = """
targets: [onnx, openvino]
precisions: [fp32, int8]
executor: ray
out-store: {store}
cache-store: cache-store          # relative to the recipe's folder
models:
  - source: {source}
    name: m
    calibration: {{data: {calib}}}
"""


def test_recipe_on_ray_lands_verified_bundles_in_a_local_store_and_shares_the_stage_cache_there(
        ray_instance: str, model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgec.cloud_sync.farm_store import StoreEntries
    from edgec.compiler.cli import main

    fetches: list[tuple[str, bool]] = []
    fetch = StoreEntries.fetch

    def recorded(self: StoreEntries, key: str, into: Path) -> bool:  # the driver's look-ups in the shared store
        found = fetch(self, key, into)
        fetches.append((key, found))
        return found

    monkeypatch.setattr(StoreEntries, "fetch", recorded)

    store, cache_store = tmp_path / "store", tmp_path / "cache-store"
    (tmp_path / "edgec.yaml").write_text(RECIPE.format(store=store.as_uri(), source=model[0], calib=model[1]))

    def build_recipe(*extra: str) -> list[dict[str, Any]]:
        capsys.readouterr()
        code = main(["build", "-f", str(tmp_path / "edgec.yaml"), "--json", "-q", *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return json.loads(captured.out)  # type: ignore[no-any-return]

    cells = build_recipe("--cache-dir", str(tmp_path / "driver-cache-1"))
    assert [c["status"] for c in cells] == ["built"] * 4
    assert [c["bundle"] for c in cells] == [f"{store.as_uri()}/{name}" for name in NAMES]
    assert all(c["parity"]["min_cosine"] > 0.999 for c in cells)
    lines = fetch_and_verify(store.as_uri(), tmp_path / "downloaded", capsys)
    assert len(lines) == 4 and all(line.startswith("ok ") and "parity within tolerance" in line for line in lines)
    shared = markers(cache_store)
    assert shared  # the driver's import, passes and reference went to the store

    assert fetches and not any(found for _, found in fetches)  # the first driver found nothing there

    # a second driver with an empty local cache takes every shared stage from the store, producing none again
    fetches.clear()
    build_recipe("--force", "--cache-dir", str(tmp_path / "driver-cache-2"))
    local = {p.name for shard in (tmp_path / "driver-cache-2").iterdir() for p in shard.iterdir()}
    assert fetches and all(found for _, found in fetches)
    assert {key for key, _ in fetches} == local and local <= shared


def test_ray_matrix_lands_bundles_in_s3_from_a_driver_joining_the_cluster_by_address(
        ray_instance: str, model: tuple[Path, Path], moto_endpoint: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = new_bucket(moto_endpoint)
    proc = subprocess.run([sys.executable, "-m", "edgec.compiler", "build", str(model[0]), *MATRIX, "--calib", str(model[1]),
                           "--executor", "ray", "--address", ray_instance, "--out", url, "-q"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **S3_ENV})
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.splitlines()
    assert table[-1] == "4 of 4 cells built"
    bucket = url.split("?")[0]
    assert [line.split()[-1] for line in table[2:6]] == [f"{bucket}/{name}" for name in NAMES]
    lines = fetch_and_verify(url, tmp_path / "downloaded", capsys)
    assert all("parity within tolerance" in line for line in lines)

    # the bundles exist now: a second build fails before importing anything, naming all four (exit 2)
    code, cells, err = build(capsys, model, "--out", url)
    assert code == 2 and cells is None
    assert err.count("\n") == 1 and err.startswith("edgec: config error: output bundles already exist")
    assert all(f"{bucket}/{name}" in err for name in NAMES)


def test_failed_upload_and_failed_gate_are_reported_by_family_while_the_other_cells_land(
        ray_instance: str, model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgec.cloud_sync.farm_store import bundle_exists, fetch_bundle
    from edgec.cloud_sync.store import open_store
    from edgec.core.errors import IntegrityError

    store_dir = tmp_path / "store"
    (store_dir / "m-openvino-fp32" / "model.xml").mkdir(parents=True)  # the store refuses that object's upload
    debris = open_store(store_dir)
    debris.put("m-onnx-fp32/model.onnx", b"half of a killed upload")  # files of a killed upload, no manifest
    debris.put("m-onnx-fp32/stale.bin", b"not in the new bundle")
    assert not bundle_exists(debris, "m-onnx-fp32")
    with pytest.raises(IntegrityError, match="not a complete bundle"):
        fetch_bundle(store_dir, "m-onnx-fp32", tmp_path / "dl")

    # int8 cells fail their gate on the worker (exit 7); openvino fp32 fails its upload (exit 9)
    code, cells, err = build(capsys, model, "--out", store_dir.as_uri(), "--min-cosine", "0.9999999")
    by_name = {f"m-{c['target']}-{c['precision']}": c for c in cells}
    assert [(by_name[n]["status"], by_name[n]["exit_code"]) for n in NAMES] == [
        ("built", 0), ("failed", 7), ("failed", 9), ("failed", 7)]
    assert code == 7  # the first failed cell in table order
    assert by_name["m-openvino-fp32"]["family"] == "sync error" and "model.xml" in by_name["m-openvino-fp32"]["error"]
    assert by_name["m-onnx-int8"]["family"] == "accuracy gate"
    store = open_store(store_dir)
    assert store.list("m-openvino-fp32/") == []  # what the failed upload had sent is gone
    assert not bundle_exists(store, "m-openvino-fp32") and not bundle_exists(store, "m-onnx-int8")
    assert "m-onnx-fp32/stale.bin" not in {m.key for m in store.list("m-onnx-fp32/")}  # the debris was cleared first
    landed = fetch_bundle(store_dir, "m-onnx-fp32", tmp_path / "dl")
    assert sorted(p.name for p in landed.iterdir() if p.is_file()) == ["golden.npz", "manifest.json", "model.onnx"]


def test_missing_ray_is_exit_3_naming_the_extra(model: tuple[Path, Path], tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None; from edgec.compiler.cli import main; "
            f"sys.exit(main(['build', {str(model[0])!r}, '--executor', 'ray', '--out', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and "pip install 'edgec[ray]'" in proc.stderr
    assert not (tmp_path / "out").exists()

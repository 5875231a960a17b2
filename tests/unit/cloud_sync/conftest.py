"""Fixtures for publishing and the device agent: moto's S3 server on 127.0.0.1 (real HTTP, started
here, not in-process patching), tiny bundles built once, fresh keys, and CLI helpers."""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import make_conv_onnx

pytest.importorskip("obstore")
pytest.importorskip("tuf")

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    """A running moto S3 server."""

    endpoint: str
    port: int
    server: object

    def new_bucket(self) -> str:
        """Create an empty bucket and return its store URL."""
        import boto3

        name = f"fleet-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=name)
        return f"s3://{name}/releases?endpoint={self.endpoint}&region=us-east-1"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's S3 server on 127.0.0.1, reached over HTTP by obstore like a real bucket."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    for key, value in S3_ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield MotoServer(f"http://127.0.0.1:{port}", port, server)
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store: a local directory, or a new bucket on the moto server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("moto_server").new_bucket()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny ONNX bundles with different weights (v1, v2, v3), built once per session."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    folder = tmp_path_factory.mktemp("sync-bundles")
    found = {}
    for name, seed in (("v1", 0), ("v2", 3), ("v3", 5)):
        source = make_conv_onnx(folder / f"tiny{name}.onnx", seed=seed)
        found[name] = build(BuildConfig(source=str(source), out=folder / "out", name=f"tiny{name}", cache=False)).bundle_dir
    return found


@pytest.fixture(scope="session")
def key_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys made once by ``edgec keys init`` (root 2 of 3); tests copy them."""
    folder = tmp_path_factory.mktemp("keys-template") / "keys"
    code, _, err = cli("keys", "init", "--keys", str(folder))
    assert code == 0, err
    return folder


@pytest.fixture
def keys(tmp_path: Path, key_template: Path) -> Path:
    """A private copy of the keys directory."""
    target = tmp_path / "keys"
    shutil.copytree(key_template, target)
    return target


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``edgec ARGS`` in-process; returns (exit code, stdout, stderr)."""
    import edgec.compiler.cli as edgec_cli

    if "edgec.cloud_sync.cli" not in edgec_cli.PLUGIN_MODULES:
        edgec_cli.PLUGIN_MODULES.append("edgec.cloud_sync.cli")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = edgec_cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def repository(store_url: str, keys: Path):  # noqa: ANN201 - Repository
    """The publisher-side repository object for a store."""
    from edgec.cloud_sync.publish import open_repository

    return open_repository(store_url, keys, create=True)

"""Fixtures for publishing and the agent: moto's S3 server on 127.0.0.1, fresh stores, tiny bundles built once, keys."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import cli
from tests.support.models import make_conv_onnx
from tests.support.stores import S3_ENV, MotoServer, free_port


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

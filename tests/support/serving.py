"""edgec serve on a free loopback port, in a thread, for the serving tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from edgec.cloud_sync.serving.app import ServeOptions, ServerState, create_app
from edgec.cloud_sync.serving.host import ModelHost, load_bundle
from tests.support.stores import free_port


@contextlib.contextmanager
def running(config: Callable[[int], uvicorn.Config]) -> Iterator[str]:
    """A uvicorn server on a free loopback port (``config(port)``) in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(config(port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def serving(bundle: Path, release=None, **options) -> Iterator[tuple[str, ServerState]]:
    state = ServerState(ModelHost(load_bundle(bundle, release=release)), ServeOptions(**options))
    with running(lambda port: uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="error")) as url:
        yield url, state

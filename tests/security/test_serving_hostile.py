"""``edgec serve`` against hostile clients (issue 16): zip bombs, lying headers, slow and partial connections,
malformed arrays and disconnects. Every request goes to a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgec.cloud_sync.serving import app as serving_app
from edgec.cloud_sync.serving.app import ServeOptions, ServerState, create_app
from edgec.cloud_sync.serving.host import ModelHost, load_bundle
from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.runtime_shims.ort import OrtRunner
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_calib, make_conv_onnx
from tests.support.serving import running
from tests.support.stores import free_port

NPY = {"content-type": "application/x-npy"}
NPZ = {"content-type": "application/x-npz"}
BOMB_BYTES = 256 * 1024 * 1024
SERVER_FLAGS = ["--max-decoded-mb", "8", "--timeout-head", "1", "--timeout-body", "2", "--limit-concurrency", "40"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    model = make_conv_onnx(folder / "tiny.onnx")
    return build(BuildConfig(source=str(model), out=folder / "bundles", calib=make_calib(folder / "calib.npz"))).bundle_dir


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``edgec serve`` in its own process (so its peak memory is its own): the URL and the pid."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve-log") / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edgec.compiler", "serve", str(bundle), "--port", str(port), *SERVER_FLAGS],
                            stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        assert proc.poll() is None and time.time() < deadline, Path(log.name).read_text()
        time.sleep(0.2)
    try:
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        log.close()


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _zip(name: str, deflated: bytes, crc: int, size: int, method: int = 8) -> bytes:
    """A one-member zip archive around an already-compressed stream, declaring ``size`` (which may lie)."""
    raw = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(deflated), size, len(raw), 0) + raw
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(deflated), size,
                          len(raw), 0, 0, 0, 0, 0, 0) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(deflated), 0)
    return local + deflated + central + end


def _bomb(header: bytes, data_bytes: int) -> tuple[bytes, int, int]:
    """Deflate ``header`` + ``data_bytes`` zeros without holding them: (stream, crc, size)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts, crc, chunk = [packer.compress(header)], zlib.crc32(header), bytes(1 << 20)
    for _ in range(data_bytes // len(chunk)):
        parts.append(packer.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    parts.append(packer.flush())
    return b"".join(parts), crc, len(header) + data_bytes


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    samples = BOMB_BYTES // (3 * 8 * 8 * 4)
    honest, crc, size = _bomb(_npy_header("<f4", (samples, 3, 8, 8)), BOMB_BYTES)
    small = _npy_header("<f4", (1, 3, 8, 8))
    lying, lying_crc, _ = _bomb(small, BOMB_BYTES)
    return {
        "honest sizes": _zip("x.npy", honest, crc, size),
        "zip and header claim one sample": _zip("x.npy", lying, lying_crc, len(small) + 3 * 8 * 8 * 4),
    }


@pytest.mark.parametrize("kind", ["honest sizes", "zip and header claim one sample"])
def test_zip_bombed_npz_is_refused_and_the_server_stays_small(server, bombs, kind) -> None:
    url, pid = server
    before = _peak_rss_mb(pid)
    body = bombs[kind]
    assert len(body) < 1024 * 1024
    r = httpx.post(f"{url}/v1/predict", content=body, headers=NPZ, timeout=60)
    assert _peak_rss_mb(pid) - before < 48, f"peak RSS grew from {before:.0f} MB to {_peak_rss_mb(pid):.0f} MB"
    assert r.status_code in (400, 413), r.text
    assert "x.npy" in r.json()["error"]
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_npz_member_whose_declared_size_exceeds_the_limit_gets_413_naming_it(server, bombs) -> None:
    r = httpx.post(f"{server[0]}/v1/predict", content=bombs["honest sizes"], headers=NPZ, timeout=60)
    assert r.status_code == 413
    assert "x.npy" in r.json()["error"] and "8 MB" in r.json()["error"]


@contextlib.contextmanager
def _in_process(bundle: Path, **options) -> Iterator[str]:
    """The server in this process, with edgec serve's own uvicorn settings (limits, head guard)."""
    state = ServerState(ModelHost(load_bundle(bundle)), ServeOptions(**options))
    with running(lambda port: serving_app.uvicorn_config(create_app(state), state.options, "127.0.0.1", port)) as url:
        yield url


def test_healthz_answers_fast_while_slow_decodes_are_in_flight(bundle, monkeypatch) -> None:
    real = serving_app.decode

    def slow_decode(*args, **kwargs):  # stands for a body that takes a second of CPU to decode
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(serving_app, "decode", slow_decode)
    body = _npy(np.zeros((1, 3, 8, 8), np.float32))

    async def scenario(url: str) -> tuple[float, list[int]]:
        async with httpx.AsyncClient(timeout=30) as client:
            posts = [asyncio.create_task(client.post(f"{url}/v1/predict", content=body, headers=NPY)) for _ in range(4)]
            await asyncio.sleep(0.3)
            start = time.perf_counter()
            assert (await client.get(f"{url}/healthz")).status_code == 200
            took = time.perf_counter() - start
            return took, [r.status_code for r in await asyncio.gather(*posts)]

    with _in_process(bundle) as url:
        took, codes = asyncio.run(scenario(url))
    assert codes == [200] * 4
    assert took < 1.0, f"/healthz took {took:.2f} s while four bodies were decoding"


def _partial_connections(url: str, count: int) -> list[socket.socket]:
    port = int(url.rsplit(":", 1)[1])
    conns = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        conns.append(conn)
    return conns


def _closed_by_server(conn: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``conn`` (EOF or reset) before ``deadline`` (monotonic)."""
    try:
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            if conn.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


def test_partial_header_connections_are_closed_after_the_head_timeout(server) -> None:
    url, _ = server
    conns = _partial_connections(url, 50)
    try:
        start = time.monotonic()
        closed = [_closed_by_server(conn, start + 5) for conn in conns]
        elapsed = time.monotonic() - start
        assert all(closed), f"{closed.count(False)} of 50 partial connections still open after {elapsed:.1f} s"
        assert elapsed < 5
        r = httpx.get(f"{url}/healthz", timeout=2)
        assert r.status_code == 200
    finally:
        for conn in conns:
            conn.close()


def test_healthz_answers_while_partial_connections_wait(server) -> None:
    url, _ = server
    conns = _partial_connections(url, 20)
    try:
        assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    finally:
        for conn in conns:
            conn.close()


def test_request_head_over_the_limit_is_refused_with_431(server) -> None:
    r = httpx.get(f"{server[0]}/healthz", headers={f"x-filler-{i}": "a" * 1000 for i in range(70)}, timeout=10)
    assert r.status_code == 431


def test_body_that_stops_arriving_gets_408(server) -> None:
    port = int(server[0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npy\r\n"
                     b"Content-Length: 4000\r\n\r\n" + b"\x93NUMPY")
        start = time.monotonic()
        answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - start < 5


def _count(url: str, code: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    line = next((line for line in text.splitlines() if line.startswith(f'edgec_requests_total{{code="{code}"}}')), None)
    return float(line.split()[-1]) if line else 0.0


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragments"),
    [
        ('{"inputs": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}", {}, 400, ["nested"]),
        (json.dumps({"inputs": {"x": json.loads("[" * 100 + "1" + "]" * 100)}}), {}, 422, ["nested", "64"]),
        (_npy_header("<f4", (10**12, 3, 8, 8)) + bytes(768), NPY, 413, ["1000000000000", "256"]),
        (_npy_header("<f4", (4, 3, 8, 8)) + bytes(768), NPY, 400, ["3072", "768"]),
        (_npy_header("<f4", (-1, 3, 8, 8)), NPY, 400, ["shape"]),
        (_npy(np.full((1, 3, 8, 8), "a")), NPY, 422, ["'x'", "str"]),
        (_npy(np.ones((1, 3, 8, 8), np.complex64) * 1j), NPY, 422, ["'x'", "complex"]),
        (_npy(np.zeros((1, 3, 8, 8), [("a", "<f4")])), NPY, 422, ["'x'"]),
        (_npy(np.zeros((1, 3, 8, 8), np.float32))[:-10], NPY, 400, ["758"]),
        (_npy(np.zeros((1, 3, 4, 4), np.float32)), NPY, 422, ["expected (batch, 3, 8, 8)"]),
    ],
    ids=["json-100000-deep", "json-100-deep", "npy-claims-1e12-samples", "npy-header-larger-than-data",
         "npy-negative-dim", "npy-unicode", "npy-complex", "npy-structured", "npy-truncated", "npy-wrong-shape"],
)
def test_malformed_bodies_get_a_precise_4xx(server, body, headers, status, fragments) -> None:
    url, _ = server
    errors_before = _count(url, "500")
    r = httpx.post(f"{url}/v1/predict", content=body, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    for fragment in fragments:
        assert fragment in r.json()["error"], r.json()["error"]
    assert _count(url, "500") == errors_before


def _npz_member(name: str, payload: bytes, method: int) -> bytes:
    import bz2

    data = bz2.compress(payload) if method == 12 else payload
    return _zip(name, data, zlib.crc32(payload), len(payload), method)


@pytest.mark.parametrize(
    ("body", "status", "fragments"),
    [
        (_npz_member("x.npy", _npy(np.zeros((1, 3, 8, 8), np.float32)), 12), 415, ["x.npy", "bzip2"]),
        (_npz_member("image.npy", _npy(np.zeros((1, 3, 8, 8), np.float32)), 0), 422, ["missing ['x'], unknown ['image']"]),
        (_npz_member("x.npy", _npy(np.ones((1, 3, 8, 8), np.complex128)), 0), 422, ["x.npy", "complex"]),
        (_npz_member("x.npy", _npy(np.zeros((1, 3, 8, 8), np.float32)), 0)[:-22]
         + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 65535, 65535, 0, 0, 0), 422, ["65535 members"]),
    ],
    ids=["bzip2-member", "unknown-member", "complex-member", "directory-claims-65535-members"],
)
def test_malformed_npz_gets_a_precise_4xx(server, body, status, fragments) -> None:
    r = httpx.post(f"{server[0]}/v1/predict", content=body, headers=NPZ, timeout=30)
    assert r.status_code == status, r.text
    for fragment in fragments:
        assert fragment in r.json()["error"], r.json()["error"]


def test_client_disconnect_is_not_counted_as_a_server_error(server) -> None:
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    errors_before, gone_before = _count(url, "500"), _count(url, "499")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npy\r\n"
                     b"Content-Length: 100000\r\n\r\n" + bytes(1000))
        time.sleep(0.2)
    deadline = time.time() + 5
    while _count(url, "499") == gone_before and _count(url, "500") == errors_before and time.time() < deadline:
        time.sleep(0.1)
    assert _count(url, "500") == errors_before
    assert _count(url, "499") == gone_before + 1


def test_npy_request_is_answered_with_npy(server, bundle) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    for sent in (x, np.asfortranarray(x), x.astype(">f8")):
        r = httpx.post(f"{server[0]}/v1/predict", content=_npy(sent), headers=NPY)
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy", r.text
        with OrtRunner(str(bundle / "model.onnx")) as runner:
            expected = runner.infer({"x": x})["logits"]
        np.testing.assert_allclose(np.load(io.BytesIO(r.content), allow_pickle=False), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flag", ["--timeout-head", "--timeout-body", "--limit-concurrency", "--max-decoded-mb", "--max-head-kb"])
def test_serve_refuses_a_limit_that_is_not_positive(bundle, flag) -> None:
    proc = run_cli("serve", str(bundle), "--port", str(free_port()), flag, "0")
    assert_one_line_error(proc, errors.EXIT_CONFIG, flag, "must be positive")


def test_partial_second_head_on_a_keep_alive_connection_is_closed_after_the_head_timeout(server) -> None:
    port = int(server[0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        start = time.monotonic()
        assert _closed_by_server(conn, start + 5)
        assert time.monotonic() - start < 5

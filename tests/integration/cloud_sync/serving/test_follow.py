"""edgec serve pointed at a store follows releases through the device agent's code and hot-swaps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgec.cloud_sync.serving.follow import current_release, first_bundle, follower, make_agent
from edgec.cloud_sync.serving.host import Release
from edgec.core import errors
from tests.support.serving import serving
from tests.support.stores import free_port

pytest.importorskip("tuf")
pytest.importorskip("obstore")


def _cli(*args: str) -> tuple[int, str, str]:
    from tests.support.cli import cli

    return cli(*args)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    code, _, err = _cli("keys", "init", "--keys", str(folder))
    assert code == 0, err
    return folder


def _publish(bundle: Path, store: Path, keys: Path) -> None:
    code, _, err = _cli("publish", str(bundle), "--store", str(store), "--channel", "stable", "--keys", str(keys), "--percent", "100")
    assert code == 0, err


def test_server_follows_a_new_release_without_failing_requests(tmp_path: Path, keys: Path) -> None:
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build
    from tests.support.models import make_calib, make_conv_onnx

    calib = make_calib(tmp_path / "calib.npz")
    v1 = build(BuildConfig(source=str(make_conv_onnx(tmp_path / "v1.onnx", seed=0)), out=tmp_path / "b", calib=calib)).bundle_dir
    v2 = build(BuildConfig(source=str(make_conv_onnx(tmp_path / "v2.onnx", seed=9)), out=tmp_path / "b", calib=calib)).bundle_dir
    store = tmp_path / "store"
    _publish(v1, store, keys)
    agent = make_agent(str(store), "serve-test", tmp_path / "state", "stable", keys / "root.json")
    first = first_bundle(agent)
    assert (first / "manifest.json").is_file()

    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with serving(first, max_batch=4, max_wait_ms=2) as (url, state):
        task_holder: dict[str, object] = {}

        async def scenario() -> list[httpx.Response]:
            task_holder["task"] = asyncio.create_task(follower(agent, 0.2)(state))
            async with httpx.AsyncClient(timeout=30) as client:
                responses = [await client.post(f"{url}/v1/predict", json={"inputs": {"x": x.tolist()}})]
                await asyncio.to_thread(_publish, v2, store, keys)
                for _ in range(100):
                    responses.append(await client.post(f"{url}/v1/predict", json={"inputs": {"x": x.tolist()}}))
                    if responses[-1].headers["x-edgec-bundle"] != responses[0].headers["x-edgec-bundle"]:
                        break
                    await asyncio.sleep(0.05)
            task_holder["task"].cancel()  # type: ignore[attr-defined]
            return responses

        # the follower runs in the test's loop here; the server's own loop is in its thread
        responses = asyncio.run(scenario())
    assert all(r.status_code == 200 for r in responses)
    assert responses[0].headers["x-edgec-bundle"] != responses[-1].headers["x-edgec-bundle"]
    with_v2 = np.asarray(responses[-1].json()["outputs"]["logits"])
    from edgec.runtime_shims.ort import OrtRunner

    with OrtRunner(str(v2 / "model.onnx")) as runner:
        np.testing.assert_allclose(with_v2, runner.infer({"x": x})["logits"], rtol=1e-4, atol=1e-5)
    assert state.metrics.sample("edgec_bundle_swaps_total", {"result": "swapped"}) == 1.0


def test_serving_a_store_without_releases_is_a_clear_error(tmp_path: Path, keys: Path) -> None:
    store = tmp_path / "empty-store"
    store.mkdir()
    agent = make_agent(str(store), "serve-test", tmp_path / "state", "stable", keys / "root.json")
    with pytest.raises(errors.ConfigError, match="no release to serve"):
        first_bundle(agent)


def _digits(tmp_path: Path, seed: int) -> Path:
    """A bundle named digits-onnx-fp32 (each retrained model gets the same name, in its own folder)."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build
    from tests.support.models import make_calib, make_conv_onnx

    source = make_conv_onnx(tmp_path / f"model{seed}.onnx", seed=seed)
    calib = make_calib(tmp_path / "calib.npz")
    return build(BuildConfig(source=str(source), out=tmp_path / f"build{seed}", name="digits", calib=calib)).bundle_dir


def _served_names(url: str) -> tuple[dict, dict, str]:
    x = np.zeros((1, 3, 8, 8), np.float32).tolist()
    response = httpx.post(f"{url}/v1/predict", json={"inputs": {"x": x}})
    assert response.status_code == 200, response.text
    headers = {k: response.headers.get(k) for k in ("x-edgec-bundle", "x-edgec-release")}
    return httpx.get(f"{url}/readyz").json(), headers, httpx.get(f"{url}/metrics").text


def test_server_following_a_store_names_the_bundle_and_release_not_the_slot(tmp_path: Path, keys: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    from edgec.cloud_sync.publish import publish
    from tests.support.stores import repository

    store = str(tmp_path / "store")
    repo = repository(store, keys)
    v1 = publish(_digits(tmp_path, 0), repo, "stable", verify=False)
    agent = make_agent(store, "serve-test", tmp_path / "state", "stable", keys / "root.json")
    first = first_bundle(agent)
    assert first.name == "a"  # the agent's slot: not a name to show anyone
    release = current_release(agent)
    assert release == Release("digits-onnx-fp32", v1.sha256, 1, "stable")
    with serving(first, release, max_wait_ms=1) as (url, state):
        ready, headers, metrics = _served_names(url)
        assert ready["bundle"] == "digits-onnx-fp32" and ready["release"] == {
            "bundle": "digits-onnx-fp32", "sha256": v1.sha256, "number": 1, "channel": "stable"}
        assert headers == {"x-edgec-bundle": "digits-onnx-fp32", "x-edgec-release": v1.sha256[:12]}
        assert f'edgec_active_bundle{{bundle="digits-onnx-fp32",release="{v1.sha256[:12]}"' in metrics
        v2 = publish(_digits(tmp_path, 9), repo, "stable", verify=False)  # retrained: same name, new release

        async def follow_until_swapped() -> None:
            task = asyncio.create_task(follower(agent, 0.05)(state))
            for _ in range(400):
                if state.host.current.release_id == v2.sha256[:12]:
                    break
                await asyncio.sleep(0.05)
            task.cancel()

        with caplog.at_level("WARNING", logger="edgec.serve"):
            asyncio.run(follow_until_swapped())
        ready, headers, metrics = _served_names(url)
    assert state.host.current.path.name == "b"
    assert ready["bundle"] == "digits-onnx-fp32" and ready["release"]["sha256"] == v2.sha256 and ready["release"]["number"] == 2
    assert headers == {"x-edgec-bundle": "digits-onnx-fp32", "x-edgec-release": v2.sha256[:12]}
    assert f'edgec_active_bundle{{bundle="digits-onnx-fp32",release="{v2.sha256[:12]}"' in metrics
    assert v1.sha256[:12] not in metrics and 'bundle="a"' not in metrics and 'bundle="b"' not in metrics
    assert f"now serving digits-onnx-fp32 (release 2 of stable, sha {v2.sha256[:12]})" in caplog.messages


def test_edgec_serve_of_a_store_prints_and_reports_the_release(tmp_path: Path, keys: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from edgec.cloud_sync.publish import publish
    from tests.support.stores import repository

    store = str(tmp_path / "store")
    v1 = publish(_digits(tmp_path, 0), repository(store, keys), "stable", verify=False)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgec.compiler", "serve", store, "--channel", "stable",
                             "--trusted-root", str(keys / "root.json"), "--state-dir", str(tmp_path / "state"),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        deadline = time.time() + 60
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert ready.json()["bundle"] == "digits-onnx-fp32" and ready.json()["release"]["sha256"] == v1.sha256
    assert f"serving digits-onnx-fp32 (release 1 of stable, sha {v1.sha256[:12]}) on http://" in proc.stdout.read()

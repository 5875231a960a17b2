"""edgec serve pointed at a store follows releases through the device agent's code and hot-swaps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgec.cloud_sync.serving.follow import first_bundle, follower, make_agent
from edgec.compiler import errors
from tests.unit.serving.test_serve import serving

pytest.importorskip("tuf")
pytest.importorskip("obstore")


def _cli(*args: str) -> tuple[int, str, str]:
    from tests.unit.cloud_sync.conftest import cli

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
    from tests.conftest import make_calib, make_conv_onnx

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

"""edgec serve over real HTTP on 127.0.0.1: predictions, validation, batching, metrics, drift, hot-swap."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.runtime_shims.ort import OrtRunner
from tests.support.cli import run_cli
from tests.support.models import make_calib, make_conv_onnx
from tests.support.serving import serving
from tests.support.stores import free_port


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve")
    model = make_conv_onnx(folder / "tiny.onnx")
    calib = make_calib(folder / "calib.npz", count=64)
    out = folder / "bundles"
    dynamic = build(BuildConfig(source=str(model), out=out, calib=calib)).bundle_dir
    fixed = build(BuildConfig(source=str(make_conv_onnx(folder / "fixed.onnx", batch=1)), out=out, name="fixed")).bundle_dir
    other = build(BuildConfig(source=str(make_conv_onnx(folder / "other.onnx", seed=7)), out=out, calib=calib)).bundle_dir
    return {"dynamic": dynamic, "fixed": fixed, "other": other, "model": model, "dir": folder}


def _reference(bundle: Path, x: np.ndarray) -> np.ndarray:
    with OrtRunner(str(bundle / "model.onnx")) as runner:
        return runner.infer({"x": x})["logits"]


def test_json_and_npz_predictions_match_the_runtime(bundles) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with serving(bundles["dynamic"]) as (url, _):
        r = httpx.post(f"{url}/v1/predict", json={"inputs": {"x": x.tolist()}})
        assert r.status_code == 200, r.text
        assert r.headers["x-edgec-bundle"] == "tiny-onnx-fp32"
        np.testing.assert_allclose(np.asarray(r.json()["outputs"]["logits"]), _reference(bundles["dynamic"], x), rtol=1e-5, atol=1e-6)
        buf = io.BytesIO()
        np.savez(buf, x=x)
        r = httpx.post(f"{url}/v1/predict", content=buf.getvalue(), headers={"content-type": "application/x-npz"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz"
        np.testing.assert_allclose(np.load(io.BytesIO(r.content))["logits"], _reference(bundles["dynamic"], x), rtol=1e-5, atol=1e-6)
        single = httpx.post(f"{url}/v1/predict", json={"inputs": {"x": x[0].tolist()}})  # batch axis added
        assert np.asarray(single.json()["outputs"]["logits"]).shape == (1, 10)


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        (json.dumps({"inputs": {"image": [[1.0]]}}), {}, 422, "missing ['x'], unknown ['image']"),
        (json.dumps({"inputs": {"x": np.zeros((1, 3, 4, 4)).tolist()}}), {}, 422, "expected (batch, 3, 8, 8)"),
        (json.dumps({"inputs": {"x": [[1, 2], [3]]}}), {}, 422, "ragged"),
        (json.dumps({"inputs": {"x": "cat"}}), {}, 422, "numbers"),
        ("{not json", {}, 400, "JSON object"),
        (b"\x00" * 10, {"content-type": "application/x-npz"}, 400, ".npz"),
        ("x", {"content-type": "text/plain"}, 415, "unsupported content type"),
        (json.dumps({"inputs": {"x": np.full((1, 3, 8, 8), np.nan).tolist()}}).replace("NaN", "NaN"), {}, 422, "NaN"),
    ],
)
def test_bad_requests_get_a_precise_4xx_and_the_server_stays_up(bundles, body, headers, status, fragment) -> None:
    with serving(bundles["dynamic"]) as (url, state):
        r = httpx.post(f"{url}/v1/predict", content=body, headers=headers)
        assert r.status_code == status, r.text
        assert fragment in r.json()["error"]
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert state.metrics.sample("edgec_requests_total", {"code": str(status)}) == 1.0


def test_oversized_body_is_rejected_before_reading_it(bundles) -> None:
    with serving(bundles["dynamic"], max_body_bytes=1000) as (url, _):
        r = httpx.post(f"{url}/v1/predict", json={"inputs": {"x": np.zeros((4, 3, 8, 8)).tolist()}})
        assert r.status_code == 413 and "exceeds the limit of 1000" in r.json()["error"]


async def _burst(url: str, xs: list[np.ndarray]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*[client.post(f"{url}/v1/predict", json={"inputs": {"x": x.tolist()}}) for x in xs])


def test_concurrent_requests_are_batched_and_answered_individually(bundles) -> None:
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(32)]
    with serving(bundles["dynamic"], max_batch=16, max_wait_ms=50) as (url, state):
        responses = asyncio.run(_burst(url, xs))
        runs = state.metrics.sample("edgec_batch_size_count")
        samples = state.metrics.sample("edgec_batch_size_sum")
    assert all(r.status_code == 200 for r in responses)
    for x, r in zip(xs, responses):
        np.testing.assert_allclose(np.asarray(r.json()["outputs"]["logits"]), _reference(bundles["dynamic"], x), rtol=1e-4, atol=1e-5)
    assert samples == 32 and runs < 32  # several requests shared a model run


def test_fixed_batch_model_runs_each_request_alone(bundles) -> None:
    xs = [np.full((1, 3, 8, 8), i, np.float32) for i in range(8)]
    with serving(bundles["fixed"], max_batch=16, max_wait_ms=50) as (url, state):
        responses = asyncio.run(_burst(url, xs))
        assert state.metrics.sample("edgec_batch_size_count") == 8
    assert all(r.status_code == 200 for r in responses)


def test_metrics_and_input_drift(bundles) -> None:
    rng = np.random.default_rng(2)
    with serving(bundles["dynamic"]) as (url, _):
        for _ in range(5):
            httpx.post(f"{url}/v1/predict", json={"inputs": {"x": rng.standard_normal((4, 3, 8, 8)).tolist()}})
        text = httpx.get(f"{url}/metrics").text
        for name in ("edgec_requests_total", "edgec_request_latency_seconds_bucket", "edgec_batch_size_bucket",
                     "edgec_queue_depth", 'edgec_active_bundle{bundle="tiny-onnx-fp32"'):
            assert name in text
        in_dist = float(next(line for line in text.splitlines() if line.startswith('edgec_input_drift_psi{input="x"}')).split()[-1])
        for _ in range(5):
            httpx.post(f"{url}/v1/predict", json={"inputs": {"x": (rng.standard_normal((4, 3, 8, 8)) * 3 + 4).tolist()}})
        text = httpx.get(f"{url}/metrics").text
        shifted = float(next(line for line in text.splitlines() if line.startswith('edgec_input_drift_psi{input="x"}')).split()[-1])
    assert in_dist < 0.1 < 0.25 < shifted


def test_readyz_reports_the_verified_bundle(bundles) -> None:
    with serving(bundles["dynamic"]) as (url, _):
        body = httpx.get(f"{url}/readyz").json()
    assert body["ready"] is True and body["bundle"] == "tiny-onnx-fp32" and len(body["sha256"]) == 64


def test_hot_swap_under_load_drops_no_request_and_refuses_a_broken_bundle(bundles, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(bundles["other"], broken)
    with open(broken / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with serving(bundles["dynamic"], max_batch=8, max_wait_ms=2) as (url, state):
        async def load() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                async def one() -> httpx.Response:
                    return await client.post(f"{url}/v1/predict", json={"inputs": {"x": x.tolist()}})
                first = asyncio.gather(*[one() for _ in range(40)])
                await asyncio.sleep(0.01)
                await asyncio.to_thread(state.host.swap, bundles["other"])
                state.swapped()
                with pytest.raises(errors.EdgecError):
                    await asyncio.to_thread(state.host.swap, broken)
                return list(await first) + list(await asyncio.gather(*[one() for _ in range(20)]))

        responses = asyncio.run(load())
        metrics = httpx.get(f"{url}/metrics").text
    assert all(r.status_code == 200 for r in responses)
    served = {r.headers["x-edgec-bundle"] for r in responses}
    assert served <= {"tiny-onnx-fp32", "other-onnx-fp32"} and responses[-1].headers["x-edgec-bundle"] == "other-onnx-fp32"
    np.testing.assert_allclose(np.asarray(responses[-1].json()["outputs"]["logits"]), _reference(bundles["other"], x), rtol=1e-4, atol=1e-5)
    assert 'edgec_active_bundle{bundle="other-onnx-fp32"' in metrics and 'bundle="tiny-onnx-fp32"' not in metrics


def test_serve_refuses_a_bundle_that_fails_verification(bundles, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(bundles["dynamic"], broken)
    (broken / "golden.npz").write_bytes(b"tampered")
    proc = run_cli("serve", str(broken), "--port", str(free_port()))
    assert proc.returncode == errors.EXIT_INTEGRITY and "golden.npz" in proc.stderr and "Traceback" not in proc.stderr


def test_package_writes_valid_kubernetes_manifests_and_a_dockerfile(bundles, tmp_path: Path) -> None:
    import kubernetes_validate
    import yaml

    out = tmp_path / "pkg"
    proc = run_cli("package", str(bundles["dynamic"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all((out / "k8s.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert docs[2]["spec"]["scaleTargetRef"]["name"] == docs[0]["metadata"]["name"]
    dockerfile = (out / "Dockerfile").read_text()
    assert "--no-deps /tmp/edgec/edgec-" in dockerfile and "COPY tiny-onnx-fp32/ /bundle/" in dockerfile
    assert run_cli("verify", str(out / "tiny-onnx-fp32")).returncode == 0
    again = run_cli("package", str(bundles["dynamic"]), "--out", str(out))
    assert again.returncode == errors.EXIT_CONFIG and "already exists" in again.stderr


def test_invalid_manifest_would_be_caught_by_the_schema_check(bundles) -> None:
    import kubernetes_validate

    from edgec.cloud_sync.serving.package import manifests

    deployment = manifests("x", "img", 8080, 2)[0]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.37.0", strict=True)


def test_edgec_serve_command_serves_until_stopped(bundles) -> None:
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgec.compiler", "serve", str(bundles["dynamic"]), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
            time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"inputs": {"x": np.zeros((1, 3, 8, 8)).tolist()}})
        assert r.status_code == 200 and len(r.json()["outputs"]["logits"][0]) == 10
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert "serving tiny-onnx-fp32" in proc.stdout.read()

"""A TensorRT bundle's prebuilt engine (``model.plan``) is deserialized only where the bundle is trusted.

Deserializing a TensorRT engine is running native code: an engine may embed plugin code (NVIDIA's own
security guidance). The runner used to load a bundle's ``model.plan`` whenever ``tensorrt.json`` tagged it
with this GPU and TensorRT version, so a hostile bundle ran its code in ``edgec verify``, ``bench``, ``debug``,
``serve``, the build's parity run and the shim. Now those build the engine from the bundle's ONNX (which
edgec already reads safely) into their own cache; the bundle's engine is loaded only by a caller that
verified the bundle: the device agent (its release passed TUF) and the shim's ``--trust-engine``.

No GPU or TensorRT is needed: the host has none, so the tests stand in for the driver. They set the GPU and
TensorRT version as activation would, and replace ``build_engine`` with one that returns known bytes; the
attacker tags the planted engine with exactly that GPU and version and rewrites the manifest's hashes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgec.cloud_sync import health
from edgec.cloud_sync.agent import Agent, AgentConfig
from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build, get_target
from edgec.runtime_shims import __main__ as shim_cli
from edgec.runtime_shims import runners
from edgec.runtime_shims import tensorrt as shim
from edgec.runtime_shims.base import Runner
from edgec.runtime_shims.ort import OrtRunner
from tests.support.models import make_calib, make_conv_onnx

pytest.importorskip("onnx")

GPU = {"name": "NVIDIA H200", "compute_capability": "9.0", "memory_mib": 143771, "cuda_driver": "12.8"}
VERSION = "10.9.0.34"
PLAN = b"hostile engine: its plugin library runs when TensorRT deserializes it"
BUILT = b"engine built here from the bundle's ONNX"


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CNN as a tensorrt int8 bundle (explicit Q/DQ ONNX, built without a GPU)."""
    folder = tmp_path_factory.mktemp("trt-trust")
    config = BuildConfig(source=str(make_conv_onnx(folder / "tiny.onnx")), target="tensorrt", precision="int8",
                         out=folder / "out", calib=make_calib(folder / "calib.npz"), name="tiny")
    return build(config).bundle_dir


def rehash(bundle: Path, *names: str) -> None:
    """Record the files' sizes and sha256 in the manifest, as a careful attacker would."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    entries = {f["path"]: f for f in manifest["files"]}
    for name in names:
        data = (bundle / name).read_bytes()
        entries.setdefault(name, {"path": name}).update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    manifest["files"] = sorted(entries.values(), key=lambda f: f["path"])
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def planted(bundle: Path, dest: Path, tensorrt: str = VERSION) -> Path:
    """A copy of ``bundle`` carrying :data:`PLAN` as its engine, tagged with this GPU and ``tensorrt``."""
    copy = Path(shutil.copytree(bundle, dest))
    (copy / shim.ENGINE_FILE).write_bytes(PLAN)
    settings = shim.load_settings(copy)
    settings["engine"] = {"file": shim.ENGINE_FILE, "gpu": GPU["name"],
                          "compute_capability": GPU["compute_capability"], "tensorrt": tensorrt}
    (copy / shim.SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    rehash(copy, shim.ENGINE_FILE, shim.SETTINGS_FILE)
    return copy


def manifest_of(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / "manifest.json").read_text()))


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """This host as a GPU machine: TensorRT "available", activation sets the GPU and version and takes the
    engine bytes (kept as ``runner.loaded``), inference runs the ONNX in onnxruntime, and ``build_engine``
    returns :data:`BUILT`. Returns the ONNX paths engines were built from."""
    builds: list[str] = []

    def build_engine(onnx_path: str | Path, settings: dict[str, Any], timing_cache: str | Path | None = None,
                     log: list[str] | None = None) -> bytes:
        builds.append(str(onnx_path))
        return BUILT

    def activate_impl(self: shim.TensorRTRunner) -> None:
        self.gpu, self.tensorrt_version = dict(GPU), VERSION
        self.loaded = self._engine_bytes()  # type: ignore[attr-defined]
        self.ort = OrtRunner(self.model_path).activate()  # type: ignore[attr-defined]
        self.input_names, self.output_names = self.ort.input_names, self.ort.output_names  # type: ignore[attr-defined]

    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "edgec-cache"))
    monkeypatch.setattr(shim, "engine_unavailable_reason", lambda device=0: None)
    monkeypatch.setattr(shim, "build_engine", build_engine)
    monkeypatch.setattr(shim.TensorRTRunner, "activate_impl", activate_impl)
    monkeypatch.setattr(shim.TensorRTRunner, "infer_impl", lambda self, feed: self.ort.infer(feed))
    monkeypatch.setattr(shim.TensorRTRunner, "deactivate_impl", lambda self: self.ort.deactivate())
    return builds


def _verify_options(bundle: Path) -> Runner:
    target = get_target("tensorrt")
    return runners.open_runner(str(bundle), manifest_of(bundle), None, **target.runner_options)


HOST_OPENERS: dict[str, Callable[[Path], Runner]] = {
    "open_runner": lambda b: runners.open_runner(str(b), manifest_of(b)),
    "verify_serve_bench_runner_options": _verify_options,
    "build_parity_and_debug_target_runner": lambda b: get_target("tensorrt").runner(b, "model.onnx"),
    "health_check_default": lambda b: health.make_runner(b, manifest_of(b)),
    "shim_cli_without_trust_engine": lambda b: shim_cli.activate(str(b), manifest_of(b), None),
}
"""Every way edgec opens a bundle's runner on a host that did not verify where the bundle came from."""


@pytest.mark.parametrize("opener", sorted(HOST_OPENERS))
def test_host_runner_builds_the_engine_from_the_onnx_instead_of_loading_the_bundles_plan(
        opener: str, int8_bundle: Path, tmp_path: Path, gpu: list[str]) -> None:
    bundle = planted(int8_bundle, tmp_path / "hostile")
    runner = HOST_OPENERS[opener](bundle)
    assert isinstance(runner, shim.TensorRTRunner) and runner.engine_path == str(bundle / shim.ENGINE_FILE)
    if not runner.is_active:  # the shim's activate() returns it active
        runner.activate()
    assert runner.loaded == BUILT, "the bundle's engine was deserialized"  # type: ignore[attr-defined]
    assert (runner.engine_source, runner.bundle_engine, runner.trust_engine) == ("built", "untrusted", False)
    runner.deactivate()
    assert gpu == [str(bundle / "model.onnx")]


def test_untrusted_runner_uses_its_own_cache_and_never_the_bundles_plan(
        int8_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = planted(int8_bundle, tmp_path / "hostile")
    monkeypatch.setattr(shim, "build_engine", lambda *args, **kwargs: BUILT)
    sources = []
    for _ in range(2):  # the first builds, the second finds the engine it built
        runner = shim.TensorRTRunner(str(bundle / "model.onnx"), settings=shim.load_settings(bundle),
                                     engine_path=str(bundle / shim.ENGINE_FILE), engine_cache=tmp_path / "cache")
        runner.gpu, runner.tensorrt_version = dict(GPU), VERSION
        assert runner._engine_bytes() == BUILT
        sources.append((runner.engine_source, runner.bundle_engine))
    assert sources == [("built", "untrusted"), ("cache", "untrusted")]
    key = shim.engine_key(bundle / "model.onnx", shim.load_settings(bundle), GPU, VERSION)
    assert (tmp_path / "cache" / f"{key}.plan").read_bytes() == BUILT


def test_a_trusted_bundle_engine_is_loaded_when_it_matches_this_gpu_and_built_when_not(
        int8_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shim, "build_engine", lambda *args, **kwargs: BUILT)
    found = {}
    for tensorrt in (VERSION, "8.6.1"):
        bundle = planted(int8_bundle, tmp_path / tensorrt, tensorrt)
        runner = shim.TensorRTRunner(str(bundle / "model.onnx"), settings=shim.load_settings(bundle),
                                     engine_path=str(bundle / shim.ENGINE_FILE), engine_cache=tmp_path / "cache",
                                     trust_engine=True)
        runner.gpu, runner.tensorrt_version = dict(GPU), VERSION
        found[tensorrt] = (runner._engine_bytes(), runner.engine_source, runner.bundle_engine)
    assert found == {VERSION: (PLAN, "bundle", "used"), "8.6.1": (BUILT, "built", "mismatch")}


def test_the_device_agent_and_the_shims_trust_engine_flag_load_a_verified_bundles_engine(
        int8_bundle: Path, tmp_path: Path, gpu: list[str]) -> None:
    root = tmp_path / "device"
    agent = Agent(AgentConfig(store_url=str(tmp_path / "store"), device_id="jetson-1", root=root), store=None)
    planted(int8_bundle, agent.device.slots / "a")
    agent.device.state["trial"] = {"slot": "a", "sha256": "ab" * 32, "bundle": "tiny", "latency_budget_ms": None}
    agent.device.switch("a")
    loaded: list[bytes] = []
    real = shim.TensorRTRunner.activate_impl

    def activate_and_record(self: shim.TensorRTRunner) -> None:
        real(self)
        loaded.append(self.loaded)  # type: ignore[attr-defined]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shim.TensorRTRunner, "activate_impl", activate_and_record)
        outcome = agent._health_and_settle()  # after TUF verified the release's archive and unpacking
    assert (outcome.state, loaded) == ("committed", [PLAN])
    args = shim_cli._parser().parse_args(["verify", str(root / "current"), "--trust-engine"])
    runner = shim_cli.activate(args.bundle, manifest_of(root / "current"), None, args.trust_engine)
    assert (runner.loaded, runner.engine_source) == (PLAN, "bundle")  # type: ignore[attr-defined]
    runner.deactivate()
    assert gpu == []

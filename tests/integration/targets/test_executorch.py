"""The executorch target on tiny torch models built inline: options, backend checks, precisions (fp16, PT2E
int8 static and dynamic), planned bounds and memory, the ``.pte`` runner, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.calibration.dataset import CalibrationSet
from edgec.core import errors
from edgec.core.types import FORMAT_PT2, ModelArtifact, TensorSpec
from edgec.runtime_shims.base import RunnerError
from edgec.runtime_shims.executorch import ExecuTorchRunner
from edgec.targets import executorch as et_target
from edgec.targets.base import PrecisionRequest
from edgec.targets.executorch import ExecuTorchOptions, ExecuTorchTarget
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_conv_onnx

torch = pytest.importorskip("torch", reason="pip install 'edgec[executorch]'")
pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")


class Conv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: Any) -> Any:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class Norm(torch.nn.Module):
    """A LayerNorm with BERT's eps between linears: what ExecuTorch's portable fp16 kernel gets wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(384, 384)
        self.norm = torch.nn.LayerNorm(384, eps=1e-12)
        self.fc2 = torch.nn.Linear(384, 16)

    def forward(self, x: Any) -> Any:
        return self.fc2(self.norm(self.fc1(x)))


class Tokens(torch.nn.Module):
    """Position ids from ``arange + 0`` (integer add with a number), embeddings, a LayerNorm and linears: the
    parts of MiniLM that broke PT2E."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(50, 16)
        self.pos = torch.nn.Embedding(32, 16)
        self.norm = torch.nn.LayerNorm(16, eps=1e-12)
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 8)

    def forward(self, ids: Any) -> Any:
        positions = torch.arange(ids.shape[1]) + 0
        h = self.norm(self.tok(ids) + self.pos(positions)[None])
        return self.fc2(torch.relu(self.fc1(h))).mean(dim=1)


def _export(module: Any, example: tuple[Any, ...], dims: dict[str, Any], path: Path) -> Path:
    program = torch.export.export(module.eval(), example, dynamic_shapes=dims or None)
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def conv(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("conv")
    batch = torch.export.Dim("batch", min=1, max=64)
    path = _export(Conv(), (torch.randn(2, 3, 8, 8),), {"x": {0: batch}}, folder / "conv.pt2")
    return ModelArtifact(path, FORMAT_PT2, (TensorSpec("x", ("batch", 3, 8, 8), "float32"),),
                         (TensorSpec("logits", ("batch", 10), "float32"),), "0" * 64)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tokens")
    seq = torch.export.Dim("seq", min=2, max=32)
    path = _export(Tokens(), (torch.randint(0, 50, (1, 8)),), {"ids": {1: seq}}, folder / "tokens.pt2")
    return ModelArtifact(path, FORMAT_PT2, (TensorSpec("ids", (1, "seq"), "int64"),),
                         (TensorSpec("out", (1, 8), "float32"),), "0" * 64)


@pytest.fixture(scope="module")
def norm(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    torch.manual_seed(0)
    path = _export(Norm(), (torch.randn(1, 8, 384),), {}, tmp_path_factory.mktemp("norm") / "norm.pt2")
    return ModelArtifact(path, FORMAT_PT2, (TensorSpec("x", (1, 8, 384), "float32"),),
                         (TensorSpec("y", (1, 8, 16), "float32"),), "0" * 64)


def _calibration(name: str, arrays: np.ndarray) -> CalibrationSet:
    return CalibrationSet({name: arrays}, "inline", "minmax", "0" * 64)


def _export_bundle(artifact: ModelArtifact, folder: Path, precision: str = "fp32", **kw: Any) -> tuple[Path, dict[str, Any]]:
    target = ExecuTorchTarget()
    options = ExecuTorchOptions.from_pairs(kw.pop("options", ()), "executorch")
    request = PrecisionRequest(precision, options=options, **kw)
    target.validate(request)
    folder.mkdir(parents=True, exist_ok=True)
    result = target.export(artifact, folder, request, folder)
    return folder / result.model_file, {"details": result.details, "inputs": result.inputs}


def _run(pte: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with ExecuTorchRunner(str(pte)) as runner:
        return runner.infer(feed)


def _reference(artifact: ModelArtifact, *args: np.ndarray) -> np.ndarray:
    module = torch.export.load(str(artifact.path)).module()
    with torch.no_grad():
        return module(*[torch.from_numpy(a) for a in args]).numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))


# ---- options and checks before anything is imported


@pytest.mark.parametrize(("given", "expected"), [("64", {"*": 64}), ("batch=1,seq=128", {"batch": 1, "seq": 128}),
                                                 (" batch = 2 ", {"batch": 2})])
def test_max_dim_option_takes_one_cap_or_caps_by_dim_name(given: str, expected: dict[str, int]) -> None:
    assert ExecuTorchOptions.from_pairs([("max_dim", given)], "executorch").max_dim == expected


@pytest.mark.parametrize(("key", "value", "fragment"), [("max_dim", "0", "at least 1"), ("max_dim", "batch=x", "whole numbers"),
                                                        ("backend", "tpu", "xnnpack"), ("palettize", "4", "has no option")])
def test_bad_options_are_config_errors_naming_the_option(key: str, value: str, fragment: str) -> None:
    with pytest.raises(errors.ConfigError, match=fragment):
        ExecuTorchOptions.from_pairs([(key, value)], "executorch")


@pytest.mark.parametrize("backend", ["coreml", "vulkan"])
def test_int8_on_a_backend_without_a_wired_quantizer_is_refused_before_import(backend: str) -> None:
    request = PrecisionRequest("int8", options=ExecuTorchOptions(backend=backend))
    with pytest.raises(errors.UnsupportedError, match=f"backend={backend}, not int8") as info:
        ExecuTorchTarget().validate(request)
    assert "xnnpack" in (info.value.hint or "")


def test_qnn_without_its_sdk_is_a_missing_dependency_naming_qnn_sdk_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    with pytest.raises(errors.MissingDependencyError, match="QNN_SDK_ROOT") as info:
        ExecuTorchTarget().validate(PrecisionRequest("fp16", options=ExecuTorchOptions(backend="qnn")))
    assert info.value.exit_code == errors.EXIT_MISSING_DEPENDENCY


def test_bundle_name_says_the_backend_unless_it_is_the_default() -> None:
    assert ExecuTorchOptions().suffix() == ""
    assert ExecuTorchOptions(backend="vulkan").suffix() == "-vulkan"


def test_parity_is_measured_only_for_xnnpack_builds() -> None:
    target = ExecuTorchTarget()
    assert not target.measures_parity()  # a bundle read back: its manifest says whether parity was measured
    target.validate(PrecisionRequest("fp32", options=ExecuTorchOptions(backend="vulkan")))
    assert not target.measures_parity()
    target.validate(PrecisionRequest("fp32"))
    assert target.measures_parity()


# ---- export and run (in process)


def test_fp32_program_runs_with_the_source_names_and_counts_delegated_and_portable_ops(conv: ModelArtifact, tmp_path: Path) -> None:
    pte, out = _export_bundle(conv, tmp_path / "b")
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    got = _run(pte, {"x": x})
    assert list(got) == ["logits"]
    np.testing.assert_allclose(got["logits"], _reference(conv, x), atol=1e-5)
    details = out["details"]
    assert details["operators"]["delegated"]["aten.convolution.default"] == 1
    assert details["operators"]["portable"] == {"aten.mean.dim": 1}  # XNNPACK takes no mean over two dims
    assert details["delegates"] == {"XnnpackBackend": 2}
    assert details["planned_memory_bytes"] > 64 * 3 * 8 * 8 * 4 and details["backend"] == "xnnpack"


def test_planned_bound_is_the_exported_bound_and_larger_feeds_are_refused_by_name(conv: ModelArtifact, tmp_path: Path) -> None:
    """torch's fake convolution used to narrow the batch to <= 15 while ExecuTorch re-traced."""
    pte, out = _export_bundle(conv, tmp_path / "b")
    assert out["details"]["planned_inputs"] == {"x": [64, 3, 8, 8]}
    with ExecuTorchRunner(str(pte)) as runner:
        assert runner.infer({"x": np.zeros((64, 3, 8, 8), np.float32)})["logits"].shape == (64, 10)
        with pytest.raises(RunnerError, match=r"\(65, 3, 8, 8\).*up to \(64, 3, 8, 8\)"):
            runner.infer({"x": np.zeros((65, 3, 8, 8), np.float32)})


def test_max_dim_caps_the_plan_and_a_dim_capped_to_one_becomes_static(conv: ModelArtifact, tmp_path: Path) -> None:
    _, four = _export_bundle(conv, tmp_path / "four", options=[("max_dim", "4")])
    _, one = _export_bundle(conv, tmp_path / "one", options=[("max_dim", "batch=1")])
    assert four["details"]["planned_inputs"] == {"x": [4, 3, 8, 8]} and four["inputs"][0].shape == ("batch", 3, 8, 8)
    assert one["details"]["planned_inputs"] == {"x": [1, 3, 8, 8]} and one["inputs"][0].shape == (1, 3, 8, 8)
    assert one["details"]["planned_memory_bytes"] < four["details"]["planned_memory_bytes"]


def test_max_dim_naming_no_input_dim_is_a_config_error(conv: ModelArtifact, tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="max_dim names seq.*dynamic dims are: batch"):
        _export_bundle(conv, tmp_path / "b", options=[("max_dim", "seq=8")])


def test_a_plan_over_the_memory_limit_is_an_export_error_naming_max_dim(conv: ModelArtifact, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(et_target, "MAX_PLANNED_BYTES", 1024)
    with pytest.raises(errors.ExportError, match=r"x \(64, 3, 8, 8\)") as info:
        _export_bundle(conv, tmp_path / "b")
    assert "max_dim" in (info.value.hint or "")


@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_fp16_keeps_float32_io_and_layer_norms_right(norm: ModelArtifact, tmp_path: Path, scale: float) -> None:
    """ExecuTorch's portable fp16 layer norm is off by whole units (NaN on small inputs); norms now run in fp32."""
    pte, out = _export_bundle(norm, tmp_path / "b", "fp16")
    x = (np.random.default_rng(1).standard_normal((1, 8, 384)) * scale).astype(np.float32)
    got = _run(pte, {"x": x})["y"]
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert _cosine(got, _reference(norm, x)) > 0.999
    assert out["details"]["weights"] == "fp16"


def test_int8_static_calibrates_per_channel_with_minmax_and_stays_close(conv: ModelArtifact, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    calib = _calibration("x", rng.standard_normal((16, 1, 3, 8, 8)).astype(np.float32))
    pte, out = _export_bundle(conv, tmp_path / "b", "int8", calibration=calib)
    quant = out["details"]["quantization"]
    assert (quant["mode"], quant["samples"], quant["activation_observer"]) == ("static", 16, "MinMaxObserver")
    assert out["details"]["operators"]["delegated"]["quantized_decomposed.quantize_per_tensor.default"] >= 1
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    assert _cosine(_run(pte, {"x": x})["logits"], _reference(conv, x)) > 0.99


def test_int8_auto_is_dynamic_for_a_linear_model_and_integer_index_math_survives(tokens: ModelArtifact, tmp_path: Path) -> None:
    """XNNPACKQuantizer turned ``arange + 0`` into float and aten.index failed; integer adds now keep their type."""
    calib = _calibration("ids", np.random.default_rng(3).integers(0, 50, (8, 1, 12)).astype(np.int64))
    pte, out = _export_bundle(tokens, tmp_path / "b", "int8", calibration=calib)
    assert out["details"]["quantization"]["mode"] == "dynamic"
    ids = np.random.default_rng(4).integers(0, 50, (1, 10)).astype(np.int64)
    assert _cosine(_run(pte, {"ids": ids})["out"], _reference(tokens, ids)) > 0.99


def test_excluded_module_stays_float(conv: ModelArtifact, tmp_path: Path) -> None:
    calib = _calibration("x", np.random.default_rng(5).standard_normal((8, 1, 3, 8, 8)).astype(np.float32))
    _, out = _export_bundle(conv, tmp_path / "b", "int8", calibration=calib, exclude=("fc",))
    delegated = out["details"]["operators"]["delegated"]
    assert delegated["quantized_decomposed.dequantize_per_channel.default"] == 1  # conv only; fc keeps float weights
    assert out["details"]["quantization"]["kept_float"] == ["fc"]


def test_static_int8_without_calibration_is_a_calibration_error(conv: ModelArtifact, tmp_path: Path) -> None:
    with pytest.raises(errors.CalibrationError, match="needs calibration data"):
        _export_bundle(conv, tmp_path / "b", "int8", int8_mode="static")


# ---- the runner


def test_runner_refuses_a_file_that_is_not_a_program_with_the_runtime_reason(tmp_path: Path) -> None:
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(RunnerError, match="cannot load"):
        ExecuTorchRunner(str(bad)).activate()


def test_runner_names_the_torch_free_runtime_when_asked_for_it_and_absent(tmp_path: Path) -> None:
    try:
        import executorch_numpy_runtime  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(RunnerError, match="executorch-numpy-runtime"):
            ExecuTorchRunner(str(tmp_path / "model.pte"), runtime="numpy").activate()
    else:
        pytest.skip("executorch-numpy-runtime is installed here")


def test_prelu_after_a_linear_layer_lowers_and_matches_torch(tmp_path: Path) -> None:
    """ExecuTorch 1.5.1's XNNPACK lowering fails on a 2-D PReLU (MTCNN's ONet); the target decomposes it."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.PReLU(16), torch.nn.Linear(16, 3))
    path = _export(module, (torch.randn(2, 12),), {}, tmp_path / "prelu.pt2")
    artifact = ModelArtifact(path, FORMAT_PT2, (TensorSpec("x", (2, 12), "float32"),), (TensorSpec("y", (2, 3), "float32"),),
                             "0" * 64)
    pte, out = _export_bundle(artifact, tmp_path / "b")
    assert out["details"]["rewrites"] == {"prelu_not_4d_decomposed": 1}
    x = np.random.default_rng(6).standard_normal((2, 12)).astype(np.float32)
    np.testing.assert_allclose(_run(pte, {"x": x})["y"], _reference(artifact, x), rtol=1e-5, atol=1e-5)


def test_program_holds_its_io_names(conv: ModelArtifact, tmp_path: Path) -> None:
    pte, _ = _export_bundle(conv, tmp_path / "b")
    from executorch.runtime import Runtime

    raw = Runtime.get().load_program(str(pte)).load_method("edgec_io").execute([])[0]
    assert json.loads(bytes(raw.numpy().tolist()).decode()) == {"inputs": ["x"], "outputs": ["logits"]}


# ---- the command line


def test_onnx_source_is_refused_with_one_line_naming_pytorch_sources(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("build", str(make_conv_onnx(tmp_path / "m.onnx")), "--target", "executorch", "--out", str(out))
    assert_one_line_error(proc, errors.EXIT_UNSUPPORTED, "executorch target cannot take a onnx model", "PyTorch factory")
    assert not out.exists()


@pytest.mark.slow
def test_cli_build_verify_and_device_shim_keep_stderr_clean(tmp_path: Path) -> None:
    """No torchao, pytree or cpuinfo lines from the toolchain or the runtime on edgec's stderr."""
    (tmp_path / "conv_model.py").write_text(
        "import torch\n\n\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.c = torch.nn.Conv2d(3, 4, 3)\n\n    def forward(self, x):\n        return self.c(x).mean(dim=(2, 3))\n\n\n"
        "def factory():\n    torch.manual_seed(0)\n    return M().eval(), (torch.randn(1, 3, 8, 8),)\n")
    out = tmp_path / "out"
    built = run_cli("build", f"{tmp_path / 'conv_model.py'}:factory", "--target", "executorch", "--out", str(out), "-q")
    assert built.returncode == 0 and built.stderr == "", built.stderr
    bundle = out / "conv_model-executorch-fp32"
    checked = run_cli("verify", str(bundle))
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    import subprocess
    import sys

    shim = subprocess.run([sys.executable, "-m", "edgec_shim", "verify", "."], cwd=bundle, capture_output=True, text=True, timeout=300)
    assert shim.returncode == 0 and shim.stderr == "", shim.stderr


AGENT_WITH_EXECUTORCH = """
import sys
class _Block:
    blocked = ("edgec.calibration", "edgec.targets", "edgec.benchmarks")
    def find_spec(self, name, path=None, target=None):
        if name.startswith("edgec.compiler.") or any(name == b or name.startswith(b + ".") for b in self.blocked):
            raise ImportError("blocked on this device: " + name)
        return None
sys.meta_path.insert(0, _Block())
from edgec.cloud_sync.agent import main
sys.exit(main())
"""
"""A device with the ExecuTorch runtime (and so torch) but without edgec's compiler, targets and calibration."""


@pytest.mark.slow
def test_bundle_serves_passes_the_health_check_and_is_installed_by_the_agent(tmp_path: Path) -> None:
    pytest.importorskip("tuf")
    pytest.importorskip("obstore")
    import subprocess
    import sys

    import httpx

    from edgec.cloud_sync.health import check_health
    from edgec.cloud_sync.publish import publish
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build
    from edgec.compiler.verify import verify_bundle
    from tests.support.cli import cli
    from tests.support.serving import serving
    from tests.support.stores import repository

    source = _export(Conv(), (torch.randn(2, 3, 8, 8),), {"x": {0: torch.export.Dim("batch", min=1, max=8)}}, tmp_path / "conv.pt2")
    bundle = build(BuildConfig(source=str(source), target="executorch", out=tmp_path / "out")).bundle_dir
    x = np.random.default_rng(6).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with serving(bundle) as (url, _):
        reply = httpx.post(f"{url}/v1/predict", json={"inputs": {"x": x.tolist()}}, timeout=60)
    assert reply.status_code == 200, reply.text
    [logits] = reply.json()["outputs"].values()
    np.testing.assert_allclose(np.asarray(logits), _reference_from(source, x), atol=1e-5)
    assert check_health(bundle).parity == verify_bundle(bundle).measured
    code, _, err = cli("keys", "init", "--keys", str(tmp_path / "keys"))
    assert code == 0, err
    store = str(tmp_path / "store")
    publish(bundle, repository(store, tmp_path / "keys"), "stable", verify=False)
    device = tmp_path / "device"
    proc = subprocess.run([sys.executable, "-c", AGENT_WITH_EXECUTORCH, "--store", store, "--device-id", "phone-1",
                           "--root", str(device), "--trusted-root", str(tmp_path / "keys" / "root.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "committed conv-executorch-fp32" in proc.stderr, proc.stderr
    assert json.loads((device / "state.json").read_text())["committed"]["bundle"] == "conv-executorch-fp32"


def _reference_from(source: Path, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.export.load(str(source)).module()(torch.from_numpy(x)).numpy()

"""The coreml target on a tiny torch CNN built inline: package files, interface and weight checks, errors.

Core ML models only execute on macOS; on other hosts these tests check what a Linux build promises
(the package loads, matches the source, stores the weights as asked, is listed and hashed in the
manifest, is byte-reproducible) and that parity is recorded as not measured rather than invented.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.compiler.cli import main
from edgec.compiler.config import BuildConfig
from edgec.compiler.importers.torch import TorchImporter
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.bundle import check_files, load_manifest, read_golden
from edgec.core.types import ModelArtifact, TensorSpec, sha256_file
from edgec.runtime_shims.base import RunnerError
from edgec.runtime_shims.coreml import CoreMLRunner
from edgec.targets.base import PrecisionRequest
from edgec.targets.coreml import MODEL_DIR, CoreMLOptions, CoreMLTarget, make_plan, validate_package
from tests.support.cli import run_cli
from tests.support.models import make_calib, make_conv_onnx, make_tiny_pt2

pytest.importorskip("coremltools", reason="the coreml target: pip install 'edgec[coreml]'")

LINUX_ONLY = pytest.mark.skipif(sys.platform == "darwin", reason="checks the behaviour of hosts that cannot run Core ML")




@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_pt2(tmp_path_factory.mktemp("tiny") / "tiny.pt2")


@pytest.fixture(scope="module")
def tiny_artifact(tiny_pt2: Path) -> ModelArtifact:
    return TorchImporter().load(str(tiny_pt2), None, lambda m: None).artifact  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_pt2: Path) -> Path:
    out = tmp_path_factory.mktemp("fp16")
    return build(BuildConfig(source=str(tiny_pt2), target="coreml", precision="fp16", out=out)).bundle_dir


def _export(artifact: ModelArtifact, tmp: Path, precision: str = "fp32", **options: object):  # noqa: ANN202
    bundle = tmp / "bundle"
    bundle.mkdir()
    work = tmp / "work"
    work.mkdir()
    request = PrecisionRequest(precision, options=CoreMLOptions(**options))  # type: ignore[arg-type]
    return bundle, CoreMLTarget().export(artifact, bundle, request, work)


def test_bundle_lists_every_file_inside_the_mlpackage_with_hashes(fp16_bundle: Path) -> None:
    manifest = load_manifest(fp16_bundle)
    assert manifest.model_file == MODEL_DIR
    listed = {f.path: f for f in manifest.files}
    inside = sorted(str(p.relative_to(fp16_bundle)) for p in (fp16_bundle / MODEL_DIR).rglob("*") if p.is_file())
    assert "model.mlpackage/Manifest.json" in inside and "model.mlpackage/Data/com.apple.CoreML/model.mlmodel" in inside
    assert set(inside) <= set(listed)
    for path in inside:
        assert listed[path].sha256 == sha256_file(fp16_bundle / path)
    check_files(fp16_bundle, manifest)


def test_bundle_keeps_the_source_interface_and_dynamic_batch(fp16_bundle: Path, tiny_artifact: ModelArtifact) -> None:
    manifest = load_manifest(fp16_bundle)
    assert [(i["name"], i["shape"], i["dtype"]) for i in manifest.inputs] == [
        (s.name, list(s.shape), s.dtype) for s in tiny_artifact.inputs]
    assert [(o["name"], o["shape"], o["dtype"]) for o in manifest.outputs] == [
        (s.name, list(s.shape), "float32") for s in tiny_artifact.outputs]
    validation = manifest.target_details["validation"]
    assert validation["spec_loads"] and validation["io_match_source"]
    assert validation["dynamic_dims"] == {"x": {"0": [1, 64]}}
    golden_in, golden_out = read_golden(fp16_bundle / "golden.npz")
    assert golden_in[0]["x"].shape == (1, 3, 8, 8) and golden_out[0]["output"].shape == (1, 10)


@LINUX_ONLY
def test_parity_is_recorded_as_not_measured_on_a_host_that_cannot_run_core_ml(fp16_bundle: Path) -> None:
    manifest = load_manifest(fp16_bundle)
    assert manifest.parity["measured"] is False
    assert "outputs" not in manifest.parity and "tolerance" not in manifest.parity
    assert "verify" in manifest.parity["reason"]
    assert manifest.target_details["parity_on_build_host"].startswith("not measured")


@LINUX_ONLY
def test_verify_checks_hashes_and_says_parity_was_not_checked(fp16_bundle: Path) -> None:
    proc = run_cli("verify", str(fp16_bundle))
    assert proc.returncode == 0, proc.stderr
    assert "files match" in proc.stdout and "parity not checked" in proc.stdout


def test_verify_names_a_changed_file_inside_the_mlpackage(tmp_path: Path, fp16_bundle: Path) -> None:
    copy = tmp_path / fp16_bundle.name
    shutil.copytree(fp16_bundle, copy)
    weights = copy / MODEL_DIR / "Data/com.apple.CoreML/weights/weight.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    proc = run_cli("verify", str(copy))
    assert proc.returncode == errors.EXIT_INTEGRITY
    assert "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_fp32_fp16_int8_store_weights_at_the_requested_precision(tmp_path: Path, tiny_artifact: ModelArtifact) -> None:
    storage = {}
    sizes = {}
    for precision in ("fp32", "fp16", "int8"):
        (tmp_path / precision).mkdir()
        _, result = _export(tiny_artifact, tmp_path / precision, precision)
        storage[precision] = result.details["validation"]["weight_storage"]
        sizes[precision] = result.details["sizes"]["weights_bytes"]
    assert set(storage["fp32"]) == {"fp32"}
    assert set(storage["fp16"]) == {"fp16"}
    # conv (432 weights) and linear (160) are quantized although coremltools' default threshold is 2048
    assert storage["int8"]["int8"] == {"tensors": 2, "elements": 432 + 160}
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"]


def test_palettize_flag_stores_lookup_table_weights(tmp_path: Path, tiny_pt2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", str(tiny_pt2), "--target", "coreml", "--precision", "fp16", "--palettize", "4",
                 "--out", str(tmp_path), "-q"])
    assert code == 0, capsys.readouterr().err
    details = load_manifest(tmp_path / "tiny-coreml-fp16-p4").target_details  # the suffix keeps it apart from plain fp16
    assert details["plan"]["weights"] == "palettize" and details["plan"]["nbits"] == 4
    assert details["validation"]["weight_storage"]["palette4"]["tensors"] == 2


@pytest.mark.parametrize(("option", "text"), [("palettize=x", "valid integer"), ("palettize=5", "4, 6, 8"),
                                              ("min_deployment_target=iOS99", "unknown Core ML deployment target")])
def test_bad_target_option_is_a_config_error_without_a_bundle(tmp_path: Path, tiny_pt2: Path, option: str, text: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", str(tiny_pt2), "--target", "coreml", "--target-option", option, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == errors.EXIT_CONFIG and text in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_validation_rejects_a_package_whose_weights_are_not_what_was_asked(
        fp16_bundle: Path, tiny_artifact: ModelArtifact) -> None:
    plan = make_plan(PrecisionRequest("int8"), None, "iOS16")
    with pytest.raises(errors.ExportError, match="not stored as int8"):
        validate_package(fp16_bundle / MODEL_DIR, tiny_artifact, plan)


def test_validation_rejects_a_package_whose_outputs_differ_from_the_source(
        fp16_bundle: Path, tiny_artifact: ModelArtifact) -> None:
    renamed = ModelArtifact(tiny_artifact.path, tiny_artifact.format, tiny_artifact.inputs,
                            (TensorSpec("logits", ("batch", 10), "float32"),), tiny_artifact.digest)
    plan = make_plan(PrecisionRequest("fp16"), None, "iOS16")
    with pytest.raises(errors.ExportError, match="outputs"):
        validate_package(fp16_bundle / MODEL_DIR, renamed, plan)


def test_rebuild_is_byte_identical_without_cache(tmp_path: Path, tiny_pt2: Path) -> None:
    bundles = [build(BuildConfig(source=str(tiny_pt2), target="coreml", precision="int8", out=tmp_path / d,
                                 cache=False)).bundle_dir for d in ("a", "b")]
    files = sorted(str(p.relative_to(bundles[0])) for p in bundles[0].rglob("*") if p.is_file())
    assert any(f.startswith(MODEL_DIR) for f in files)
    for name in files:
        assert (bundles[0] / name).read_bytes() == (bundles[1] / name).read_bytes(), name
    manifest = json.loads((bundles[0] / MODEL_DIR / "Manifest.json").read_text())
    assert manifest["rootModelIdentifier"] in manifest["itemInfoEntries"]


def test_onnx_source_is_refused_naming_the_routes_that_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_conv_onnx(tmp_path / "tiny.onnx")
    code = main(["build", str(model), "--target", "coreml", "--out", str(tmp_path / "out")])
    assert code == errors.EXIT_UNSUPPORTED
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "onnx" in line and "pt2" in line and "savedmodel" in line
    assert not (tmp_path / "out").exists()


@LINUX_ONLY
def test_activation_int8_is_refused_off_macos_without_writing_anything(tmp_path: Path, tiny_pt2: Path) -> None:
    calib = make_calib(tmp_path / "calib.npz")
    config = BuildConfig(source=str(tiny_pt2), target="coreml", precision="int8", int8_mode="static", calib=calib,
                         out=tmp_path / "out")
    with pytest.raises(errors.UnsupportedError) as caught:
        build(config)
    assert "macOS" in caught.value.one_line() and "--int8-mode auto" in caught.value.one_line()
    assert not (tmp_path / "out").exists()




@pytest.mark.parametrize(("target", "error", "text"), [
    ("iOS99", errors.ConfigError, "unknown Core ML deployment target"),
    ("iOS15", errors.UnsupportedError, "iOS16/macOS13 or later"),
])
def test_export_checks_the_deployment_target(tmp_path: Path, tiny_artifact: ModelArtifact, target: str,
                                             error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        _export(tiny_artifact, tmp_path, "fp16", min_deployment_target=target)
    assert not any((tmp_path / "bundle").iterdir())


def test_deployment_target_sets_the_specification_version(tmp_path: Path, tiny_artifact: ModelArtifact) -> None:
    _, result = _export(tiny_artifact, tmp_path, "int8", min_deployment_target="iOS18")
    assert result.details["plan"]["deployment_target"] == "iOS18"
    assert result.details["validation"]["specification_version"] == 9
    assert result.details["validation"]["weight_storage"]["int8"]["tensors"] == 2


@LINUX_ONLY
def test_runner_refuses_to_start_off_macos(fp16_bundle: Path) -> None:
    runner = CoreMLRunner(str(fp16_bundle / MODEL_DIR))
    with pytest.raises(RunnerError, match="only on macOS"):
        runner.activate()
    assert not runner.is_active
    assert not CoreMLTarget().measures_parity()


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML executes models only on macOS")
def test_runner_reproduces_the_golden_outputs_on_macos(fp16_bundle: Path) -> None:
    golden_in, golden_out = read_golden(fp16_bundle / "golden.npz")
    with CoreMLRunner(str(fp16_bundle / MODEL_DIR), compute_units="CPU_ONLY") as runner:
        got = [runner.infer(feed)["output"] for feed in golden_in]
    np.testing.assert_allclose(np.stack(got), np.stack([g["output"] for g in golden_out]), atol=1e-2)

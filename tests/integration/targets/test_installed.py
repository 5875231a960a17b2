"""What a target needs is looked up without importing it: `edgec targets` answers fast, says "ready" only when
every route's modules are there, and names the exact command for what is missing (tf-keras: --no-deps)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.models import make_conv_onnx

HEAVY = ("tensorflow", "torch", "coremltools", "onnxruntime", "openvino", "nncf", "onnx2tf", "executorch", "tensorrt")
TF_KERAS_INSTALL = "pip install --no-deps 'tf-keras==2.21.0'"


def _hiding(hidden: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``hidden`` packages refused by an import hook that raises (like a bare venv)."""
    prelude = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {hidden!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, Block())
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_targets_without_tf_keras_says_tflite_onnx_route_needs_the_no_deps_install() -> None:
    proc = _hiding(["tf_keras"], """
        from edgec.compiler.cli import main
        assert main(["targets"]) == 0
        assert main(["targets", "--json"]) == 0
    """)
    assert proc.returncode == 0, proc.stderr
    text, _, rest = proc.stdout.partition("\n[")
    tflite_line = next(line for line in text.splitlines() if line.startswith("tflite "))
    assert "partly ready" in tflite_line and "onnx route needs tf_keras" in tflite_line
    assert TF_KERAS_INSTALL in tflite_line
    tflite = next(t for t in json.loads("[" + rest) if t["name"] == "tflite")
    assert tflite["ready"] is False and tflite["missing"] == []
    assert tflite["routes"]["keras"]["ready"] and tflite["routes"]["savedmodel"]["ready"]
    assert tflite["routes"]["onnx"]["missing"] == [{"module": "tf_keras", "problem": "not installed",
                                                    "install": TF_KERAS_INSTALL}]


def test_targets_json_imports_no_toolchain_and_reports_versions() -> None:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        start = time.perf_counter()
        from edgec.compiler.cli import main
        assert main(["targets", "--json"]) == 0
        print("SECONDS", time.perf_counter() - start)
        # a namespace package (executorch's) imported by find_spec("executorch.runtime") runs no code
        print("IMPORTED", sorted(m for m in {HEAVY!r} if getattr(sys.modules.get(m), "__file__", None)))
    """)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listing, _, tail = proc.stdout.rpartition("]\nSECONDS")
    assert tail.splitlines()[-1] == "IMPORTED []"
    assert float(tail.split()[0]) < 5  # 0.3 s on an idle machine; 14-18 s when every toolchain was imported
    targets = {t["name"]: t for t in json.loads(listing + "]")}
    assert targets["onnx"]["ready"] and targets["onnx"]["runtime"]
    assert re.fullmatch(r"\d+\.\d+.*", targets["onnx"]["installed"]["onnxruntime"]["version"])
    assert targets["tflite"]["installed"]["tensorflow"]["distribution"].replace("_", "-") == "tensorflow-cpu"


def test_targets_with_bare_core_says_not_installed_and_names_each_extra() -> None:
    proc = _hiding(["torch", "onnx", "onnxruntime", "tensorflow", "openvino", "coremltools", "executorch"], """
        from edgec.compiler.cli import main
        assert main(["targets"]) == 0
    """)
    assert proc.returncode == 0, proc.stderr
    states = {line.split()[0]: line for line in proc.stdout.splitlines() if not line.startswith(" ")}
    assert "not installed: needs onnx (pip install 'edgec[onnx]')" in states["onnx"]
    assert "not installed: needs tensorflow (pip install 'edgec[tflite]')" in states["tflite"]
    assert "not installed: needs coremltools (pip install 'edgec[coreml]')" in states["coreml"]


def test_build_tflite_from_onnx_without_tf_keras_fails_before_converting_with_the_no_deps_command(tmp_path: Path) -> None:
    model = make_conv_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    proc = _hiding(["tf_keras"], f"""
        import sys
        from edgec.compiler.cli import main
        sys.exit(main(["build", {str(model)!r}, "--target", "tflite", "--out", {str(out)!r}, "-q"]))
    """)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: missing dependency:"), proc.stderr
    assert "tf_keras" in lines[0] and TF_KERAS_INSTALL in lines[0] and "onnx route" in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_lookup_refuses_a_folder_no_distribution_claims_and_survives_a_raising_import_hook(tmp_path: Path) -> None:
    (tmp_path / "edgec_stray_pkg").mkdir()
    (tmp_path / "edgec_stray_pkg" / "__init__.py").write_text("raise SystemExit('imported!')\n")
    proc = _hiding(["onnx"], f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from edgec.core.installed import lookup
        print(lookup("edgec_stray_pkg").problem)
        print(lookup("onnx.helper").problem)
        print(lookup("onnxruntime").installed, "edgec_stray_pkg" in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    stray, hidden, last = proc.stdout.splitlines()
    assert "no installed distribution provides it" in stray
    assert hidden == "not installed"
    assert last == "True False"



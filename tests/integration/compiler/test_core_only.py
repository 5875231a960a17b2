"""With only the core installed (heavy frameworks hidden), every module imports and the CLI still helps."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.core_only import HIDDEN, PRELUDE, _run


def test_every_module_imports_without_heavy_frameworks() -> None:
    proc = _run("""
        import pkgutil, importlib
        for pkg in ["core", "frameworks", "compiler", "targets", "calibration", "runtime_shims", "cloud_sync"]:
            root = importlib.import_module("edgec." + pkg)
            for info in pkgutil.walk_packages(root.__path__, "edgec." + pkg + "."):
                if not info.name.endswith("__main__"):
                    importlib.import_module(info.name)
        print("imported")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "imported" in proc.stdout


def test_help_and_targets_work_and_missing_extras_are_named() -> None:
    proc = _run("""
        from edgec.compiler.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0
        assert main(["targets"]) == 0
    """)
    assert proc.returncode == 0, proc.stderr
    assert "build" in proc.stdout and "verify" in proc.stdout
    assert "onnx" in proc.stdout and "pip install 'edgec[onnx]'" in proc.stdout


def test_build_without_onnxruntime_names_the_extra(tmp_path) -> None:
    proc = _run(f"""
        import sys
        from edgec.compiler.cli import main
        sys.exit(main(["build", "model.onnx", "--out", {str(tmp_path / 'out')!r}]))
    """)
    assert proc.returncode == 3, proc.stderr
    assert "pip install 'edgec[onnx]'" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_needs_only_the_runtime_not_the_build_tools(conv_onnx, tmp_path) -> None:
    """A server or device has onnxruntime but not onnx or onnxslim: verify (and so serve) must not ask for them."""
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import build

    bundle = build(BuildConfig(source=str(conv_onnx), out=tmp_path / "out")).bundle_dir
    code = PRELUDE.replace(f"HIDDEN = {HIDDEN!r}", "HIDDEN = ['onnx', 'onnxslim', 'torch', 'tensorflow', 'openvino']") + textwrap.dedent(f"""
        import sys
        from edgec.compiler.cli import main
        sys.exit(main(["verify", {str(bundle)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")

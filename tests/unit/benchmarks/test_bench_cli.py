"""``edgec bench`` on the host: one process per bundle, reports, --merge, --require-speedup, errors.

The checks that build nothing; the builds are in tests/integration/benchmarks/test_bench_cli.py."""

from __future__ import annotations

import pytest

from edgec.benchmarks import bench


def test_speedup_checks_pair_results_by_device() -> None:
    def result(device: str, precision: str, p50: float) -> dict:
        return {"device": {"label": device}, "latency_ms": {"p50": p50},
                "bundle": {"name": "m", "target": "onnx", "precision": precision, "path": f"/b/m-onnx-{precision}"}}

    results = [result("a", "fp32", 2.0), result("a", "int8", 1.0), result("b", "fp32", 1.0), result("b", "int8", 3.0)]
    checks, benched = bench.speedup_checks(results)
    assert benched == []
    assert [(c.device, c.ok, round(c.speedup, 3)) for c in checks] == [("a", True, 2.0), ("b", False, 0.333)]
    with pytest.raises(bench.SpeedupGateError, match=r"m-onnx-int8 is not faster .* on b: p50 3 ms vs 1 ms fp32"):
        bench.enforce_speedup(checks)


def test_benchmarks_never_import_the_build_pipeline() -> None:
    """The build hands the speedup gate its sibling builder; benchmarks do not call back into the build."""
    import ast

    from tests.conftest import REPO

    for path in sorted((REPO / "benchmarks").glob("*.py")):
        if path.name in {"bench.py", "cli.py", "report.py", "compare.py"}:  # the modules the build and bench load
            tree = ast.parse(path.read_text())
            modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            assert "edgec.compiler.pipeline" not in modules, path

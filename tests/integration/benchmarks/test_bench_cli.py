"""``edgec bench`` on the host: one process per bundle, reports, --merge, --require-speedup, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgec.benchmarks import bench
from tests.support.cli import run_cli
from tests.support.shim import labelled_eval, load_json, run_shim

FAST = ("--runs", "20", "--warmup", "2")


def test_bench_writes_json_markdown_and_html_and_prints_the_table(siblings: dict[str, Path], tmp_path: Path) -> None:
    data = labelled_eval(tmp_path / "eval.npz", siblings["onnx"])
    proc = run_cli("bench", str(siblings["fp32"]), str(siblings["int8"]), *FAST, "--eval", str(data),
                   "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress display when stderr is not a terminal
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["bench.html", "bench.json", "bench.md"]
    doc = load_json((tmp_path / "rep" / "bench.json").read_text())
    assert doc["schema_version"] == 1 and doc["kind"] == "edgec.bench.report" and doc["speedup"] is None
    assert [r["bundle"]["precision"] for r in doc["results"]] == ["fp32", "int8"]
    assert all(r["memory"]["peak_rss_bytes"] > 0 and r["bundle"]["model_bytes"] > 0 for r in doc["results"])
    assert doc["results"][0]["eval"]["value"] == 1.0 and doc["results"][1]["eval"]["value"] >= 0.9
    table = proc.stdout.splitlines()
    assert table[0].startswith("| device | bundle | target | precision |") and len(table) >= 4
    assert "| tiny | onnx | int8 |" in proc.stdout and "100.00%" in proc.stdout
    assert proc.stdout == (tmp_path / "rep" / "bench.md").read_text()
    html = (tmp_path / "rep" / "bench.html").read_text()
    assert html.count('<svg class="plot"') == 4 and "<script" not in html


def test_bench_json_flag_prints_the_report(siblings: dict[str, Path]) -> None:
    proc = run_cli("bench", str(siblings["fp32"]), *FAST, "--json", "--device", "ci")
    assert proc.returncode == 0, proc.stderr
    doc = load_json(proc.stdout)
    assert [r["device"]["label"] for r in doc["results"]] == ["ci"]


def test_merge_puts_device_results_into_the_same_report(siblings: dict[str, Path], tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    proc = run_shim(siblings["int8"], "bench", ".", "--runs", "10", "--device", "pixel-7", "--out",
                    str(results / "pixel.json"))
    assert proc.returncode == 0, proc.stderr
    merged = run_cli("bench", str(siblings["fp32"]), *FAST, "--device", "host", "--merge",
                     str(results / "pixel.json"), "--out", str(tmp_path / "rep"))
    assert merged.returncode == 0, merged.stderr
    doc = json.loads((tmp_path / "rep" / "bench.json").read_text())
    assert [(r["device"]["label"], r["bundle"]["precision"]) for r in doc["results"]] == [("host", "fp32"), ("pixel-7", "int8")]
    assert doc["results"][1] == json.loads((results / "pixel.json").read_text())
    again = run_cli("bench", "--merge", str(tmp_path / "rep" / "bench.json"), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["results"] == doc["results"]


@pytest.mark.parametrize("content,message", [
    ("not json", "not a readable JSON file"),
    ('{"kind": "something"}', "not an edgec bench result or report"),
    ('{"kind": "edgec.bench.report", "schema_version": 99, "results": []}', "schema_version 99 is newer"),
])
def test_merge_rejects_foreign_files_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "r.json").write_text(content)
    proc = run_cli("bench", "--merge", str(tmp_path / "r.json"))
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and proc.stdout == ""


def test_require_speedup_fails_naming_both_latencies(siblings: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("bench", str(siblings["int8"]), *FAST, "--require-speedup", "1000", "--out", str(tmp_path / "rep"))
    assert proc.returncode == 7
    doc = json.loads((tmp_path / "rep" / "bench.json").read_text())
    # the fp32 sibling was found beside the int8 bundle and benchmarked too
    assert sorted(r["bundle"]["precision"] for r in doc["results"]) == ["fp32", "int8"]
    (check,) = doc["speedup"]
    assert check["ok"] is False and check["quantized"] == "tiny-onnx-int8" and check["fp32"] == "tiny-onnx-fp32"
    p50 = {r["bundle"]["precision"]: r["latency_ms"]["p50"] for r in doc["results"]}
    assert (check["quantized_p50_ms"], check["fp32_p50_ms"]) == (p50["int8"], p50["fp32"])
    line = proc.stderr.strip()
    assert line.startswith("edgec: speedup gate: tiny-onnx-int8 is not faster than its fp32 sibling tiny-onnx-fp32")
    numbers = [float(n) for n in re.findall(r"([0-9.]+) ms", line)]
    assert numbers == pytest.approx([p50["int8"], p50["fp32"]], rel=1e-3)
    assert "required > 1000.00x" in line


def test_require_speedup_passes_when_the_factor_is_met(siblings: dict[str, Path]) -> None:
    proc = run_cli("bench", str(siblings["int8"]), str(siblings["fp32"]), *FAST, "--require-speedup", "0.000001", "--json")
    assert proc.returncode == 0, proc.stderr
    (check,) = json.loads(proc.stdout)["speedup"]
    assert check["ok"] is True and check["speedup"] > 0


def test_require_speedup_without_an_fp32_sibling_is_a_config_error(siblings: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    lonely = shutil.copytree(siblings["int8"], tmp_path / "alone" / siblings["int8"].name)
    proc = run_cli("bench", str(lonely), *FAST, "--require-speedup")
    assert proc.returncode == 2
    assert "has no fp32 sibling" in proc.stderr and proc.stderr.count("\n") == 1


def test_check_speedup_for_builds_compares_two_bundles(siblings: dict[str, Path]) -> None:
    options = bench.BenchOptions(runs=20, warmup=2)
    check = bench.check_speedup(siblings["int8"], siblings["fp32"], required=1e-6, options=options)
    assert check.ok and check.quantized_p50_ms > 0 and check.fp32_p50_ms > 0
    with pytest.raises(bench.SpeedupGateError) as info:
        bench.check_speedup(siblings["int8"], siblings["fp32"], required=1e6, options=options)
    assert info.value.exit_code == 7
    assert re.search(r"p50 [0-9.]+ ms vs [0-9.]+ ms fp32", info.value.one_line())


def test_bench_rejects_a_path_that_is_not_a_bundle(tmp_path: Path) -> None:
    proc = run_cli("bench", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"edgec: config error: bundle not found: {tmp_path} (expected a bundle directory holding manifest.json)"


def test_bench_with_nothing_to_do_says_so(tmp_path: Path) -> None:
    proc = run_cli("bench")
    assert proc.returncode == 2 and "nothing to benchmark" in proc.stderr


def test_bench_fails_with_exit_7_when_a_bundle_misses_its_parity(siblings: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    import numpy as np

    copy = shutil.copytree(siblings["fp32"], tmp_path / "tiny-onnx-fp32")
    with np.load(copy / "golden.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["outputs/logits"] = arrays["outputs/logits"] * 3
    np.savez(copy / "golden.npz", **arrays)
    proc = run_cli("bench", str(copy), *FAST, "--out", str(tmp_path / "rep"))
    assert proc.returncode == 7
    assert "parity outside tolerance: tiny-onnx-fp32 on" in proc.stderr and "max_abs" in proc.stderr
    assert "| FAIL " in (tmp_path / "rep" / "bench.md").read_text()




def test_progress_is_drawn_on_a_terminal_only(siblings: dict[str, Path]) -> None:
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    with os.fdopen(leader, "rb", buffering=0) as terminal:
        proc = subprocess.Popen([sys.executable, "-m", "edgec.compiler", "bench", str(siblings["fp32"]), *FAST],
                                stdout=subprocess.PIPE, stderr=follower, env=env)
        os.close(follower)
        stdout, _ = proc.communicate(timeout=300)
        drawn = b""
        try:
            while chunk := terminal.read(4096):
                drawn += chunk
        except OSError:  # the pty closes when the child exits
            pass
    assert proc.returncode == 0
    assert b"bench" in drawn and b"tiny-onnx-fp32" in drawn
    assert b"tiny-onnx-fp32" not in stdout and b"| tiny | onnx | fp32 |" in stdout


def test_build_speedup_gate_uses_the_sibling_beside_the_bundle(siblings: dict[str, Path]) -> None:
    from edgec.compiler.config import BuildConfig
    from edgec.core.bundle import load_manifest

    config = BuildConfig(source=str(siblings["onnx"]), out=siblings["int8"].parent, precision="int8", calib=siblings["calib"])
    messages: list[str] = []
    options = bench.BenchOptions(runs=20, warmup=2)
    bench.speedup_gate(config, 1e-6, messages.append, options)(siblings["int8"], load_manifest(siblings["int8"]))
    assert not any("building the fp32 sibling" in m for m in messages)
    assert "tiny-onnx-int8 is faster than its fp32 sibling tiny-onnx-fp32" in messages[-1]
    with pytest.raises(bench.SpeedupGateError, match=r"p50 [0-9.]+ ms vs [0-9.]+ ms fp32 \(speedup [0-9.]+x, required > 1000000.00x\)"):
        bench.speedup_gate(config, 1e6, options=options)(siblings["int8"], load_manifest(siblings["int8"]))


def test_build_speedup_gate_builds_a_missing_sibling_in_a_temporary_folder(siblings: dict[str, Path], tmp_path: Path) -> None:
    from edgec.compiler.config import BuildConfig
    from edgec.compiler.pipeline import sibling_builder
    from edgec.core.bundle import load_manifest

    out = tmp_path / "out"
    config = BuildConfig(source=str(siblings["onnx"]), out=out, precision="int8", calib=siblings["calib"])
    messages: list[str] = []
    gate = bench.speedup_gate(config, 1e-6, messages.append, bench.BenchOptions(runs=10, warmup=1),
                              build_sibling=sibling_builder(config, messages.append))
    gate(siblings["int8"], load_manifest(siblings["int8"]))
    assert "building the fp32 sibling for --require-speedup" in messages
    assert not out.exists()


def test_build_speedup_gate_without_a_sibling_builder_refuses_a_missing_sibling(siblings: dict[str, Path], tmp_path: Path) -> None:
    from edgec.compiler.config import BuildConfig
    from edgec.core.bundle import load_manifest
    from edgec.core.errors import ConfigError

    config = BuildConfig(source=str(siblings["onnx"]), out=tmp_path / "out", precision="int8", calib=siblings["calib"])
    gate = bench.speedup_gate(config, 1e-6, options=bench.BenchOptions(runs=10, warmup=1))
    with pytest.raises(ConfigError, match="no fp32 sibling .*tiny-onnx-fp32 built from the same source"):
        gate(siblings["int8"], load_manifest(siblings["int8"]))




def test_build_speedup_gate_refuses_an_fp32_build(siblings: dict[str, Path]) -> None:
    from edgec.compiler.config import BuildConfig
    from edgec.core.errors import ConfigError

    with pytest.raises(ConfigError, match="use it with --precision int8 or fp16"):
        bench.speedup_gate(BuildConfig(source=str(siblings["onnx"]), precision="fp32"))


def _build_takes_a_gate() -> bool:
    import inspect

    from edgec.compiler import pipeline

    return "before_publish" in inspect.signature(pipeline.build).parameters


@pytest.mark.skipif(not _build_takes_a_gate(), reason="edgec build has no before_publish hook yet (see benchmarks/bench.py:speedup_gate)")
def test_build_require_speedup_fails_without_writing_the_bundle(siblings: dict[str, Path], tmp_path: Path) -> None:
    args = ("build", str(siblings["onnx"]), "--precision", "int8", "--calib", str(siblings["calib"]))
    failed = run_cli(*args, "--out", str(tmp_path / "a"), "--require-speedup", "1000000")
    assert failed.returncode == 7
    assert re.search(r"^edgec: speedup gate: tiny-onnx-int8 is not faster than its fp32 sibling tiny-onnx-fp32 on .*: "
                     r"p50 [0-9.]+ ms vs [0-9.]+ ms fp32", failed.stderr, re.M)
    assert not (tmp_path / "a").exists()
    passed = run_cli(*args, "--out", str(tmp_path / "b"), "--require-speedup", "0.000001")
    assert passed.returncode == 0, passed.stderr
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["tiny-onnx-int8"]
